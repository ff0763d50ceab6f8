"""promptclf: turn an LLM into a text classifier, then make that classifier cheap.

Library API (the CLI is a thin layer over it)::

    from promptclf import Labeler, LabelOptions
    result = Labeler(LabelOptions(shots=10)).label(df)
    result.frame     # df with the pred_* columns
    result.summary   # statuses, coverage, metrics, usage, cost, time
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["LabelOptions", "Labeler", "LabelSet", "cascade_file", "label_file", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: `import promptclf` must not import pandas/torch/langchain.
    if name in ("Labeler", "label_file"):
        from .label import labeler

        return getattr(labeler, name)
    if name == "cascade_file":  # label student first, the LLM for the rest (LabelOptions.student)
        from .predict.cascade import cascade_file

        return cascade_file
    if name == "LabelOptions":
        from .label.options import LabelOptions

        return LabelOptions
    if name == "LabelSet":
        from .labels import LabelSet

        return LabelSet
    raise AttributeError(name)
