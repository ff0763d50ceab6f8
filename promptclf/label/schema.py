"""The structured-output contract: a Pydantic response model whose label is an enum of the
label set, its JSON schema for providers, and tolerant parsing of what comes back.

Parsing is strict first (the response model), then lenient: labels are normalised
(case, whitespace, aliases), complete items are salvaged from truncated JSON, and every
problem (missing, duplicated, out-of-range ids, off-list labels) is reported per item so
the engine can re-ask exactly those.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, create_model

from ..errors import ResponseFormatError
from ..labels import LabelSet


def response_model(labels: LabelSet) -> type[BaseModel]:
    """``{"items": [{"id": int, "label": <enum of labels>}]}`` as a Pydantic model; for a multi-label set
    ``{"items": [{"id": int, "labels": [<enum of labels>, ...]}]}`` (an empty list is an answer)."""
    label_enum = enum.Enum("Label", {f"L{i}": name for i, name in enumerate(labels.names)}, type=str)  # type: ignore[misc]
    fields: dict[str, Any] = (
        {"labels": (list[label_enum], ...)} if labels.multi_label else {"label": (label_enum, ...)}  # type: ignore[valid-type]
    )
    item = create_model("Item", __config__=ConfigDict(extra="forbid"), id=(int, ...), **fields)
    return create_model("Labels", __config__=ConfigDict(extra="forbid"), items=(list[item], ...))  # type: ignore[valid-type]


def response_schema(labels: LabelSet) -> dict[str, Any]:
    """The response model's JSON schema with ``$ref``s inlined (some servers ignore ``$defs``)."""
    schema = response_model(labels).model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].split("/")[-1]])
            return {k: inline(v) for k, v in node.items() if k != "title"}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)


def schema_for_batch(schema: dict[str, Any], n_items: int, strict: bool) -> dict[str, Any]:
    """The schema for one request of ``n_items``: ids limited to 1..n and, where the mode
    allows it, exactly n entries. (OpenAI's strict mode rejects minItems/maxItems.) Grammar-
    constrained servers then cannot answer with an empty or short list."""
    if strict:
        return schema
    out = json.loads(json.dumps(schema))
    arr = out["properties"]["items"]
    arr["minItems"] = arr["maxItems"] = n_items
    arr["items"]["properties"]["id"].update({"minimum": 1, "maximum": n_items})
    return out


FORMAT_INSTRUCTIONS = (
    'Reply with JSON only, no prose, in exactly this form: {{"items": [{{"id": 1, "label": "<label>"}}, ...]}} '
    "where <label> is one of: {labels}."
)
FORMAT_INSTRUCTIONS_MULTI = (
    'Reply with JSON only, no prose, in exactly this form: {{"items": [{{"id": 1, "labels": ["<label>", ...]}}, '
    "...]}} where each <label> is one of: {labels}; an empty list when none applies."
)


def format_instructions_for(labels: LabelSet) -> str:
    """The JSON shape spelled out in the prompt (``prompt`` mode), for one- or multi-label answers."""
    template = FORMAT_INSTRUCTIONS_MULTI if labels.multi_label else FORMAT_INSTRUCTIONS
    return template.format(labels=", ".join(labels.names))


@dataclass
class ParsedBatch:
    """What one response said about the ids it was asked about."""

    labels: dict[int, str] = field(default_factory=dict)  # id -> canonical label (multi-label: joined with ';')
    sets: dict[int, list[str]] = field(default_factory=dict)  # multi-label: id -> its labels, in label-set order
    invalid: dict[int, str] = field(default_factory=dict)  # id -> the off-list answer
    missing: list[int] = field(default_factory=list)
    conflicting: list[int] = field(default_factory=list)  # id answered twice with different labels
    extra_ids: list[int] = field(default_factory=list)  # ids that were not asked about
    salvaged: bool = False  # JSON was broken; complete items were recovered

    @property
    def retry_ids(self) -> list[int]:
        return sorted({*self.missing, *self.conflicting, *self.invalid})


_ITEM_RE = re.compile(r'\{\s*"id"\s*:\s*"?(\d+)"?\s*,\s*"label"\s*:\s*"((?:[^"\\]|\\.)*)"\s*\}')
_ITEM_RE_REV = re.compile(r'\{\s*"label"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"id"\s*:\s*"?(\d+)"?\s*\}')
# A complete multi-label item, in either key order: {"id": 3, "labels": ["a", "b"]}.
_STRING_RE = re.compile(r'"((?:[^"\\]|\\.)*)"')
_LIST = r'\[\s*((?:"(?:[^"\\]|\\.)*"\s*,?\s*)*)\]'
_MULTI_RE = re.compile(r'\{\s*"id"\s*:\s*"?(\d+)"?\s*,\s*"labels"\s*:\s*' + _LIST + r"\s*\}")
_MULTI_RE_REV = re.compile(r'\{\s*"labels"\s*:\s*' + _LIST + r'\s*,\s*"id"\s*:\s*"?(\d+)"?\s*\}')


def _load_json(text: str) -> Any:
    text = text.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fenced:
        text = fenced.group(1).strip()
    start = min([i for i in (text.find("{"), text.find("[")) if i >= 0], default=-1)
    if start > 0:
        text = text[start:]
    return json.loads(text)


def _salvage(text: str, multi: bool) -> list[tuple[int, object]]:
    """Every complete item object in a truncated or chatty answer."""
    if multi:

        def names(group: str) -> list[str]:
            return [json.loads(f'"{v}"') for v in _STRING_RE.findall(group)]

        pairs: list[tuple[int, object]] = [(int(m.group(1)), names(m.group(2))) for m in _MULTI_RE.finditer(text)]
        return pairs + [(int(m.group(2)), names(m.group(1))) for m in _MULTI_RE_REV.finditer(text)]
    pairs = [(int(m.group(1)), json.loads(f'"{m.group(2)}"')) for m in _ITEM_RE.finditer(text)]
    return pairs + [(int(m.group(2)), json.loads(f'"{m.group(1)}"')) for m in _ITEM_RE_REV.finditer(text)]


def _multi_value(entry: dict[str, Any]) -> object:
    """A multi-label item's answer: its ``labels`` list (a lone ``label`` string is a list of one)."""
    value = entry.get("labels", entry.get("label"))
    if isinstance(value, str):
        return [value]
    return value


def _read_set(value: object, labels: LabelSet) -> tuple[list[str] | None, str | None]:
    """(canonical labels in label-set order, None) of a multi-label answer, or (None, the off-list
    answer) when it is not a list or holds a label off the list."""
    if not isinstance(value, list):
        return None, str(value)
    names = [labels.normalize(v) for v in value]
    bad = [str(v) for v, n in zip(value, names, strict=True) if n is None]
    if bad:
        return None, ", ".join(bad)
    return [n for n in labels.names if n in names], None


def parse_response(text: str, ids: list[int], labels: LabelSet) -> ParsedBatch:
    """Parse a response to a request about ``ids``. Raises ResponseFormatError if nothing is usable.

    Multi-label: an item's answer is a list; one label off the list makes the item ``invalid`` (re-asked),
    the same id twice with different sets makes it ``conflicting``; an empty list is a valid answer."""
    multi = labels.multi_label
    pairs: list[tuple[int, object]] = []
    out = ParsedBatch()
    try:
        data = _load_json(text)
        entries = data.get("items") if isinstance(data, dict) else data
        if isinstance(data, dict) and entries is None and len(data) == 1:
            entries = next(iter(data.values()))  # e.g. {"labels": [...]} from a loose server
        if not isinstance(entries, list):
            raise ResponseFormatError(f"response JSON has no 'items' list: {text[:200]!r}")
        for e in entries:
            if isinstance(e, dict) and "id" in e:
                try:
                    pairs.append((int(e["id"]), _multi_value(e) if multi else e.get("label")))
                except (TypeError, ValueError):
                    continue
    except (json.JSONDecodeError, ValueError):
        # Truncated or chatty JSON: keep every complete {"id":..,"label":..} object.
        pairs = _salvage(text, multi)
        if not pairs:
            raise ResponseFormatError(
                f"response is not valid JSON and holds no complete item: {text[:200]!r}"
            ) from None
        out.salvaged = True

    asked = set(ids)
    seen: dict[int, object] = {}
    for i, lab in pairs:
        if i not in asked:
            out.extra_ids.append(i)
            continue
        if i in seen:
            same = _read_set(seen[i], labels) == _read_set(lab, labels) if multi else (
                labels.normalize(seen[i]) == labels.normalize(lab)
            )  # fmt: skip
            if not same and i not in out.conflicting:
                out.conflicting.append(i)
            continue
        seen[i] = lab
    for i in ids:
        if i in out.conflicting:
            continue
        if i not in seen:
            out.missing.append(i)
            continue
        if multi:
            names, bad = _read_set(seen[i], labels)
            if names is None:
                out.invalid[i] = str(bad)
            else:
                out.sets[i], out.labels[i] = names, ";".join(names)
            continue
        name = labels.normalize(seen[i])
        if name is None:
            out.invalid[i] = str(seen[i])
        else:
            out.labels[i] = name
    return out
