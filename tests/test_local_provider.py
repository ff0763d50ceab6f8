"""The in-process local provider: exact log-likelihood scoring with a reused prefix cache.

Correctness is checked against a plain forward pass over the whole sequence (no cache, one
label at a time), on the real SmolLM2-135M-Instruct and on a tiny random-weight Llama that
shares SmolLM2's tokenizer (fast code-path checks: truncation, reuse on/off, usage counts).
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from promptclf.errors import InputError  # noqa: E402
from promptclf.providers.base import ScoreRequest, ScoringProvider  # noqa: E402
from promptclf.providers.local import LocalProvider  # noqa: E402

LABELS = ["business", "entertainment", "politics", "sport", "tech"]
SYSTEM = "You are a news editor who files every article under exactly one topic."
PREFIX = f"Classify the news article into one of these topics: {', '.join(LABELS)}.\n\nText: "
SUFFIX = "\nLabel:"


def reference_probs(provider: LocalProvider, request: ScoreRequest) -> list[list[float]]:
    """Probabilities from one uncached forward pass per (item, label) over the full token sequence."""
    head, tail, end = provider._layout(request.system, request.prefix, request.suffix)
    rows = []
    provider.load()
    prev = torch.get_num_threads()
    torch.set_num_threads(provider.threads or prev)  # the provider's choice; 2 threads crawl on a busy box
    try:
        rows = _reference_rows(provider, request, head, tail, end)
    finally:
        torch.set_num_threads(prev)
    return rows


def _reference_rows(
    provider: LocalProvider, request: ScoreRequest, head: list[int], tail: list[int], end: int
) -> list[list[float]]:
    rows = []
    with torch.inference_mode():
        for item in request.items:
            ctx = head + provider._encode(item)[: provider.max_item_tokens] + tail
            scores = []
            for label in request.labels:
                ans = provider._encode(label) + [end]
                logits = provider._lm(input_ids=torch.tensor([ctx + ans])).logits[0]
                lp = torch.log_softmax(logits[len(ctx) - 1 : -1].float(), dim=-1)
                scores.append(lp[torch.arange(len(ans)), torch.tensor(ans)].sum())
            rows.append(torch.softmax(torch.stack(scores), dim=0).tolist())
    return rows


def max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))


@pytest.fixture(scope="module")
def smollm2() -> LocalProvider:
    provider = LocalProvider()
    provider.load()
    return provider


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory, smollm2: LocalProvider) -> str:
    """A 2-layer random-weight Llama with SmolLM2's tokenizer and chat template, saved as a model folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = smollm2.tokenizer
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def test_layout_reproduces_the_chat_template(smollm2: LocalProvider) -> None:
    item = "Shares in Apple rose 5% after strong iPhone sales."
    head, tail, end = smollm2._layout(SYSTEM, PREFIX, SUFFIX)
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PREFIX + item + SUFFIX}]
    want = smollm2.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert smollm2.tokenizer.decode(head + smollm2._encode(item) + tail) == want
    assert smollm2.tokenizer.convert_ids_to_tokens(end) == "<|im_end|>"
    assert smollm2.count_tokens(item) == len(smollm2._encode(item)) > 5


def test_cached_scores_match_full_forward_on_smollm2(smollm2: LocalProvider) -> None:
    assert isinstance(smollm2, ScoringProvider) and smollm2.kind == "scoring" and smollm2.name == "local"
    labels = [*LABELS, "technology"]  # multi-token labels and one extending another
    items = ["Shares in Apple rose 5% after strong iPhone sales.", "Chelsea beat Arsenal 2-1 on Sunday.", ""]
    req = ScoreRequest(system=SYSTEM, prefix=PREFIX, items=items, suffix=SUFFIX, labels=labels)
    first = smollm2.score(req)
    assert max_diff(first.probs, reference_probs(smollm2, req)) < 1e-4
    # A second call with the same prefix reuses the cache (only items + tail + labels are counted) ...
    again = smollm2.score(req)
    assert max_diff(again.probs, first.probs) < 1e-5
    head = smollm2._layout(SYSTEM, PREFIX, SUFFIX)[0]
    assert first.usage.prompt_tokens - again.usage.prompt_tokens == len(head)
    assert first.usage.completion_tokens == again.usage.completion_tokens == 0
    assert first.latency_s > 0
    # ... and a different prefix in between does not corrupt anything.
    other = ScoreRequest(system="", prefix="Topic of this text? ", items=items[:1], suffix="", labels=labels)
    assert max_diff(smollm2.score(other).probs, reference_probs(smollm2, other)) < 1e-4
    assert max_diff(smollm2.score(req).probs, first.probs) < 1e-5


def test_probabilities_shape_and_shared_first_token(smollm2: LocalProvider) -> None:
    labels = ["tech", "technology", "sport", "sports", "politics"]
    first_tokens = [smollm2._encode(lab)[0] for lab in labels]
    assert first_tokens[2] == first_tokens[3]  # "sport" and "sports" start with the same token
    items = ["The new phone has a faster chip.", "The striker scored twice.", "Parliament votes today."]
    res = smollm2.score(ScoreRequest(system=SYSTEM, prefix="Text: ", items=items, suffix="", labels=labels))
    assert len(res.probs) == len(items) and all(len(row) == len(labels) for row in res.probs)
    for row in res.probs:
        assert abs(sum(row) - 1) < 1e-5 and all(0 <= p <= 1 for p in row)
        assert abs(row[0] - row[1]) > 1e-4 and abs(row[2] - row[3]) > 1e-4
    with pytest.raises(InputError):
        smollm2.score(ScoreRequest(system="", prefix="", items=["x"], suffix="", labels=[]))


def test_tiny_llama_truncation_reuse_and_usage(tiny_llama: str) -> None:
    labels = ["business", "entertainment", "sport", "sports", "tech", "technology"]
    long_item = " ".join(f"word{i}" for i in range(200))
    items = ["short one", long_item, "another short item"]
    req = ScoreRequest(system="sys", prefix="Classify: ", items=items, suffix=" Answer:", labels=labels)
    cached = LocalProvider(model=tiny_llama, max_item_tokens=40)
    assert cached.model == tiny_llama and cached.device == "cpu"
    res = cached.score(req)
    assert max_diff(res.probs, reference_probs(cached, req)) < 1e-4
    # Truncation keeps the beginning: scoring the item's first 40 tokens directly gives the same row.
    cut = cached.tokenizer.decode(cached._encode(long_item)[:40])
    assert cached._encode(cut) == cached._encode(long_item)[:40]
    only_cut = cached.score(ScoreRequest(req.system, req.prefix, [cut], req.suffix, labels))
    assert max_diff(only_cut.probs, res.probs[1:2]) < 1e-5
    # Without reuse the numbers are the same but the prefix is paid for every item.
    fresh = LocalProvider(model=tiny_llama, max_item_tokens=40, reuse_prefix=False).score(req)
    assert max_diff(fresh.probs, res.probs) < 1e-5
    head, tail, _ = cached._layout(req.system, req.prefix, req.suffix)
    lab = sum(len(cached._encode(x)) for x in labels)  # each label's tokens (+ end-of-turn) minus the last
    per_item = [min(len(cached._encode(x)), 40) + len(tail) + lab for x in items]
    assert res.usage.prompt_tokens == len(head) + sum(per_item)
    assert fresh.usage.prompt_tokens == len(head) * len(items) + sum(per_item)


def test_bbc_zero_shot_smoke(smollm2: LocalProvider) -> None:
    """20 real BBC articles, zero-shot: every item gets a valid label; accuracy printed (the model is weak)."""
    from promptclf.data import bbc_sample

    df = bbc_sample(20, seed=1)
    provider = LocalProvider(max_item_tokens=128)  # shares the loaded model; short items keep CI fast
    req = ScoreRequest(system=SYSTEM, prefix=PREFIX, items=df.text.tolist(), suffix=SUFFIX, labels=LABELS)
    res = provider.score(req)
    assert len(res.probs) == len(df) and all(abs(sum(r) - 1) < 1e-5 for r in res.probs)
    pred = [LABELS[max(range(len(LABELS)), key=row.__getitem__)] for row in res.probs]
    acc = sum(p == g for p, g in zip(pred, df.label, strict=True)) / len(df)
    print(f"SmolLM2-135M zero-shot on 20 BBC articles (128 tokens each): accuracy {acc:.0%} (chance 20%)")
    assert len(pred) == 20 and set(pred) <= set(LABELS)
