"""The label set: names, optional descriptions and aliases, and normalisation of answers.

``--labels`` takes a comma-separated list (``"business,sport,tech"``) or a file:

* ``.txt``: one label per line, optionally ``name: description``;
* ``.yaml``/``.yml``/``.json``: a list of names, a list of ``{name, description, aliases}``
  mappings, or a mapping ``name -> description`` / ``name -> {description, aliases}``.

Aliases let a model's near-miss (``sci/tech``) map to the canonical label
(``science/technology``). Anything that still does not match is ``invalid``.

**Ordinal sets** (ratings such as 0-5): ``--ordinal``, ``ordinal: true`` at the top of a YAML/JSON
labels file, or a ``score`` on each entry. The labels keep the order given (lowest first) and each
has a numeric score: its ``score`` if given, else its name when every name is a number, else its
position (0, 1, ...). :meth:`LabelSet.expected_score` turns a distribution over the labels into a
score, so an answer's probabilities give more than its label.

**Multi-label sets** (``--multi-label``, or ``multi_label: true`` at the top of a YAML/JSON labels
file): each text gets zero or more labels. A cell holding several labels is a JSON list
(``["sport", "politics"]``) or ``;``-separated names (``sport;politics``): :func:`split_labels`
reads either. A run saves the set as ``{"multi_label": true, "labels": [...]}`` in its
``labels.json`` (:meth:`LabelSet.file_data`); a single-label set stays a plain list, as before.

**Label trees** (entries with nested ``children``, :mod:`promptclf.label_tree`): the set of the tree's
leaves, each named by its path (``sci/space``; its bare name is an alias when no other leaf has it),
with the tree kept in :attr:`LabelSet.tree`; :meth:`LabelSet.stage` gives one node's children as the
set one stage of hierarchical labelling shows. Saved as ``{"tree": true, "labels": [nested]}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .label_tree import LabelTree, is_tree_data


def _norm(text: str) -> str:
    """Case-, whitespace- and punctuation-insensitive key used for matching answers."""
    text = text.strip().strip("\"'`.").lower()
    return re.sub(r"[\s_\-]+", " ", text).strip()


@dataclass(frozen=True)
class Label:
    name: str
    description: str = ""
    aliases: tuple[str, ...] = ()
    score: float | None = None  # ordinal sets: the label's value on the scale


def _number(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if v == v and abs(v) != float("inf") else None


@dataclass(frozen=True)
class LabelSet:
    """An ordered set of labels. Order is kept everywhere (prompts, enum, reports)."""

    labels: tuple[Label, ...]
    ordinal: bool = False
    multi_label: bool = False  # each text gets zero or more labels
    tree: LabelTree | None = None  # a label tree: these labels are its leaves, named by path
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
        if any(lab.score is not None for lab in self.labels):
            object.__setattr__(self, "ordinal", True)
        if self.ordinal:
            self._check_scale()
        if self.tree is not None and (self.ordinal or self.multi_label):
            raise InputError(
                "a label tree gives each text one leaf: it cannot be ordinal or multi-label; drop --ordinal or "
                "--multi-label, or use a flat labels file"
            )
        if self.ordinal and self.multi_label:
            raise InputError(
                "a label set cannot be both ordinal and multi-label: a scale gives each text one grade; "
                "drop --ordinal or --multi-label"
            )

    def _check_scale(self) -> None:
        given = [lab.score for lab in self.labels]
        if any(v is not None for v in given) and any(v is None for v in given):
            missing = [lab.name for lab in self.labels if lab.score is None]
            raise InputError(f"ordinal labels: give every label a score or none (no score: {', '.join(missing)})")
        sc = self.scores
        if any(b <= a for a, b in zip(sc, sc[1:], strict=False)):
            order = ", ".join(f"{lab.name}={v:g}" for lab, v in zip(self.labels, sc, strict=True))
            raise InputError(f"ordinal labels must be listed lowest first with increasing scores; got {order}")

    @property
    def scores(self) -> list[float]:
        """Each label's value on the scale (ordinal sets; positions for any other)."""
        if self.labels[0].score is not None:
            return [float(lab.score or 0.0) for lab in self.labels]
        nums = [_number(lab.name) for lab in self.labels]
        if all(v is not None for v in nums):
            return [float(v or 0.0) for v in nums]
        return [float(i) for i in range(len(self.labels))]

    def score_of(self, name: str) -> float | None:
        """The scale value of label ``name`` (None for a name off the list)."""
        names = self.names
        return self.scores[names.index(name)] if name in names else None

    def expected_score(self, probs: dict[str, float] | None, label: str | None = None) -> float | None:
        """The mean score under ``probs`` (renormalised over the labels it covers), else ``label``'s score."""
        if probs:
            sc = dict(zip(self.names, self.scores, strict=True))
            mass = sum(p for n, p in probs.items() if n in sc)
            if mass > 0:
                return sum(p * sc[n] for n, p in probs.items() if n in sc) / mass
        return self.score_of(label) if label else None

    def nearest(self, score: float) -> str:
        """The label whose scale value is nearest ``score`` (ties go to the lower label)."""
        sc = self.scores
        return self.names[min(range(len(sc)), key=lambda i: (abs(sc[i] - score), i))]

    def as_ordinal(self) -> LabelSet:
        """This set as an ordinal scale (``--ordinal``): same labels, same order."""
        return self if self.ordinal else LabelSet(self.labels, ordinal=True)

    def as_multi_label(self) -> LabelSet:
        """This set for multi-label classification (``--multi-label``): same labels, same order."""
        return self if self.multi_label else LabelSet(self.labels, multi_label=True)

    def normalize_all(self, cell: object) -> tuple[list[str], list[str]]:
        """(canonical labels in label-set order, the names off the list) of a multi-label cell."""
        names = split_labels(cell)
        known = {n for n in (self.normalize(x) for x in names) if n is not None}
        unknown = [x for x in names if self.normalize(x) is None]
        return [n for n in self.names if n in known], unknown

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
        """The labels as mappings; an ordinal set gives each its ``score`` (which marks the set ordinal);
        a tree's set gives the tree's nested entries (which :meth:`from_dict` reads back as the tree)."""
        if self.tree is not None:
            return self.tree.to_dict()
        out: list[dict[str, object]] = []
        scores = self.scores if self.ordinal else [None] * len(self.labels)
        for lab, sc in zip(self.labels, scores, strict=True):
            d: dict[str, object] = {"name": lab.name, "description": lab.description, "aliases": list(lab.aliases)}
            if sc is not None:
                d["score"] = sc
            out.append(d)
        return out

    def file_data(self) -> list[dict[str, object]] | dict[str, object]:
        """What a run's ``labels.json`` holds: the labels (:meth:`to_dict`), wrapped with
        ``multi_label: true`` for a multi-label set (a single-label set stays a plain list)."""
        if self.tree is not None:
            return {"tree": True, "labels": self.to_dict()}
        return {"multi_label": True, "labels": self.to_dict()} if self.multi_label else self.to_dict()

    @classmethod
    def from_names(cls, names: Iterable[str], ordinal: bool = False, multi_label: bool = False) -> LabelSet:
        return cls(tuple(Label(str(n)) for n in names), ordinal=ordinal, multi_label=multi_label)

    @classmethod
    def from_dict(
        cls, items: Sequence[dict[str, object]], ordinal: bool = False, multi_label: bool = False
    ) -> LabelSet:
        if is_tree_data(items):
            return cls.from_tree(LabelTree.parse(items), ordinal=ordinal, multi_label=multi_label)
        return cls(tuple(_label_from_obj(it) for it in items), ordinal=ordinal, multi_label=multi_label)

    @classmethod
    def from_tree(cls, tree: LabelTree, ordinal: bool = False, multi_label: bool = False) -> LabelSet:
        """The set of ``tree``'s leaves named by path; a leaf's bare name (and its aliases) are aliases when
        no other leaf has them, so an answer or gold cell ``space`` means ``sci/space``. Every node's
        children are checked as a stage's set (two siblings an answer could not tell apart are an error)."""
        for path, node in [("", None), *tree.walk()]:
            if node is None or node.children:
                kids = tree.children(path)
                try:
                    cls(tuple(Label(k.name, k.description, k.aliases) for k in kids))
                except InputError as exc:
                    where = f"the children of {path!r}" if path else "the top level"
                    raise InputError(f"label tree, {where}: {exc}; rename one of them") from exc
        leaves = tree.leaves
        counts: dict[str, int] = {}
        for _, n in leaves:
            for key in {_norm(k) for k in (n.name, *n.aliases)}:
                counts[key] = counts.get(key, 0) + 1
        taken = {_norm(p) for p, _ in leaves}
        labels = []
        for path, n in leaves:
            bare = tuple(a for a in (n.name, *n.aliases) if counts[_norm(a)] == 1 and _norm(a) not in taken)
            labels.append(Label(path, n.description, tuple(dict.fromkeys(a for a in bare if a != path))))
        return cls(tuple(labels), ordinal=ordinal, multi_label=multi_label, tree=tree)

    def stage(self, parent: str = "") -> LabelSet:
        """The labels one stage of hierarchical labelling shows: the children of the tree node at
        ``parent`` (``""``: the top level), by their own names."""
        if self.tree is None:
            raise InputError("this label set is not a tree; hierarchical labelling needs a labels file with children")
        return LabelSet(tuple(Label(k.name, k.description, k.aliases) for k in self.tree.children(parent)))

    def ambiguous_hint(self, names: Iterable[str]) -> str:
        """For a tree: which of ``names`` (gold cells off the set) are bare names of several leaves, and their paths."""
        if self.tree is None:
            return ""
        hints = []
        for name in names:
            paths = [p for p, n in self.tree.leaves if _norm(name) in {_norm(a) for a in (n.name, *n.aliases)}]
            if len(paths) > 1:
                hints.append(f"{name!r} names several leaves ({', '.join(paths)}): write the path")
        return "; ".join(hints)


def split_labels(cell: object) -> list[str]:
    """The labels in one multi-label cell: a JSON list (``["a", "b"]``) or ``;``-separated names
    (``a;b``); an empty cell or ``[]`` is no label. Names are stripped, empties dropped."""
    items: list[str] | None = None
    if cell is None:
        return []
    if isinstance(cell, (list, tuple)):
        items = [str(x) for x in cell]
    else:
        text = str(getattr(cell, "value", cell)).strip()
        if text.lower() in ("", "nan", "none"):
            return []
        if text.startswith("["):
            try:
                data = json.loads(text)
            except ValueError:
                data = None
            if isinstance(data, list):
                items = [str(x) for x in data]
        if items is None:
            items = text.split(";")
    return [x.strip() for x in items if x.strip()]


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
        score = obj.get("score")
        if score is not None and (isinstance(score, bool) or _number(str(score)) is None):
            raise InputError(f"label {nm!r}: score {score!r} is not a number")
        return Label(
            str(nm),
            description=str(obj.get("description") or ""),
            aliases=tuple(str(a) for a in aliases),
            score=None if score is None else float(str(score)),
        )
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
        ordinal = multi = False
        if isinstance(data, dict) and "labels" in data:
            ordinal = bool(data.get("ordinal", False))
            multi = bool(data.get("multi_label", False))
            data = data["labels"]
        if isinstance(data, dict) and any(isinstance(v, dict) and "children" in v for v in data.values()):
            data = [{"name": k, **v} if isinstance(v, dict) else {"name": k, "description": v} for k, v in data.items()]
        if is_tree_data(data):
            return LabelSet.from_tree(LabelTree.parse(data), ordinal=ordinal, multi_label=multi)
        if isinstance(data, dict):
            entries = tuple(_label_from_obj(v, name=k) for k, v in data.items())
            return LabelSet(entries, ordinal=ordinal, multi_label=multi)
        if isinstance(data, list):
            return LabelSet(tuple(_label_from_obj(v) for v in data), ordinal=ordinal, multi_label=multi)
        raise InputError(f"{path}: expected a list or mapping of labels")
    labels = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, desc = line.partition(":")
        labels.append(Label(name.strip(), description=desc.strip()))
    return LabelSet(tuple(labels))


def infer_labels(values: Iterable[str], ordinal: bool = False, multi_label: bool = False) -> LabelSet:
    """The label set from a label column's non-empty values, sorted for a stable order.

    Ordinal: numeric names sort by value (``2`` before ``10``); other names cannot give an order, so
    a labels file must. Multi-label: every cell is split (:func:`split_labels`) into its labels.
    """
    if multi_label:
        names = sorted({x for v in values for x in split_labels(v)})
        if not names:
            raise InputError("the label column has no values; pass --labels")
        return LabelSet.from_names(names, multi_label=True)
    names = sorted({v.strip() for v in values if v and v.strip()})
    if not names:
        raise InputError("the label column has no values; pass --labels")
    if ordinal:
        nums = [_number(n) for n in names]
        if any(v is None for v in nums):
            raise InputError(
                "--ordinal: the label column's values are not all numbers, so their order is unknown; pass "
                "--labels with the labels lowest first (e.g. --labels 'poor,fair,good')"
            )
        names = sorted(names, key=lambda n: _number(n) or 0.0)
    return LabelSet.from_names(names, ordinal=ordinal)
