"""The in-process local model: any causal LM transformers can load, labeling by log-likelihood.

Contract: :class:`~.provider.LocalProvider` is a scoring provider: one probability per label per item, the
shared prefix (instructions and examples) encoded once and reused (:mod:`.cache`), every label scored behind
one prompt (:mod:`.packing`). :mod:`.model_files` checks a model before loading it.
"""
