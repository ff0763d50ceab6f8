"""The simulated teacher on a label tree: its leaf decision told in the labels a stage's prompt shows.

The simulated teacher (:mod:`promptclf.testing.sim_teacher`) decides each text once, over the leaves
of its gold table (paths such as ``sci/space``). Hierarchical labelling shows it one node's children at
a time (``sci, rec`` and then ``space, med``); :func:`stage_answer` answers such a prompt from the same
decision: it finds the node whose children the prompt lists (in the tree the gold paths imply), gives
each shown child the mass of the leaves under it, renormalised over the shown children, and answers
the child its decided leaf lies under (the most probable shown child when the decided leaf is not
under that node, which a run can only reach through another teacher's earlier stage).

So with this teacher a text's hierarchical answer reaches the same leaf as its flat answer: accuracy
is equal both ways by construction, and only the tokens differ. A figure measured with it must say so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class TreeIndex:
    """The tree the teacher's leaf paths imply: each prefix's children, and the leaves under each path."""

    leaves: list[str]
    children: dict[str, set[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for leaf in self.leaves:
            parts = leaf.split("/")
            for d in range(len(parts)):
                self.children.setdefault("/".join(parts[:d]), set()).add(parts[d])

    def parent_of(self, shown: Sequence[str], hint: str) -> str | None:
        """The node whose children are ``shown`` (``hint``: the decided leaf, preferred on a tie)."""
        want = set(shown)
        best: tuple[int, int, str] | None = None
        for parent, kids in self.children.items():
            overlap = len(want & kids)
            if not overlap:
                continue
            under = int(hint.startswith(f"{parent}/") or not parent)
            cand = (overlap, under, parent)
            if best is None or cand[:2] > best[:2]:
                best = cand
        return best[2] if best else None


def stage_answer(
    label: str, probs: dict[str, float], shown: Sequence[str], index: TreeIndex
) -> tuple[str, dict[str, float]]:
    """(answer, distribution over ``shown``) for a prompt listing ``shown``, from a leaf decision
    (``label`` and its ``probs`` over the leaf paths); see the module docstring."""
    parent = index.parent_of(shown, label)
    if parent is None:
        return label, probs
    head = f"{parent}/" if parent else ""
    mass = {s: 0.0 for s in shown}
    for leaf, p in probs.items():
        if leaf.startswith(head):
            child = leaf[len(head) :].split("/", 1)[0]
            if child in mass:
                mass[child] += p
    total = sum(mass.values())
    dist = {s: (m / total if total > 0 else 1.0 / len(shown)) for s, m in mass.items()}
    chosen = label[len(head) :].split("/", 1)[0] if label.startswith(head) else ""
    if chosen not in dist:
        chosen = max(dist, key=lambda s: dist[s])
    return chosen, dist
