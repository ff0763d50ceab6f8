"""The labeling stage: an LLM labels every row of a table.

Contract: :class:`~.labeler.Labeler` takes :class:`~.options.LabelOptions` and a provider, labels a frame or a
file, and returns every input row, in input order, with ``pred_label``, ``pred_prob``, ``pred_probs``,
``pred_status``, ``pred_reason`` and ``pred_request`` (see docs/ARCHITECTURE.md). Jobs are planned in
:mod:`.jobs`, prompts rendered by :mod:`.prompts`, answers validated by :mod:`.schema`; the chat, scoring and
batch runners send them. No row is ever dropped: a row without a label says why.
"""
