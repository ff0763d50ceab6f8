"""Scoring prompt parts: where the few-shot examples sit inside the shared prefix."""

from __future__ import annotations

from promptclf.label.prompts import PromptBuilder, Shot
from promptclf.labels import LabelSet

LABELS = LabelSet.from_names(["sport", "politics"])
SHOTS = [Shot("Chelsea won the cup final.", "sport", 0), Shot("MPs voted on the budget.", "politics", 1)]


def test_examples_span_covers_the_shots_only() -> None:
    parts = PromptBuilder(LABELS, SHOTS).score_parts()
    assert parts.examples is not None
    a, b = parts.examples
    before, shots, after = parts.prefix[:a], parts.prefix[a:b], parts.prefix[b:]
    assert "Classify" in before and "sport, politics" in before
    assert "Chelsea won the cup final." in shots and "MPs voted on the budget." in shots
    assert "Chelsea" not in before + after and "MPs" not in before + after
    assert after.rstrip().endswith("Text:")
    # Taking the span out leaves exactly the zero-shot prefix.
    zero = PromptBuilder(LABELS).score_parts()
    assert zero.examples is None
    assert before + after == zero.prefix and parts.suffix == zero.suffix


def test_examples_span_of_a_custom_template(tmp_path) -> None:
    tpl = tmp_path / "score.j2"
    tpl.write_text(
        "Topics: {{ labels | map(attribute='name') | join('/') }}\n"
        "{% for s in shots %}<{{ s.text }}> is {{ s.label }}\n{% endfor %}"
        "Now: {{ item }}\nTopic?"
    )
    parts = PromptBuilder(LABELS, SHOTS, template=tpl).score_parts()
    assert parts.examples is not None
    a, b = parts.examples
    assert parts.prefix[:a] == "Topics: sport/politics\n"
    assert parts.prefix[a:b] == "<Chelsea won the cup final.> is sport\n<MPs voted on the budget.> is politics\n"
    assert parts.prefix[b:] == "Now: " and parts.suffix == "\nTopic?"


def test_no_span_when_the_template_ignores_shots(tmp_path) -> None:
    tpl = tmp_path / "score.j2"
    tpl.write_text("Label this: {{ item }}")
    assert PromptBuilder(LABELS, SHOTS, template=tpl).score_parts().examples is None
