"""Using a trained student.

Contract: :class:`~.student.Student` loads a distill run folder and predicts labels with probabilities;
:func:`~.student.predict_file` streams any file through it in chunks, so memory stays flat.
"""
