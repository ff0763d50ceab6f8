"""Evaluation against gold labels.

Contract: :func:`~.metrics.evaluate` turns gold labels, predictions and statuses into accuracy, macro-F1 with
bootstrap CIs, a per-class report, a confusion matrix and coverage. Pure functions; no I/O.
"""
