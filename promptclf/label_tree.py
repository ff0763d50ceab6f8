"""Label trees: a labels file whose entries nest ``children``, read into a :class:`LabelTree`.

A labels YAML (or JSON) file is a tree when any entry has ``children``::

    - name: sci
      description: science and technology
      children:
        - name: space
          description: astronomy and spaceflight
        - name: med
    - name: rec
      children:
        - name: autos
        - name: sport

(or the same list under ``labels:``, as a run's ``labels.json`` saves it). Every node has a name and
may have a ``description`` and ``aliases``; a node without ``children`` is a leaf, so leaves may sit at
different depths. A leaf is addressed by its **path**, the names from the top joined with ``/``
(``sci/space``): the path is what ``pred_label`` holds and what gold cells give.

This module holds the tree alone (no label set): :meth:`promptclf.labels.LabelSet.from_tree` turns a
tree into the label set of its leaves (flat labelling, students, ``eval``) and each node's children
into the label set of one stage (:meth:`~promptclf.labels.LabelSet.stage`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from .errors import InputError

SEP = "/"  # joins a path's names (sci/space)


@dataclass(frozen=True)
class TreeNode:
    """One node of a label tree: a leaf when it has no children."""

    name: str
    description: str = ""
    aliases: tuple[str, ...] = ()
    children: tuple[TreeNode, ...] = ()

    @property
    def is_leaf(self) -> bool:
        return not self.children


def _node(obj: object, parent: str) -> TreeNode:
    """One node (and its subtree) from a YAML/JSON entry; ``parent`` is its parent's path, for errors."""
    where = f"under {parent!r}" if parent else "at the top"
    if isinstance(obj, str):
        obj = {"name": obj}
    if not isinstance(obj, Mapping):
        raise InputError(f"label tree: cannot read entry {obj!r} {where}; use a name or a mapping with name/children")
    name = str(obj.get("name") or "").strip()
    if not name:
        raise InputError(f"label tree: an entry {where} has no 'name': {dict(obj)!r}")
    path = f"{parent}{SEP}{name}" if parent else name
    if SEP in name:
        raise InputError(
            f"label tree: the name {name!r} {where} contains {SEP!r}, which joins a path's names; rename it "
            f"(e.g. {name.replace(SEP, '-')!r})"
        )
    aliases = obj.get("aliases") or ()
    if isinstance(aliases, str):
        aliases = [a.strip() for a in aliases.split(",") if a.strip()]
    kids = obj.get("children")
    if kids is not None and not isinstance(kids, list):
        raise InputError(f"label tree: {path!r} has 'children' that is not a list; give a list of entries")
    if kids is not None and not kids:
        raise InputError(
            f"label tree: {path!r} has an empty children list; give it children, or drop 'children:' to make it a leaf"
        )
    children = tuple(_node(k, path) for k in kids or ())
    return TreeNode(name, str(obj.get("description") or ""), tuple(str(a) for a in aliases), children)


@dataclass(frozen=True)
class LabelTree:
    """A label tree: the top-level nodes, in file order (order is kept in every prompt)."""

    roots: tuple[TreeNode, ...]

    def __post_init__(self) -> None:
        if not self.roots:
            raise InputError("the label tree is empty; give at least two top-level labels")
        seen: dict[str, str] = {}
        for path, _ in self.walk():
            key = path.lower()
            if key in seen:
                kind = "leaf" if self.node(path).is_leaf else "node"
                raise InputError(
                    f"label tree: duplicate {kind} {path!r} (also {seen[key]!r}); two siblings share a name, so an "
                    "answer could not tell them apart: rename one or merge their children"
                )
            seen[key] = path

    @classmethod
    def parse(cls, entries: Sequence[object]) -> LabelTree:
        """A tree from a labels file's list of entries (each a name or a mapping with ``children``)."""
        return cls(tuple(_node(e, "") for e in entries))

    def walk(self) -> list[tuple[str, TreeNode]]:
        """Every (path, node), parents before their children, in file order."""
        out: list[tuple[str, TreeNode]] = []

        def visit(nodes: tuple[TreeNode, ...], parent: str) -> None:
            for n in nodes:
                path = f"{parent}{SEP}{n.name}" if parent else n.name
                out.append((path, n))
                visit(n.children, path)

        visit(self.roots, "")
        return out

    @cached_property
    def _nodes(self) -> dict[str, TreeNode]:
        return dict(self.walk())

    def node(self, path: str) -> TreeNode:
        """The node at ``path`` (a :class:`KeyError` naming it when there is none)."""
        return self._nodes[path]

    def children(self, path: str = "") -> tuple[TreeNode, ...]:
        """The children of the node at ``path`` (``""``: the top level)."""
        return self.roots if not path else self.node(path).children

    @property
    def leaves(self) -> list[tuple[str, TreeNode]]:
        """Every leaf as (path, node), in file order."""
        return [(p, n) for p, n in self.walk() if n.is_leaf]

    @property
    def depth(self) -> int:
        """The number of levels (1: a flat list)."""
        return max(len(split_path(p)) for p, _ in self.leaves)

    def to_dict(self) -> list[dict[str, object]]:
        """The tree as the nested entries a labels file holds (and a run's ``labels.json`` saves)."""

        def one(n: TreeNode) -> dict[str, object]:
            d: dict[str, object] = {"name": n.name, "description": n.description, "aliases": list(n.aliases)}
            if n.children:
                d["children"] = [one(c) for c in n.children]
            return d

        return [one(n) for n in self.roots]


def split_path(path: str) -> list[str]:
    """A path's names, top first (``"sci/space"`` → ``["sci", "space"]``)."""
    return [p for p in str(path).split(SEP) if p]


def at_level(path: str, level: int) -> str:
    """The path cut to its first ``level`` names (the whole path when it is shorter: a leaf higher up)."""
    return SEP.join(split_path(path)[:level])


def is_tree_data(entries: object) -> bool:
    """Whether a labels file's entries nest children (a tree) rather than list flat labels."""
    return isinstance(entries, list) and any(isinstance(e, Mapping) and "children" in e for e in entries)
