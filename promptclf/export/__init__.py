"""Exporting a trained student for runtimes without PyTorch.

Contract: :func:`~.onnx_export.export_onnx` turns a distill run folder whose student is an encoder with a
classification head (BERT-like, e.g. recipe ``minilm-lora``; LoRA merged into the weights) into an *export
folder*: ``model.onnx`` (inputs the tokenizer's ``input_ids``, ``attention_mask`` and, where the model takes
it, ``token_type_ids``, each ``int64 [batch, sequence]``; output ``logits`` ``float32 [batch, labels]``),
``tokenizer.json`` and the tokenizer's other files, ``labels.json``, the run's ``options.json`` and
``export.json`` (:class:`~.manifest.ExportManifest`: labels, temperature, maximum length, precision, the parity
measured against PyTorch at export time). Probabilities are ``softmax(logits / temperature)``, the
temperature being the one ``distill`` fitted (``run.json`` ``temperature_scaling``). ``int8`` quantizes the
weights dynamically (``onnxruntime.quantization``). Causal-LM and QLoRA students are refused with one line.

:class:`~.onnx_student.OnnxStudent` loads an export folder and offers what :class:`promptclf.predict.student.Student`
offers (``labels``, ``temperature``, ``predict_proba``, ``predict``) on ONNX Runtime, with the ``tokenizers``
library and numpy only (no torch, no transformers). ``promptclf.predict.loader.load_predictor`` picks it for an
export folder. Needs ``pip install 'promptclf[onnx]'``.
"""
