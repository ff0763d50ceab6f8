"""The real label sets built from data shipped in PyPI packages (promptclf.data.taxonomies)."""

from __future__ import annotations

import importlib.util

import pytest
import yaml

from promptclf.data import taxonomies as tx
from promptclf.errors import InputError

needs_icd = pytest.mark.skipif(
    importlib.util.find_spec("simple_icd_10_cm") is None,
    reason="needs the simple-icd-10-cm package (in the dev extra): pip install 'simple-icd-10-cm==1.5.0'",
)


@needs_icd
def test_icd10cm_tree_shape_and_determinism() -> None:
    df = tx.icd10cm(per_leaf=20)
    assert list(df.columns) == ["id", "text", "label"]
    assert df["id"].is_unique and df["text"].is_unique
    assert (df["text"].str.strip() != "").all()
    parts = df["label"].str.split("/")
    assert (parts.str.len() == 2).all()  # chapter/block
    assert parts.str[1].nunique() >= 250 and parts.str[0].nunique() >= 20
    assert df["label"].value_counts().max() <= 20 and df["label"].value_counts().min() >= 10
    # a block belongs to one chapter, and no chapter shares a name with a block
    assert (df.groupby(parts.str[1])["label"].nunique() == 1).all()
    assert not set(parts.str[0]) & set(parts.str[1])
    assert df.equals(tx.icd10cm(per_leaf=20))
    assert not df.equals(tx.icd10cm(per_leaf=20, seed=1))
    assert tx.icd10cm(per_leaf=20, seed=1).sort_values("id")["id"].tolist() != df.sort_values("id")["id"].tolist()


@needs_icd
def test_icd10cm_flat_sample_chapters_and_yaml() -> None:
    small = tx.icd10cm(n=300, per_leaf=30, path=False, chapters=["A00-B99", "C00-D49"])
    assert len(small) == 300 and "/" not in "".join(small["label"])
    full = tx.icd10cm()
    assert len(full) > 40_000 and full["id"].is_unique
    row = full[full["id"] == "A01.01"].iloc[0]
    assert row["text"] == "Typhoid meningitis" and row["label"] == "A00-B99/A00-A09"
    tree = yaml.safe_load(tx.icd10cm_tree_yaml(full))
    leaves = {f"{c['name']}/{k['name']}" for c in tree for k in c["children"]}
    assert leaves == set(full["label"])
    assert tree[0]["description"] == "Certain infectious and parasitic diseases"
    flat = yaml.safe_load(tx.icd10cm_labels_yaml(small))
    assert {d["name"] for d in flat} == set(small["label"]) and all(d["description"] for d in flat)
    with pytest.raises(InputError, match="unknown chapter"):
        tx.icd10cm(chapters=["Z99-Z99"])
