"""The review queue: which LLM labels are most likely wrong.

Contract: :func:`~.queue.review` reads a labeled file, scores each ``ok`` row's doubt from independent signals
and writes the top rows for a person to check, with reasons and a suggested label.
"""
