"""Distillation: a small local student trained on the LLM's labels.

Contract: :func:`~.run.distill` reads a labeled file (hard or soft labels, a person's corrections applied),
trains a student (LoRA on an encoder on CPU, QLoRA on a causal LM on GPU; :mod:`.models`, :mod:`.train`) and
writes a run folder that :mod:`promptclf.predict` loads. :mod:`.options` declares every setting;
:mod:`.distributed` runs the same code under ``torchrun``.
"""
