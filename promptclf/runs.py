"""Run folders: where a run's outputs, resolved options and metrics live (see docs/ARCHITECTURE.md).

A labeling run ``-o labeled.csv`` writes ``labeled.csv`` and ``labeled.run/``; ``-o DIR``
(no table extension) writes ``DIR/labeled.csv`` and uses ``DIR`` as the run folder.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .data.tables import FORMATS
from .errors import InputError


def label_paths(output: str | Path) -> tuple[Path, Path]:
    """(labeled file, run folder) for a labeling run's ``-o``."""
    out = Path(output)
    if out.suffix.lower() in FORMATS:
        return out, out.with_name(out.stem + ".run")
    return out / "labeled.csv", out


def resolve_run_dir(path: str | Path) -> Path:
    """A run folder from a run folder, its ``run.json``, or a labeled file (``x.csv`` → ``x.run/``)."""
    p = Path(path)
    if p.is_file() and p.name == "run.json":
        return p.parent
    if p.is_dir():
        if (p / "run.json").is_file():
            return p
        raise InputError(
            f"{p}: no run.json in this folder; pass a run folder written by 'promptclf label' or 'distill'"
        )
    if p.suffix.lower() in FORMATS:
        cand = label_paths(p)[1]
        if (cand / "run.json").is_file():
            return cand
        raise InputError(f"{p}: no run folder {cand}/ beside this file; pass the folder 'promptclf label' wrote")
    raise InputError(f"{p}: no such run folder or labeled file")


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
