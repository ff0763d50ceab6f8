"""The label set: names, optional descriptions and aliases, and normalisation of answers.

``--labels`` takes a comma-separated list (``"business,sport,tech"``) or a file:

* ``.txt``: one label per line, optionally ``name: description``;
* ``.yaml``/``.yml``/``.json``: a list of names, a list of ``{name, description, aliases}``
  mappings, or a mapping ``name -> description`` / ``name -> {description, aliases}``.

Aliases let a model's near-miss (``sci/tech``) map to the canonical label
(``science/technology``). Anything that still does not match is ``invalid``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError


def _norm(text: str) -> str:
    """Case-, whitespace- and punctuation-insensitive key used for matching answers."""
    text = text.strip().strip("\"'`.").lower()
    return re.sub(r"[\s_\-]+", " ", text).strip()


@dataclass(frozen=True)
class Label:
    name: str
    description: str = ""
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelSet:
    """An ordered set of labels. Order is kept everywhere (prompts, enum, reports)."""

    labels: tuple[Label, ...]
    _lookup: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.labels:
            raise InputError("the label set is empty; pass --labels or a --label-col with values")
        names = [lab.name for lab in self.labels]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InputError(f"duplicate labels in the label set: {', '.join(dupes)}")
        lookup: dict[str, str] = {}
        for lab in self.labels:
            for key in (lab.name, *lab.aliases):
                k = _norm(key)
                if k in lookup and lookup[k] != lab.name:
                    raise InputError(f"alias {key!r} is ambiguous: it matches {lookup[k]!r} and {lab.name!r}")
                lookup[k] = lab.name
        object.__setattr__(self, "_lookup", lookup)

    @property
    def names(self) -> list[str]:
        return [lab.name for lab in self.labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.labels)

    def normalize(self, answer: object) -> str | None:
        """Map a model's answer to a canonical label name, or None when it is off the list."""
        if answer is None:
            return None
        text = str(getattr(answer, "value", answer))
        return self._lookup.get(_norm(text))

    def to_dict(self) -> list[dict[str, object]]:
        return [{"name": lab.name, "description": lab.description, "aliases": list(lab.aliases)} for lab in self.labels]

    @classmethod
    def from_names(cls, names: Iterable[str]) -> LabelSet:
        return cls(tuple(Label(str(n)) for n in names))

    @classmethod
    def from_dict(cls, items: Sequence[dict[str, object]]) -> LabelSet:
        return cls(tuple(_label_from_obj(it) for it in items))


def _label_from_obj(obj: object, name: str | None = None) -> Label:
    if isinstance(obj, str) and name is None:
        return Label(obj.strip())
    if isinstance(obj, str):
        return Label(str(name), description=obj.strip())
    if isinstance(obj, dict):
        nm = obj.get("name", name)
        if not nm:
            raise InputError(f"label entry {obj!r} has no 'name'")
        aliases = obj.get("aliases") or ()
        if isinstance(aliases, str):
            aliases = [a.strip() for a in aliases.split(",") if a.strip()]
        return Label(str(nm), description=str(obj.get("description") or ""), aliases=tuple(str(a) for a in aliases))
    if obj is None and name is not None:
        return Label(str(name))
    raise InputError(f"cannot read label entry {obj!r}; use a name or a mapping with name/description/aliases")


def parse_labels(spec: str) -> LabelSet:
    """Parse ``--labels``: a path to a labels file, or a comma-separated list of names."""
    path = Path(spec)
    if path.suffix.lower() in {".txt", ".yaml", ".yml", ".json"} or path.exists():
        if not path.exists():
            raise InputError(f"--labels: no such file {spec}")
        return load_labels_file(path)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise InputError("--labels is empty; give names separated by commas or a labels file")
    return LabelSet.from_names(names)


def load_labels_file(path: Path) -> LabelSet:
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix in {".yaml", ".yml", ".json"}:
        if suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
        if isinstance(data, dict) and "labels" in data:
            data = data["labels"]
        if isinstance(data, dict):
            return LabelSet(tuple(_label_from_obj(v, name=k) for k, v in data.items()))
        if isinstance(data, list):
            return LabelSet(tuple(_label_from_obj(v) for v in data))
        raise InputError(f"{path}: expected a list or mapping of labels")
    labels = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, desc = line.partition(":")
        labels.append(Label(name.strip(), description=desc.strip()))
    return LabelSet(tuple(labels))


def infer_labels(values: Iterable[str]) -> LabelSet:
    """The label set from a label column's non-empty values, sorted for a stable order."""
    names = sorted({v.strip() for v in values if v and v.strip()})
    if not names:
        raise InputError("the label column has no values; pass --labels")
    return LabelSet.from_names(names)
