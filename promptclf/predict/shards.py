"""A sharded corpus in, a folder of Parquet shards out: discovery, naming, stamps and the skip-done check.

Nothing here imports Ray: the engine (:mod:`.ray_engine`) calls these, and so do the fast tests.

- :func:`discover_shards`: the input's shards, in a stable order. A table file is one shard; a folder
  is every Parquet/CSV/TSV/JSONL/Arrow file under it (hidden and ``_``-prefixed files skipped, other
  files named in a warning); a Hugging Face ``save_to_disk`` folder (or a cached dataset name) is
  its Arrow data files, one shard each.
- :func:`output_path`: each shard's output, ``OUT/<relative path>.parquet``, one per input shard.
- :class:`ShardStamp`: what a finished output shard records in its Parquet footer (its source,
  the source's size, the rows written, the student and options that made it).
- :func:`check_done`: whether an existing output shard is finished work for this run, read from its
  footer only; a rerun skips those and redoes the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from ..data.tables import FORMATS, dataset_files, is_dataset_source, table_format
from ..errors import InputError

log = logging.getLogger("promptclf.predict.shards")

#: File types read as shards (XLSX has no chunked reader, so it is left out of a corpus).
SHARD_SUFFIXES = tuple(sorted(s for s, fmt in FORMATS.items() if fmt != "xlsx"))
#: Key of the stamp in an output shard's Parquet schema metadata.
STAMP_KEY = "promptclf.predict"
#: Summary of the whole run, written into the output folder (``_`` so Parquet readers of the folder skip it).
SUMMARY_NAME = "_promptclf_predict.json"
#: Temporary files of this module's writers start with this (``.`` so readers of the folder skip them).
TEMP_PREFIX = "."


@dataclass(frozen=True)
class Shard:
    """One input shard: ``path`` on disk, ``name`` relative to the input (what messages and outputs use)."""

    index: int
    path: Path
    name: str

    @property
    def size(self) -> int:
        return self.path.stat().st_size


class ShardStamp(BaseModel):
    """Written into each output shard's footer; a rerun compares it with the shard it would write."""

    source: str  # the input shard's name (relative path)
    source_bytes: int  # its size when predicted: a changed input is predicted again
    rows: int  # rows written; equals the footer's row count when the shard is whole
    student: str  # :func:`fingerprint` of the student and the options that change the output


def discover_shards(source: str | Path, split: str | None = None) -> list[Shard]:
    """The shards of ``source`` in a stable order (see the module docstring), or an InputError naming the fix."""
    p = Path(source)
    if p.is_file():
        if p.suffix.lower() not in SHARD_SUFFIXES:
            table_format(p)  # names the supported types for an unknown extension
            raise InputError(f"{p}: {p.suffix} files have no chunked reader; convert it to Parquet or CSV")
        if split is not None:
            raise InputError(f"--split {split}: {p} is a file, not a Hugging Face dataset; drop --split")
        return [Shard(0, p, p.name)]
    if p.is_dir() and not _is_saved_dataset(p):
        if split is not None:
            raise InputError(f"--split {split}: {p} is a folder of table files, not a saved dataset; drop --split")
        return _folder_shards(p)
    if is_dataset_source(p):
        files = dataset_files(p, split)
        root = p if p.is_dir() else files[0].parent
        return [Shard(i, f, _relative(f, root)) for i, f in enumerate(files)]
    raise InputError(f"{p}: no such file or folder")


def _is_saved_dataset(folder: Path) -> bool:
    return any((folder / m).exists() for m in ("dataset_dict.json", "state.json", "dataset_info.json"))


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def _folder_shards(folder: Path) -> list[Shard]:
    found: list[Path] = []
    ignored: list[str] = []
    for f in sorted(folder.rglob("*")):
        rel = f.relative_to(folder)
        if any(part.startswith((".", "_")) for part in rel.parts):
            continue  # hidden files, _SUCCESS markers, _metadata, temporary files of writers
        if not f.is_file():
            continue
        if f.suffix.lower() in SHARD_SUFFIXES:
            if f.stat().st_size == 0:
                raise InputError(f"{f}: an empty shard (0 bytes); remove it or write it again")
            found.append(f)
        else:
            ignored.append(rel.as_posix())
    if not found:
        raise InputError(
            f"{folder}: no shards found (looked for {', '.join('*' + s for s in SHARD_SUFFIXES)} under it)"
        )
    if ignored:
        shown = ", ".join(ignored[:5]) + (f" and {len(ignored) - 5} more" if len(ignored) > 5 else "")
        log.warning("%s: %d file(s) that are not tables are not read: %s", folder, len(ignored), shown)
    return [Shard(i, f, f.relative_to(folder).as_posix()) for i, f in enumerate(found)]


def output_path(out_dir: str | Path, shard: Shard) -> Path:
    """``OUT/<shard name with its extension replaced by .parquet>``."""
    return Path(out_dir) / Path(shard.name).with_suffix(".parquet")


def plan_outputs(shards: list[Shard], out_dir: str | Path, source: str | Path) -> dict[int, Path]:
    """Each shard's output path; refuses two shards writing one file and an output folder inside the input."""
    out = Path(out_dir).resolve()
    src = Path(source).resolve()
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {out_dir}: a file; --engine ray writes a folder of Parquet shards, pass a folder")
    if src.is_dir() and (out == src or src in out.parents):
        raise InputError(f"-o {out_dir} is inside the input folder {source}; write the predictions elsewhere")
    if src.is_file() and out == src:
        raise InputError(f"-o {out_dir} is the input file; write the predictions to a folder")
    paths: dict[int, Path] = {}
    seen: dict[Path, str] = {}
    for s in shards:
        target = output_path(out_dir, s)
        if target in seen:
            raise InputError(
                f"shards {seen[target]} and {s.name} would both be written to {target.name}; "
                "rename one (outputs are named after their input without its extension)"
            )
        seen[target] = s.name
        paths[s.index] = target
    return paths


def fingerprint(student_dir: str | Path, options: dict[str, object]) -> str:
    """A short hash of the student (its spec and the size and time of each weight file) and of the options
    that change what is written (dtype, class probabilities, text column): output written under another
    fingerprint is not this run's work and is predicted again."""
    folder = Path(student_dir)
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if not f.is_file() or f.name in ("run.json", "predictions.csv", "train_log.jsonl", "README.md"):
            continue
        st = f.stat()
        if f.suffix == ".json":
            h.update(f.name.encode() + f.read_bytes())
        else:
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(json.dumps(options, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def read_stamp(path: Path) -> tuple[ShardStamp | None, int]:
    """The stamp in an output shard's footer and the footer's row count; raises when the file is no whole Parquet."""
    import pyarrow.parquet as pq

    meta = pq.read_metadata(path)
    raw = (meta.schema.to_arrow_schema().metadata or {}).get(STAMP_KEY.encode())
    stamp = ShardStamp.model_validate_json(raw) if raw else None
    return stamp, int(meta.num_rows)


def check_done(out_path: Path, shard: Shard, student: str) -> tuple[bool, str]:
    """``(True, "")`` when ``out_path`` is this shard's finished output for this student; else
    ``(False, why)`` (``why`` empty when there is simply no output yet)."""
    if not out_path.exists():
        return False, ""
    try:
        stamp, rows = read_stamp(out_path)
    except Exception as exc:  # pyarrow raises several types for a cut or foreign file
        return False, f"not a whole Parquet file ({type(exc).__name__})"
    if stamp is None:
        return False, "not written by promptclf predict (no stamp)"
    if stamp.source != shard.name:
        return False, f"written for another input shard ({stamp.source})"
    if stamp.student != student:
        return False, "written by another student or with other options"
    if stamp.source_bytes != shard.size:
        return False, f"the input changed since ({stamp.source_bytes:,} bytes then, {shard.size:,} now)"
    if stamp.rows != rows:
        return False, f"incomplete ({rows:,} of {stamp.rows:,} rows)"
    return True, ""


def clean_temporaries(out_dir: Path) -> int:
    """Remove temporary files a killed run left (``.<name>.parquet.tmp``); returns how many."""
    n = 0
    if not out_dir.is_dir():
        return 0
    for f in out_dir.rglob(f"{TEMP_PREFIX}*.parquet.tmp"):
        f.unlink(missing_ok=True)
        n += 1
    return n
