"""Writing tables chunk by chunk, so a job of any size is written as it goes.

:class:`TableWriter` appends chunks to a CSV/TSV/JSONL file (each chunk whole, so a stopped run
leaves a valid file) or streams them into Parquet (a ``ParquetWriter``) or Arrow;
:class:`DatasetWriter` streams them into a Hugging Face dataset folder (``save_to_disk``) with
one column as a ClassLabel. Reading, including chunked reading, is :mod:`promptclf.data.tables`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InputError, require
from .tables import HF_PURPOSE, cell_text, table_format, write_table


class TableWriter:
    """Write a table chunk by chunk, in the format of ``path``'s extension.

    CSV, TSV and JSONL are appended to ``path`` itself, one whole chunk per write, so a run
    stopped at any point leaves the chunks written so far as a valid file. Parquet (a
    ``ParquetWriter``, one row group per chunk) and Arrow are only valid once their footer
    is written: they go to a temporary file, flushed to disk and renamed over ``path`` by :meth:`close`,
    so ``path`` is either absent or whole; ``metadata`` (text keys and values) goes into their schema.
    XLSX has no streaming writer: its chunks are held and written by :meth:`close`.
    """

    def __init__(self, path: str | Path, metadata: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        self.fmt = table_format(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows = 0
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._file: Any = None
        self._writer: Any = None
        self._schema: Any = None
        self._held: list[pd.DataFrame] = []
        self._metadata = {k.encode(): v.encode() for k, v in (metadata or {}).items()}
        self._header = False  # CSV/TSV: written with the first chunk

    def _open_text(self) -> None:
        # Opened (and so truncated) at the first chunk, not before: a run killed before it has
        # anything to write leaves the previous run's partial file as it was, never an empty file.
        if self._file is None:
            self._file = open(self.path, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed in close()

    def write(self, df: pd.DataFrame) -> None:
        """Append ``df`` (same columns as the first chunk)."""
        if self.fmt in ("csv", "tsv", "jsonl"):
            self._open_text()
        if self.fmt in ("csv", "tsv"):
            text = df.to_csv(index=False, header=not self._header, sep="\t" if self.fmt == "tsv" else ",")
            self._file.write(text)
            self._header = True
        elif self.fmt == "jsonl":
            if len(df):
                text = df.to_json(orient="records", lines=True, force_ascii=False)
                self._file.write(text if text.endswith("\n") else text + "\n")
        elif self.fmt in ("parquet", "arrow"):
            self._write_arrow(df)
        else:
            self._held.append(df)
        if self._file is not None:
            self._file.flush()
        self.rows += len(df)

    def _write_arrow(self, df: pd.DataFrame) -> None:
        import pyarrow as pa

        table = pa.Table.from_pandas(df, preserve_index=False)
        if self._writer is None:
            self._schema = _no_null_types(table.schema)
            if self._metadata:
                self._schema = self._schema.with_metadata({**(self._schema.metadata or {}), **self._metadata})
            if self.fmt == "parquet":
                import pyarrow.parquet as pq

                self._writer = pq.ParquetWriter(str(self._tmp), self._schema)
            else:
                self._writer = pa.ipc.new_file(str(self._tmp), self._schema)
        self._writer.write_table(_conform(table, self._schema))

    def close(self) -> Path:
        """Finish the file; returns its path."""
        if self.fmt in ("csv", "tsv", "jsonl"):
            self._open_text()  # no chunk at all: still leave a (empty) file behind
        if self._file is not None:
            self._file.close()
            self._file = None
        elif self.fmt in ("parquet", "arrow"):
            if self._writer is None:
                raise InputError(f"{self.path}: no rows to write")
            self._writer.close()
            self._writer = None
            _fsync(self._tmp)  # the rename must never expose a file whose bytes are not on disk yet
            self._tmp.replace(self.path)
        elif self._held:
            write_table(pd.concat(self._held, ignore_index=True), self.path)
            self._held = []
        return self.path

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.abort()

    def abort(self) -> None:
        """Stop without finishing: CSV/TSV/JSONL keep the whole chunks written so far; a Parquet/Arrow
        output never appears (its temporary file is removed, an earlier ``path`` is left as it was)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        elif self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.fmt in ("parquet", "arrow"):
            self._tmp.unlink(missing_ok=True)


class DatasetWriter:
    """Write frames chunk by chunk into a ``save_to_disk`` dataset folder, ``class_col`` as a
    ClassLabel over ``names`` (empty or unknown values become -1, datasets' "no label").

    Chunks go to one Arrow stream file as they come (flat memory), which ``close()`` turns into
    the dataset folder."""

    def __init__(self, out_dir: str | Path, class_col: str, names: Sequence[str]) -> None:
        self.datasets: Any = require("datasets", "hf", HF_PURPOSE)
        self.out_dir = Path(out_dir)
        self.class_col = class_col
        self.names = list(names)
        self._index = {n: i for i, n in enumerate(self.names)}
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.out_dir.with_name(f".{self.out_dir.name}.arrow.tmp")
        self._writer: Any = None
        self._schema: Any = None

    def write(self, df: pd.DataFrame) -> None:
        import pyarrow as pa

        df = df.copy()
        df[self.class_col] = [self._index.get(cell_text(v), -1) for v in df[self.class_col]]
        table = pa.Table.from_pandas(df, preserve_index=False)
        if self._writer is None:
            features = self.datasets.Features.from_arrow_schema(_no_null_types(table.schema))
            features[self.class_col] = self.datasets.ClassLabel(names=self.names)
            self._schema = features.arrow_schema
            self._writer = pa.ipc.new_stream(str(self._tmp), self._schema)
        self._writer.write_table(_conform(table, self._schema))

    def abort(self) -> None:
        """Drop what was written (the run did not finish)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._tmp.unlink(missing_ok=True)

    def close(self) -> Path:
        if self._writer is None:
            raise InputError(f"--save-dataset {self.out_dir}: no rows to save")
        self._writer.close()
        ds = self.datasets.Dataset.from_file(str(self._tmp))
        ds.save_to_disk(str(self.out_dir))
        self._tmp.unlink(missing_ok=True)
        return self.out_dir


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _no_null_types(schema: Any) -> Any:
    """A column that was all-null in the first chunk has no type yet: call it text."""
    import pyarrow as pa

    return pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in schema], schema.metadata)


def _conform(table: Any, schema: Any) -> Any:
    """``table`` with the columns and types of the first chunk's ``schema``."""
    try:
        return table.select(schema.names).cast(schema)
    except Exception as exc:
        raise InputError(
            f"a later chunk of the table does not fit the columns/types of the first ({exc}); "
            "write CSV or JSONL, which take any values"
        ) from exc
