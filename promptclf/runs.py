"""Run folders: where a run's outputs, resolved options and metrics live (see docs/ARCHITECTURE.md).

A labeling run ``-o labeled.csv`` writes ``labeled.csv`` and ``labeled.run/``; ``-o DIR``
(no table extension) writes ``DIR/labeled.csv`` and uses ``DIR`` as the run folder.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .data import FORMATS
from .errors import InputError


def label_paths(output: str | Path) -> tuple[Path, Path]:
    """(labeled file, run folder) for a labeling run's ``-o``."""
    out = Path(output)
    if out.suffix.lower() in FORMATS:
        return out, out.with_name(out.stem + ".run")
    return out / "labeled.csv", out


def resolve_run_dir(path: str | Path) -> Path:
    """A run folder, or the run folder of a labeled file given instead."""
    p = Path(path)
    if (p / "run.json").is_file():
        return p
    if p.suffix.lower() in FORMATS:
        cand = p.with_name(p.stem + ".run")
        if (cand / "run.json").is_file():
            return cand
    raise InputError(f"{path}: not a run folder (no run.json); pass a folder written by promptclf label or distill")


def write_run(
    run_dir: str | Path, record: dict[str, Any], options: dict[str, Any], files: dict[str, str] | None = None
) -> Path:
    """Write ``run.json``, ``options.json`` and extra text files into ``run_dir``."""
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    record = {"created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), **record, "options": options}
    record.setdefault("name", d.name.removesuffix(".run"))
    (d / "run.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    (d / "options.json").write_text(json.dumps(options, indent=2, default=str) + "\n")
    for name, text in (files or {}).items():
        (d / name).write_text(text)
    return d / "run.json"


def load_run(path: str | Path) -> dict[str, Any]:
    d = resolve_run_dir(path)
    record = json.loads((d / "run.json").read_text())
    record["_dir"] = str(d)
    return record


def copy_file(src: str | Path, run_dir: str | Path, name: str) -> None:
    shutil.copyfile(src, Path(run_dir) / name)
