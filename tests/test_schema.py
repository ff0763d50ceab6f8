"""Parsing of structured responses: strict JSON, normalisation, salvage, and per-item problems."""

from __future__ import annotations

import json

import pytest

from promptclf.errors import ResponseFormatError
from promptclf.label.schema import parse_response, response_model, response_schema
from promptclf.labels import Label, LabelSet

LABELS = LabelSet((Label("business"), Label("science/technology", aliases=("sci/tech",)), Label("sport")))


def test_schema_is_an_enum_of_the_labels_with_refs_inlined():
    schema = response_schema(LABELS)
    item = schema["properties"]["items"]["items"]
    assert item["properties"]["label"]["enum"] == ["business", "science/technology", "sport"]
    assert "$ref" not in json.dumps(schema)
    assert item["additionalProperties"] is False
    model = response_model(LABELS)
    ok = model.model_validate({"items": [{"id": 1, "label": "sport"}]})
    assert ok.items[0].label.value == "sport"  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        model.model_validate({"items": [{"id": 1, "label": "weather"}]})


def test_clean_response():
    p = parse_response('{"items": [{"id": 1, "label": "sport"}, {"id": 2, "label": "business"}]}', [1, 2], LABELS)
    assert p.labels == {1: "sport", 2: "business"}
    assert p.retry_ids == [] and not p.salvaged


def test_case_whitespace_and_aliases_are_normalised():
    text = '{"items": [{"id": 1, "label": " Sport "}, {"id": 2, "label": "SCI/TECH"}, {"id": 3, "label": "Science Technology"}]}'
    p = parse_response(text, [1, 2, 3], LABELS)
    assert p.labels == {1: "sport", 2: "science/technology"}
    assert p.invalid == {3: "Science Technology"}  # not an alias: stays invalid


def test_missing_duplicate_conflicting_and_out_of_range():
    text = json.dumps(
        {"items": [{"id": 1, "label": "sport"}, {"id": 1, "label": "sport"}, {"id": 2, "label": "sport"},
                   {"id": 2, "label": "business"}, {"id": 9, "label": "sport"}, {"id": 4, "label": "weather"}]}
    )  # fmt: skip
    p = parse_response(text, [1, 2, 3, 4], LABELS)
    assert p.labels == {1: "sport"}  # identical duplicate is fine
    assert p.conflicting == [2]
    assert p.missing == [3]
    assert p.invalid == {4: "weather"}
    assert p.extra_ids == [9]
    assert p.retry_ids == [2, 3, 4]


def test_truncated_json_salvages_complete_items():
    text = '{"items": [{"id": 1, "label": "sport"}, {"id": 2, "label": "busi'
    p = parse_response(text, [1, 2], LABELS)
    assert p.salvaged and p.labels == {1: "sport"} and p.missing == [2]


def test_code_fences_and_prose_around_json():
    text = 'Here you go:\n```json\n{"items": [{"id": 1, "label": "business"}]}\n```'
    assert parse_response(text, [1], LABELS).labels == {1: "business"}


def test_garbage_raises_format_error():
    with pytest.raises(ResponseFormatError):
        parse_response("I cannot help with that.", [1], LABELS)
    with pytest.raises(ResponseFormatError):
        parse_response('{"answer": 3}', [1], LABELS)
