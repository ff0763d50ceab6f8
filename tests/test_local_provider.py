"""The in-process local provider: exact log-likelihood scoring with a reused prefix cache.

Correctness is checked against a plain forward pass over the whole sequence (no cache, one
label at a time), on the real SmolLM2-135M-Instruct and on a tiny random-weight Llama that
shares SmolLM2's tokenizer (fast code-path checks: truncation, reuse on/off, usage counts).
"""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from promptclf.errors import InputError  # noqa: E402
from promptclf.providers.base import ScoreRequest, ScoringProvider  # noqa: E402
from promptclf.providers.local.provider import LocalProvider  # noqa: E402

LABELS = ["business", "entertainment", "politics", "sport", "tech"]
SYSTEM = "You are a news editor who files every article under exactly one topic."
PREFIX = f"Classify the news article into one of these topics: {', '.join(LABELS)}.\n\nText: "
SUFFIX = "\nLabel:"


def reference_probs(provider: LocalProvider, request: ScoreRequest) -> list[list[float]]:
    """Probabilities from one uncached forward pass per (item, label) over the full token sequence."""
    head, tail, end, _ = provider._layout(request.system, request.prefix, request.suffix)
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
    head, tail, end, _ = smollm2._layout(SYSTEM, PREFIX, SUFFIX)
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PREFIX + item + SUFFIX}]
    want = smollm2.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert smollm2.tokenizer.decode(head + smollm2._encode(item) + tail) == want
    assert smollm2.tokenizer.convert_ids_to_tokens(end) == "<|im_end|>"
    assert smollm2.count_tokens(item) == len(smollm2._encode(item)) > 5


@pytest.mark.slow
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
    head, tail, _, _ = cached._layout(req.system, req.prefix, req.suffix)
    lab = sum(len(cached._encode(x)) for x in labels)  # each label's tokens (+ end-of-turn) minus the last
    per_item = [min(len(cached._encode(x)), 40) + len(tail) + lab for x in items]
    assert res.usage.prompt_tokens == len(head) + sum(per_item)
    assert fresh.usage.prompt_tokens == len(head) * len(items) + sum(per_item)


def answer_only_reference(provider: LocalProvider, request: ScoreRequest) -> list[list[float]]:
    """``shot_attention="answer"`` scores from one uncached forward pass per (item, label), no packing.

    The sequence holds the instructions, the examples, the text after them, then a second copy
    of that text for the item's own view, the item, the tail and the answer, with hand-set
    positions and a mask: the copy and the item see the instructions, the copy and the item
    only (the item is encoded as in a zero-shot prompt); the tail and answer see everything but
    the copy. The provider gets the same numbers from two cached passes.
    """
    head, tail, end, span = provider._layout(request.system, request.prefix, request.suffix, request.examples)
    assert span is not None
    s, e = span
    pre, ex, post = head[:s], head[s:e], head[e:]
    rows = []
    with torch.inference_mode():
        for item in request.items:
            it = provider._encode(item)[: provider.max_item_tokens]
            scores = []
            for label in request.labels:
                ans = provider._encode(label) + [end]
                seq = pre + ex + post + post + it + tail + ans
                past = len(head)
                pos = [*range(past), *range(e, past), *range(past, past + len(it) + len(tail) + len(ans))]
                n = len(seq)
                allowed = torch.ones(n, n, dtype=torch.bool).tril()
                dup = slice(past, past + len(post))  # the item's copy of the text after the examples
                item = slice(dup.stop, dup.stop + len(it))
                allowed[dup, s:past] = False  # the copy sees the instructions and itself
                allowed[item, s:past] = False  # so does the item: no examples, no original copy
                allowed[item.stop :, dup] = False  # the tail and answer see the original, not the copy
                mask = torch.zeros(n, n).masked_fill_(~allowed, torch.finfo(torch.float32).min)[None, None]
                logits = provider._lm(
                    input_ids=torch.tensor([seq]), position_ids=torch.tensor([pos]), attention_mask=mask
                ).logits[0]
                lp = torch.log_softmax(logits[n - len(ans) - 1 : -1].float(), dim=-1)
                scores.append(lp[torch.arange(len(ans)), torch.tensor(ans)].sum())
            rows.append(torch.softmax(torch.stack(scores), dim=0).tolist())
    return rows


@pytest.mark.slow
def test_answer_only_shot_attention_matches_reference(smollm2: LocalProvider) -> None:
    labels = [*LABELS, "technology"]
    instr = f"Classify the news article into one of these topics: {', '.join(LABELS)}.\n\n"
    shots = (
        "Examples:\n\nText: Chelsea won the cup.\nLabel: sport\n\nText: MPs vote on the budget.\nLabel: politics\n\n"
    )
    prefix = instr + shots + "Text: "
    items = ["Shares in Apple rose 5% after strong iPhone sales.", "The new film opens on Friday.", ""]
    req = ScoreRequest(SYSTEM, prefix, items, SUFFIX, labels, examples=(len(instr), len(instr) + len(shots)))
    answer = LocalProvider(shot_attention="answer")  # shares the loaded model
    got = answer.score(req)
    want = answer_only_reference(answer, ScoreRequest(SYSTEM, prefix, items[:2], SUFFIX, labels, req.examples))
    assert max_diff(got.probs[:2], want) < 1e-4
    # It is not the exact prompt: the full-attention scores differ ...
    full = LocalProvider(shot_attention="full").score(req)
    assert max_diff(full.probs[:1], smollm2.score(ScoreRequest(SYSTEM, prefix, items[:1], SUFFIX, labels)).probs) < 1e-5
    assert max_diff(got.probs, full.probs) > 1e-3
    # ... except for an empty item, which has no tokens to hide from the examples.
    assert max_diff(got.probs[2:], full.probs[2:]) < 1e-4
    # Without an examples span, "answer" scores the exact prompt.
    plain = answer.score(ScoreRequest(SYSTEM, prefix, items[:1], SUFFIX, labels))
    assert max_diff(plain.probs, full.probs[:1]) < 1e-5
    # The cached view is reused: a second call encodes no prefix tokens.
    again = answer.score(req)
    assert max_diff(again.probs, got.probs) < 1e-5
    assert again.usage.prompt_tokens < got.usage.prompt_tokens


@pytest.mark.slow
def test_bbc_zero_shot_smoke(smollm2: LocalProvider) -> None:
    """20 real BBC articles, zero-shot: every item gets a valid label; accuracy printed (the model is weak)."""
    from promptclf.data.tables import bbc_sample

    df = bbc_sample(20, seed=1)
    provider = LocalProvider(max_item_tokens=128)  # shares the loaded model; short items keep CI fast
    req = ScoreRequest(system=SYSTEM, prefix=PREFIX, items=df.text.tolist(), suffix=SUFFIX, labels=LABELS)
    res = provider.score(req)
    assert len(res.probs) == len(df) and all(abs(sum(r) - 1) < 1e-5 for r in res.probs)
    pred = [LABELS[max(range(len(LABELS)), key=row.__getitem__)] for row in res.probs]
    acc = sum(p == g for p, g in zip(pred, df.label, strict=True)) / len(df)
    print(f"SmolLM2-135M zero-shot on 20 BBC articles (128 tokens each): accuracy {acc:.0%} (chance 20%)")
    assert len(pred) == 20 and set(pred) <= set(LABELS)


def test_labeler_keys_the_store_by_shot_attention(tiny_llama: str) -> None:
    """Both modes run through the engine; a cached answer of one mode is never served for the other."""
    import pandas as pd

    from promptclf.label.labeler import Labeler
    from promptclf.label.options import LabelOptions

    df = pd.DataFrame(
        {
            "text": ["the match ended 2-1", "parliament voted", "a long rally in the final set", "the budget vote"],
            "label": ["sport", "politics", "", ""],
        }
    )

    def run(mode: str) -> tuple[pd.DataFrame, Labeler]:
        opts = LabelOptions(provider="local", model=tiny_llama, shots=1, batch_size=1, shot_attention=mode)
        labeler = Labeler(opts, progress=False)
        return labeler.label(df).frame, labeler

    answer, first = run("answer")
    assert list(answer.pred_status) == ["shot", "shot", "ok", "ok"]
    # The scoring provider's full distribution goes to pred_probs (JSON over every label).
    for lab, p, cell in zip(answer.pred_label[2:], answer.pred_prob[2:], answer.pred_probs[2:], strict=True):
        dist = json.loads(cell)
        assert set(dist) == {"sport", "politics"} and abs(sum(dist.values()) - 1) < 1e-5
        assert dist[lab] == pytest.approx(p, abs=1e-6) and dist[lab] == max(dist.values())
    assert list(answer.pred_probs[:2]) == ["", ""]  # shots have none
    assert first.stats.requests == 2 and first.stats.cached_requests == 0
    _, again = run("answer")
    assert again.stats.cached_requests == 2
    full, other = run("full")
    assert other.stats.cached_requests == 0
    assert max(abs(a - b) for a, b in zip(answer.pred_prob[2:], full.pred_prob[2:], strict=True)) > 1e-6


def test_dry_run_estimate_matches_the_tokens_a_local_run_uses(smollm2: LocalProvider) -> None:
    """The local dry run counts the reused prefix once, as the provider does (exact tokenizer: within 10%)."""
    import pandas as pd

    from promptclf.label.labeler import Labeler
    from promptclf.label.options import LabelOptions

    texts = [
        "Shares in the bank fell sharply after the results.",
        "The striker scored twice in the second half.",
        "The minister resigned over the leaked memo.",
        "The new phone has a faster chip and a bigger screen.",
        "The band's new album tops the charts this week.",
        "Oil prices rose for a third day on supply worries.",
    ]
    df = pd.DataFrame(
        {"text": texts + ["Profits rose 5%.", "A late goal won it."], "label": [""] * 6 + ["business", "sport"]}
    )
    opts = LabelOptions(provider="local", shots=1, batch_size=2, labels=[{"name": "business"}, {"name": "sport"}])
    est = Labeler(opts, progress=False).dry_run(df)
    labeler = Labeler(opts, progress=False)
    labeler.label(df)
    assert est.requests == labeler.stats.requests == 3 and est.tokens_exact
    actual = labeler.stats.prompt_tokens
    print(f"dry-run estimate {est.est_prompt_tokens} prompt tokens, run used {actual}")
    assert abs(est.est_prompt_tokens - actual) <= 0.1 * actual, (est.est_prompt_tokens, actual)


@pytest.mark.slow
def test_batched_passes_equal_one_item_per_pass_on_smollm2(smollm2: LocalProvider) -> None:
    """``items_per_pass`` > 1 (the CUDA default) gives the one-item path's scores: padded rows of different lengths."""
    items = [
        "Shares in Apple rose 5% after strong iPhone sales.",
        "",
        "Chelsea beat Arsenal 2-1 on Sunday after a late goal from the striker, who had missed three chances.",
        "MPs vote today.",
    ]
    shots = (
        "Examples:\n\nText: Chelsea won the cup.\nLabel: sport\n\nText: MPs vote on the budget.\nLabel: politics\n\n"
    )
    for prefix in (PREFIX, PREFIX.replace("Text: ", shots + "Text: ")):
        req = ScoreRequest(SYSTEM, prefix, items, SUFFIX, LABELS)
        one = smollm2.score(req)
        batched = LocalProvider(items_per_pass=3).score(req)  # shares the loaded model; passes of 3 + 1
        assert max_diff(batched.probs, one.probs) < 1e-4
        assert batched.usage.prompt_tokens == one.usage.prompt_tokens
