"""The labeling stage: an LLM labels every row of a table.

Contract: :class:`~.labeler.Labeler` takes :class:`~.options.LabelOptions` and a provider, labels a frame
(:meth:`~.labeler.Labeler.label`, a :class:`~.labeler.LabelResult`) or a file (:func:`~.labeler.label_file`, a
:class:`promptclf.runs.LabelRun`), and returns every input row, in input order, with ``pred_label``, ``pred_prob``,
``pred_probs``, ``pred_status``, ``pred_reason`` and ``pred_request`` (see docs/ARCHITECTURE.md). No row is ever
dropped: a row without a label says why.

Inside: the input is planned once (:mod:`.jobs`: label set, shots) and labeled chunk by chunk (:mod:`.stream`; a
frame is one chunk), prompts rendered by :mod:`.prompts`, answers validated by :mod:`.schema`; the chat, scoring
and batch runners send them. A runner gets a :class:`~.context.RunContext` (provider, store, options, and the
:class:`~.meter.Meter` that counts usage, cost and latency and draws the progress bar) and never calls back into
the labeler. :mod:`.dry_run` estimates a job without sending it.
"""
