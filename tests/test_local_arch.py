"""Any causal LM as the local teacher: tiny random-weight models of six architectures.

Each model is built from a config (hidden size 32, 2-4 layers, sliding windows of 16 tokens
where the architecture has them), saved with ``save_pretrained`` next to SmolLM2's tokenizer
(with its chat template, or without one: a base model), and loaded by path like a user's model.
The reference is independent of the provider's cache and masks: for each item and label, one
plain forward pass over the whole token sequence with the model's default masks, the answer
tokens' log-probabilities summed, softmax over labels. The few-shot prompts are several times
longer than the sliding window, and a check shows the window changes the reference, so a
provider that got the window wrong would fail here.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from promptclf.errors import InputError  # noqa: E402
from promptclf.providers.base import ScoreRequest  # noqa: E402
from promptclf.providers.local.provider import LocalProvider  # noqa: E402

WINDOW = 16
LABELS = ["business", "sport", "tech", "technology", "entertainment"]
ITEMS = [
    "Shares rose after the results.",
    " ".join(f"word{i}" for i in range(30)),  # longer than the window on its own
    "",
    "The striker scored twice in the final.",
]
SHOTS = "".join(
    f"Text: example {i}: the {['market', 'match', 'phone', 'chip', 'film'][i % 5]} news of the day\n"
    f"Label: {LABELS[i % 5]}\n"
    for i in range(10)
)
INSTR = f"Classify the text into one of these labels: {', '.join(LABELS)}.\n"
ZERO = ScoreRequest("You label texts.", INSTR + "Text: ", ITEMS, "\nAnswer with the label only.", LABELS)
FEW = ScoreRequest(
    "You label texts.",
    INSTR + SHOTS + "Text: ",
    ITEMS,
    "\nAnswer with the label only.",
    LABELS,
    examples=(len(INSTR), len(INSTR) + len(SHOTS)),
)


def _configs(tok: Any) -> dict[str, tuple[str, Any]]:
    common = {
        "vocab_size": len(tok),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "initializer_range": 0.2,  # peaked enough that a wrong mask moves the probabilities
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.eos_token_id,
    }
    t = transformers
    gemma = {"head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": WINDOW}
    return {
        "llama": ("LlamaForCausalLM", t.LlamaConfig(num_hidden_layers=2, **common)),
        "qwen2": ("Qwen2ForCausalLM", t.Qwen2Config(num_hidden_layers=2, **common)),
        # Qwen2 with its sliding window on for the layers from max_window_layers on: full + sliding layers.
        "qwen2-swa": (
            "Qwen2ForCausalLM",
            t.Qwen2Config(
                num_hidden_layers=3, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1, **common
            ),
        ),
        "mistral": ("MistralForCausalLM", t.MistralConfig(num_hidden_layers=2, sliding_window=WINDOW, **common)),
        "gemma2": ("Gemma2ForCausalLM", t.Gemma2Config(num_hidden_layers=4, **gemma, **common)),
        "gemma3": (
            "Gemma3ForCausalLM",
            t.Gemma3TextConfig(
                num_hidden_layers=3,
                layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                **gemma,
                **common,
            ),
        ),
        "phi3": ("Phi3ForCausalLM", t.Phi3Config(num_hidden_layers=2, sliding_window=WINDOW, **common)),
    }


ARCHS = ["llama", "qwen2", "qwen2-swa", "mistral", "gemma2", "gemma3", "phi3"]
SLIDING = {"qwen2-swa", "mistral", "gemma2", "gemma3", "phi3"}


@pytest.fixture(scope="module")
def tok() -> Any:
    return LocalProvider().tokenizer  # SmolLM2's tokenizer and chat template


@pytest.fixture(scope="module")
def models(tok: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Model folders by name: every architecture with the chat template, plus base (no template) variants."""
    import copy

    root = tmp_path_factory.mktemp("archs")
    base_tok = copy.deepcopy(tok)
    base_tok.chat_template = None
    out = {}
    for name, (cls, config) in _configs(tok).items():
        torch.manual_seed(0)
        model = getattr(transformers, cls)(config)
        for variant, t in (("", tok), ("-base", base_tok)):
            if variant and name not in ("llama", "gemma3"):
                continue
            folder = root / f"{name}{variant}"
            model.save_pretrained(folder)
            t.save_pretrained(folder)
            out[name + variant] = str(folder)
    return out


def reference(provider: LocalProvider, request: ScoreRequest, window_mask: bool = True) -> list[list[float]]:
    """One plain forward pass per (item, label) over the whole sequence, the model's default masks, no cache.

    ``window_mask=False`` instead passes a plain causal mask to every layer (sliding windows
    ignored): only to show that the window matters for these prompts.
    """
    head, tail, _, _ = provider._layout(request.system, request.prefix, request.suffix)
    answers = provider._answers(request.system, request.prefix, request.suffix, request.labels)
    provider.load()
    lm = provider._lm
    rows = []
    with torch.inference_mode():
        for item in request.items:
            ctx = head + provider._encode(item)[: provider.max_item_tokens] + tail
            scores = []
            for ans in answers:
                seq = ctx + ans
                kwargs = {}
                if not window_mask:
                    n = len(seq)
                    causal = torch.ones(n, n, dtype=torch.bool).tril()
                    kwargs["attention_mask"] = torch.zeros(n, n).masked_fill_(~causal, torch.finfo(torch.float32).min)[
                        None, None
                    ]
                # the logits from the last context token on (the LM head over the whole vocabulary is most of the work)
                logits = lm(input_ids=torch.tensor([seq]), logits_to_keep=len(ans) + 1, **kwargs).logits[0]
                lp = torch.log_softmax(logits[:-1].float(), dim=-1)
                scores.append(lp[torch.arange(len(ans)), torch.tensor(ans)].sum())
            rows.append(torch.softmax(torch.stack(scores), dim=0).tolist())
    return rows


def max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))


@pytest.mark.parametrize("arch", ARCHS)
def test_scores_equal_the_uncached_reference(arch: str, models: dict[str, str]) -> None:
    """Zero-shot and a few-shot prompt several windows long: shared prefix, batched, and copied cache."""
    provider = LocalProvider(model=models[arch])
    plan = provider.plan
    assert plan.mode == "shared" and plan.sliding == (arch in SLIDING)
    head = provider._layout(FEW.system, FEW.prefix, FEW.suffix)[0]
    assert len(head) > 4 * WINDOW
    for req in (ZERO, FEW):
        want = reference(provider, req)
        got = provider.score(req)
        assert max_diff(got.probs, want) < 1e-4, arch
        again = provider.score(req)  # the reused prefix cache was not changed by the first call
        assert max_diff(again.probs, got.probs) < 1e-6
        assert again.usage.prompt_tokens == got.usage.prompt_tokens - len(
            provider._layout(req.system, req.prefix, req.suffix)[0]
        )
        batched = LocalProvider(model=models[arch], items_per_pass=3).score(req)  # 3 + 1 rows, padded
        assert max_diff(batched.probs, got.probs) < 1e-5
        assert batched.usage.prompt_tokens == got.usage.prompt_tokens
        copied = LocalProvider(model=models[arch], prefix_mode="copy").score(req)
        assert max_diff(copied.probs, want) < 1e-4
        assert copied.usage.prompt_tokens == got.usage.prompt_tokens
    if arch in SLIDING:  # the window matters for this prompt: ignoring it would fail the checks above
        assert max_diff(reference(provider, FEW, window_mask=False), reference(provider, FEW)) > 1e-3


@pytest.mark.parametrize("arch", ["llama-base", "gemma3-base"])
def test_base_model_gets_a_plain_prompt_ending_in_label(arch: str, models: dict[str, str]) -> None:
    provider = LocalProvider(model=models[arch])
    tok = provider.tokenizer
    assert not tok.chat_template
    head, tail, end, _ = provider._layout(FEW.system, FEW.prefix, FEW.suffix)
    text = tok.decode(head + provider._encode("an item") + tail)
    assert text == f"{FEW.system}\n\n{FEW.prefix}an item{FEW.suffix}\nLabel:"
    assert tok.decode([end]) == "\n"
    answers = provider._answers(FEW.system, FEW.prefix, FEW.suffix, LABELS)
    assert [tok.decode(a) for a in answers] == [f" {lab}\n" for lab in LABELS]
    # A suffix that already ends with the cue is not given a second one.
    h2, t2, _, _ = provider._layout("", "Text: ", "\nLabel:")
    assert tok.decode(h2 + t2) == "Text: \nLabel:"
    for req in (ZERO, FEW):
        got = provider.score(req)
        assert max_diff(got.probs, reference(provider, req)) < 1e-4
        batched = LocalProvider(model=models[arch], items_per_pass=4).score(req)
        assert max_diff(batched.probs, got.probs) < 1e-5


def test_chat_and_base_forms_differ(models: dict[str, str]) -> None:
    """The same weights with and without a chat template see different prompts, so give different scores."""
    chat = LocalProvider(model=models["gemma3"]).score(ZERO)
    base = LocalProvider(model=models["gemma3-base"]).score(ZERO)
    assert max_diff(chat.probs, base.probs) > 1e-3


@pytest.mark.parametrize("arch", ["mistral", "gemma3", "qwen2-swa"])
def test_answer_only_attention_is_refused_with_sliding_windows(arch: str, models: dict[str, str]) -> None:
    provider = LocalProvider(model=models[arch], shot_attention="answer")
    with pytest.raises(InputError, match="sliding-window layers .*--shot-attention full"):
        provider.score(FEW)
    # Without marked examples there is nothing to hide: the exact prompt is scored.
    plain = provider.score(ZERO)
    assert max_diff(plain.probs, reference(provider, ZERO)) < 1e-4


def test_answer_only_attention_runs_on_full_attention_models(models: dict[str, str]) -> None:
    """Qwen2 without sliding layers: the two-pass mode works, and differs from the exact prompt except on an empty item."""
    answer = LocalProvider(model=models["qwen2"], shot_attention="answer").score(FEW)
    full = LocalProvider(model=models["qwen2"]).score(FEW)
    assert max_diff(answer.probs[2:3], full.probs[2:3]) < 1e-5  # ITEMS[2] is empty
    assert max_diff(answer.probs[:2], full.probs[:2]) > 1e-4


def test_copy_mode_is_chosen_where_masks_cannot_be_rebuilt(models: dict[str, str]) -> None:
    """An attention implementation without custom masks, or a chunked layer type, falls back to the copied cache."""
    from promptclf.providers.local.cache import plan

    provider = LocalProvider(model=models["gemma3"])
    lm = provider._lm if provider._lm is not None else (provider.load(), provider._lm)[1]
    config = lm.config
    saved = config._attn_implementation
    try:
        config._attn_implementation = "flash_attention_2"
        p = plan(lm)
        assert p.mode == "copy" and "flash_attention_2" in p.reason
    finally:
        config._attn_implementation = saved
    saved_types = list(config.layer_types)
    try:
        config.layer_types = ["chunked_attention"] * len(saved_types)
        assert plan(lm).mode == "copy"
        with pytest.raises(InputError, match="prefix_mode='shared' is not possible"):
            plan(lm, "shared")
    finally:
        config.layer_types = saved_types
    assert plan(lm).mode == "shared"
    # A cache whose layers of one type hold different numbers of keys (shared-KV layers hold none) does not fit.
    from promptclf.providers.local.cache import encode_prefix, mismatch

    p = plan(lm)
    cache = encode_prefix(lm, p, [1, 2, 3])
    assert mismatch(cache, p) == ""
    cache.layers[2].keys = None  # the second sliding layer
    assert "sliding_attention layers" in mismatch(cache, p)


def test_options_are_checked() -> None:
    with pytest.raises(InputError, match="items_per_pass"):
        LocalProvider(items_per_pass=0)
    with pytest.raises(InputError, match="dtype"):
        LocalProvider(dtype="int8")
    with pytest.raises(InputError, match="prefix_mode"):
        LocalProvider(prefix_mode="crop")  # type: ignore[arg-type]
    cpu = LocalProvider(device="cpu")
    assert cpu.items_per_pass == 1 and cpu.dtype == "float32"
    gpu = LocalProvider(device="cuda")  # nothing is loaded until scoring
    assert gpu.items_per_pass == 8 and gpu.dtype == "bfloat16"
    assert LocalProvider(device="cuda", items_per_pass=1, dtype="float32").items_per_pass == 1
    assert LocalProvider(device="cpu", items_per_pass=4).items_per_pass == 4


def test_bfloat16_batched_path_runs_on_cpu(models: dict[str, str]) -> None:
    """The CUDA defaults (bfloat16, 8 items per pass) on CPU: the same labels as float32, probabilities close."""
    for arch in ("llama", "gemma3"):
        full = LocalProvider(model=models[arch]).score(FEW)
        half = LocalProvider(model=models[arch], dtype="bfloat16", items_per_pass=8)
        got = half.score(FEW)
        assert half.plan.mode == "shared" and half._lm.dtype == torch.bfloat16
        assert max_diff(got.probs, full.probs) < 0.05
        assert [max(range(len(LABELS)), key=r.__getitem__) for r in got.probs] == [
            max(range(len(LABELS)), key=r.__getitem__) for r in full.probs
        ]


def test_labeler_passes_items_per_pass_through(models: dict[str, str]) -> None:
    """``--items-per-pass`` reaches the provider; the labeled file is the same as with one item per pass."""
    import pandas as pd

    from promptclf.label.labeler import Labeler
    from promptclf.label.options import LabelOptions

    df = pd.DataFrame({"text": [*ITEMS, "one more text to label here"]})
    out = {}
    for n in (1, 3):
        opts = LabelOptions(
            provider="local", model=models["gemma3"], batch_size=5, items_per_pass=n, no_cache=True,
            labels=[{"name": lab} for lab in LABELS],
        )  # fmt: skip
        labeler = Labeler(opts, progress=False)
        out[n] = labeler.label(df).frame
        assert labeler.provider.items_per_pass == n
    assert list(out[1].pred_label) == list(out[3].pred_label)
    assert max(abs(a - b) for a, b in zip(out[1].pred_prob, out[3].pred_prob, strict=True)) < 1e-5
