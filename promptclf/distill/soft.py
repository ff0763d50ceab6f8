"""Soft-label distillation (``distill --soft``): learn the teacher's distribution over labels.

Rows whose labeled file has a ``pred_probs`` distribution train on it with a KL divergence at a
temperature T; every other row (no distribution, or a person's corrected label) trains on its
hard label with cross-entropy. Both kinds mix in one batch, one loss:

    loss_i = T² · KL(p_T ‖ softmax(z_i / T))   if row i has a distribution p
    loss_i = CE(z_i, y_i)                       otherwise
    loss   = mean_i loss_i

``p_T ∝ p^(1/T)`` is the teacher's distribution at temperature T (the same as softmax(log p / T)):
T > 1 flattens it, so the student also learns how the teacher ranks the wrong labels. The T²
factor (Hinton et al., 2015) keeps the soft rows' gradients on the same scale as the hard rows'
whatever T is: the KL gradient with respect to the logits shrinks as 1/T². Prediction uses T = 1.
"""

from __future__ import annotations

from typing import Any


def soft_loss(logits: Any, labels: Any, targets: Any, mask: Any, temperature: float) -> Any:
    """The per-row mixed loss above, averaged over the batch (torch tensors)."""
    import torch
    import torch.nn.functional as F

    t = float(temperature)
    logits = logits.float()
    ce = F.cross_entropy(logits, labels, reduction="none")
    p = targets.float().clamp(min=0.0) ** (1.0 / t)
    p = p / p.sum(-1, keepdim=True).clamp(min=1e-12)
    log_q = F.log_softmax(logits / t, dim=-1)
    kl = (torch.xlogy(p, p) - p * log_q).sum(-1)  # xlogy: 0·log 0 = 0 for labels the teacher gave no mass
    soft = mask.float() > 0
    return torch.where(soft, (t * t) * kl, ce).mean()


class SoftCollator:
    """Pads token ids with the usual collator, and stacks ``soft_targets``/``soft_mask`` beside them."""

    def __init__(self, base: Any):
        self.base = base

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        import torch

        # Copies: the items are the dataset's own dicts, read again every epoch.
        targets = [f.get("soft_targets") for f in features]
        masks = [f.get("soft_mask") for f in features]
        batch = self.base([{k: v for k, v in f.items() if k not in ("soft_targets", "soft_mask")} for f in features])
        if all(t is not None for t in targets):
            batch["soft_targets"] = torch.tensor(targets, dtype=torch.float32)
            batch["soft_mask"] = torch.tensor(masks, dtype=torch.float32)
        return batch


def soft_dataset(input_ids: list[Any], y: list[int], soft: list[list[float] | None], n_labels: int) -> list[dict]:
    """Training items: rows without a distribution carry zeros and mask 0 (they use their hard label)."""
    zeros = [0.0] * n_labels
    return [
        {
            "input_ids": ids,
            "labels": lab,
            "soft_targets": list(s) if s is not None else zeros,
            "soft_mask": 1.0 if s is not None else 0.0,
        }
        for ids, lab, s in zip(input_ids, y, soft, strict=True)
    ]


def soft_trainer_class(temperature: float) -> type:
    """A Trainer whose training loss is :func:`soft_loss`; batches without soft targets (evaluation) use CE."""
    from transformers import Trainer

    class SoftTrainer(Trainer):
        # soft_loss is a batch mean: the Trainer must still divide it by the gradient-accumulation steps.
        loss_is_scaled_for_ga = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[no-untyped-def]
            targets = inputs.pop("soft_targets", None)
            mask = inputs.pop("soft_mask", None)
            if targets is None:
                return super().compute_loss(
                    model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
                )
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            loss = soft_loss(outputs.logits, labels, targets, mask, temperature)
            return (loss, outputs) if return_outputs else loss

    return SoftTrainer
