"""Prompt layout for the local provider: the chat split around the item, and each label's answer tokens.

A model with a chat template gets ``system`` / ``prefix + item + suffix`` / assistant turn, and a
label is scored as the assistant's whole answer: the label's tokens plus the token the template
writes right after an answer (its end-of-turn, e.g. ``<|im_end|>``).

A model without one (a base model) gets a plain prompt: the system text, a blank line, the user
text, and ``Label:`` on a line of its own (unless the user text already ends with ``Label:``). A
label is scored as `` label`` followed by a newline, the separator the few-shot examples in the
prompt show after each label (``Label: sport`` then a new line), so the model is asked to finish
the line it has been shown; EOS stands in when the tokenizer has no single newline token. Like the
end-of-turn token for chat models, the terminator keeps ``tech`` and ``technology`` apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import InputError, ProviderError

# Stands in for the item when the chat is rendered once, to split it into head and tail.
SENTINEL = "\u27e6PROMPTCLF_ITEM\u27e7"
BASE_CUE = "Label:"


@dataclass(frozen=True)
class Layout:
    """Token ids of one request's prompt around the item, and how labels are written after it."""

    head: list[int]  # everything before the item (encoded once, its cache reused)
    tail: list[int]  # everything after the item, up to where the answer starts
    end: int  # the token that closes an answer (end-of-turn, or newline for base models)
    span: tuple[int, int] | None  # token span of the few-shot examples inside ``head``
    base: bool  # no chat template: labels are written as " label"


def encode(tok: Any, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"]) if text else []


def has_chat_template(tok: Any) -> bool:
    return bool(getattr(tok, "chat_template", None))


def render(tok: Any, system: str, user: str, answer: str | None) -> str:
    """The prompt as text, ending where the answer starts (or with ``answer`` and its terminator)."""
    if not has_chat_template(tok):
        text = (f"{system}\n\n" if system else "") + user.rstrip()
        if not text.endswith(BASE_CUE):
            text += f"\n{BASE_CUE}"
        return text if answer is None else f"{text} {answer}\n"
    msgs = [{"role": "user", "content": user}]
    if system:
        msgs.insert(0, {"role": "system", "content": system})
    if answer is not None:
        msgs.append({"role": "assistant", "content": answer})
    try:
        return str(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=answer is None))
    except Exception:  # jinja2 TemplateError: some templates reject a system role; fold it into the user turn
        if not system:
            raise
        return render(tok, "", f"{system}\n\n{user}", answer)


def layout(
    tok: Any, model: str, system: str, prefix: str, suffix: str, examples: tuple[int, int] | None = None
) -> Layout:
    """Split the prompt around the item into token ids; map the examples' character span to tokens.

    The head is tokenized as one string either way, so both ``shot_attention`` modes see the
    same tokens; the span is mapped through the tokenizer's offsets (a token that straddles a
    boundary stays outside the span).
    """
    text = render(tok, system, prefix + SENTINEL + suffix, None)
    if text.count(SENTINEL) != 1:
        raise ProviderError(f"the chat template of {model!r} does not keep the user message verbatim")
    head, tail = text.split(SENTINEL)
    head_ids = encode(tok, head)
    span = None
    if examples is not None and examples[0] < examples[1] and head.endswith(prefix):
        cut = len(head) - len(prefix)
        span = token_span(tok, head, cut + examples[0], cut + examples[1], len(head_ids))
    if not head_ids:  # the cache needs at least one token to hold; start from BOS
        bos = tok.bos_token_id
        if bos is None:
            raise ProviderError(f"model {model!r}: empty prompt head and no BOS token to start from")
        head_ids = [bos]
    tail_ids = encode(tok, tail)
    if not tail_ids:
        raise ProviderError(f"the chat template of {model!r} leaves nothing between the user text and the answer")
    base = not has_chat_template(tok)
    if base:
        nl = encode(tok, "\n")
        end_id = nl[0] if len(nl) == 1 else tok.eos_token_id
    else:
        # The answer's end-of-turn token: whatever the template writes right after an assistant answer.
        full = render(tok, system, prefix + "x" + suffix, SENTINEL)
        after_answer = full.split(SENTINEL, 1)[1].strip() if SENTINEL in full else ""
        end_ids = encode(tok, after_answer)
        end_id = end_ids[0] if end_ids else tok.eos_token_id
    if end_id is None:
        raise ProviderError(f"model {model!r} has no end-of-turn or EOS token to close a label")
    return Layout(head_ids, tail_ids, int(end_id), span, base)


def answers(tok: Any, lay: Layout, labels: list[str]) -> list[list[int]]:
    """Each label's answer tokens, terminator included."""
    out = []
    for label in labels:
        if not label:
            raise InputError(f"label {label!r} has no tokens; labels must be non-empty text")
        if lay.base:
            # " label" as it is tokenized right after "Label:" (SentencePiece tokenizers merge the space
            # differently at the start of a string).
            cue = encode(tok, BASE_CUE)
            both = encode(tok, f"{BASE_CUE} {label}")
            ids = both[len(cue) :] if both[: len(cue)] == cue else encode(tok, f" {label}")
        else:
            ids = encode(tok, label)
        if not ids:
            raise InputError(f"label {label!r} has no tokens; labels must be non-empty text")
        out.append(ids + [lay.end])
    return out


def token_span(tok: Any, text: str, a: int, b: int, n_tokens: int) -> tuple[int, int] | None:
    """Tokens of ``text`` lying wholly inside characters [a, b), or None if there are none."""
    try:
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:  # slow (Python) tokenizers have no offsets: full attention
        return None
    offsets = enc["offset_mapping"]
    if len(offsets) != n_tokens:
        return None
    inside = [i for i, (start, end) in enumerate(offsets) if start >= a and end <= b]
    if not inside or inside[0] == 0:  # the item's view must keep at least one token before it
        return None
    return inside[0], inside[-1] + 1
