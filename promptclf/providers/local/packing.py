"""Score every label's answer behind one prompt in a single forward pass.

The local provider (labeling) and LM-head students (distill, predict) both score a label as the
model's whole answer after a prompt. Instead of running the prompt once per label, the
answers' tokens (all but the last, which is only ever predicted) are packed after it, side by
side. A mask lets each answer token see the prompt and its own answer's earlier tokens only,
and every answer's positions restart right after the prompt, so each label is scored exactly
as if it were the only answer.
"""

from __future__ import annotations

from typing import Any


def fed_tokens(answers: list[list[int]]) -> list[int]:
    """The tokens to feed after the prompt: each answer without its last token."""
    return [t for a in answers for t in a[:-1]]


def packed_layout(n_ctx: int, answers: list[list[int]]) -> tuple[Any, list[int]]:
    """For ``[prompt (n_ctx tokens), answer tokens fed]``: which token may see which (bool q x q) and positions.

    Positions count from 0 at the prompt's first token; add an offset for a cached prefix.
    """
    import torch

    lens = [len(a) - 1 for a in answers]
    q = n_ctx + sum(lens)
    allowed = torch.zeros(q, q, dtype=torch.bool)
    allowed[:n_ctx, :n_ctx] = torch.ones(n_ctx, n_ctx, dtype=torch.bool).tril()
    allowed[n_ctx:, :n_ctx] = True  # every answer token sees the whole prompt
    positions = list(range(n_ctx))
    start = n_ctx
    for k in lens:  # ... and, causally, its own answer's earlier tokens only
        allowed[start : start + k, start : start + k] = torch.ones(k, k, dtype=torch.bool).tril()
        positions.extend(range(n_ctx, n_ctx + k))
        start += k
    return allowed, positions


def answer_logprobs(logp: Any, answers: list[list[int]]) -> Any:
    """Each answer's log-likelihood from ``logp`` (..., 1 + len(fed_tokens), vocab) → (..., n_answers).

    Row 0 is the prompt's last position (it predicts every answer's first token); row 1 + i is
    fed token i, which predicts the next token of its answer.
    """
    import torch

    scores = []
    row = 1
    for a in answers:
        rows = torch.tensor([0, *range(row, row + len(a) - 1)], device=logp.device)
        scores.append(logp[..., rows, torch.tensor(a, device=logp.device)].sum(-1))
        row += len(a) - 1
    return torch.stack(scores, dim=-1)
