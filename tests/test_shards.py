"""The parts of ``predict --engine ray`` that need no cluster: shard discovery and naming, the atomic
shard writer and its stamp, the skip-done check, the tally of predictions that come back in any order,
and the reader that turns a corrupt shard into one message. Fast tier: no Ray, no model."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from promptclf.data.writers import TableWriter
from promptclf.errors import InputError
from promptclf.predict.ray_worker import read_shards
from promptclf.predict.shard_output import ShardTally, write_shard
from promptclf.predict.shards import (
    STAMP_KEY,
    Shard,
    ShardStamp,
    check_done,
    clean_temporaries,
    discover_shards,
    fingerprint,
    output_path,
    plan_outputs,
    read_stamp,
)

LABELS = ["neg", "pos"]


def _frame(n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {"id": [f"r{start + i}" for i in range(n)], "text": [f"text number {start + i}" for i in range(n)]}
    )


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    _frame(5, 0).to_parquet(root / "a.parquet", index=False)
    _frame(4, 5).to_csv(root / "b.csv", index=False)
    _frame(3, 9).to_json(root / "sub" / "c.jsonl", orient="records", lines=True)
    (root / "README.md").write_text("not a table")
    (root / "_SUCCESS").write_text("")
    (root / ".a.parquet.tmp").write_bytes(b"half")
    return root


def test_folder_shards_in_stable_order_hidden_and_marker_files_skipped(
    corpus: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="promptclf"):
        shards = discover_shards(corpus)
    assert [s.name for s in shards] == ["a.parquet", "b.csv", "sub/c.jsonl"]
    assert [s.index for s in shards] == [0, 1, 2]
    assert "README.md" in caplog.text  # a file that is not read is named, never silently dropped


def test_single_file_is_one_shard(corpus: Path) -> None:
    [shard] = discover_shards(corpus / "b.csv")
    assert shard.name == "b.csv" and shard.path == corpus / "b.csv"
    with pytest.raises(InputError, match="drop --split"):
        discover_shards(corpus / "b.csv", split="train")


def test_bad_sources_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no shards found"):
        discover_shards(tmp_path)
    (tmp_path / "x.xlsx").write_bytes(b"x")
    with pytest.raises(InputError, match="no chunked reader"):
        discover_shards(tmp_path / "x.xlsx")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "e.csv").write_bytes(b"")
    with pytest.raises(InputError, match="empty shard"):
        discover_shards(tmp_path / "empty")


def test_saved_dataset_folder_is_its_arrow_files(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_pandas(_frame(30)).cast_column("id", datasets.Value("string"))
    ds.save_to_disk(str(tmp_path / "ds"), num_shards=3)
    shards = discover_shards(tmp_path / "ds")
    assert len(shards) == 3 and all(s.path.suffix == ".arrow" for s in shards)
    # Read back shard by shard, in order, they are the dataset's rows.
    rows = []
    for s in shards:
        for batch in read_shards({"shard": np.array([s.index])}, {s.index: str(s.path)}, "text", 8):
            rows.extend(t for t in batch["_text"].tolist() if t)
    assert rows == _frame(30)["text"].tolist()
    dd = datasets.DatasetDict({"train": ds, "test": ds.select(range(4))})
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(InputError, match="--split"):
        discover_shards(tmp_path / "dd")
    assert len(discover_shards(tmp_path / "dd", split="test")) == 1


def test_outputs_one_per_shard_and_refusals(corpus: Path, tmp_path: Path) -> None:
    shards = discover_shards(corpus)
    targets = plan_outputs(shards, tmp_path / "out", corpus)
    assert [targets[s.index].relative_to(tmp_path / "out").as_posix() for s in shards] == [
        "a.parquet",
        "b.parquet",
        "sub/c.parquet",
    ]
    with pytest.raises(InputError, match="inside the input folder"):
        plan_outputs(shards, corpus / "pred", corpus)
    _frame(2).to_csv(corpus / "a.csv", index=False)
    with pytest.raises(InputError, match=r"a.csv and a.parquet|a.parquet and a.csv"):
        plan_outputs(discover_shards(corpus), tmp_path / "out2", corpus)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InputError, match="pass a folder"):
        plan_outputs(shards, tmp_path / "file.txt", corpus)


def test_tally_takes_rows_in_any_order_and_counts_repeats_once() -> None:
    t = ShardTally(n_labels=2, class_probs=True)
    p = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    assert t.add(np.array([3, 1]), np.array([0, 1]), np.array([0.9, 0.8]), p) == 2
    assert t.add(np.array([1, 0]), np.array([1, 0]), np.array([0.8, 0.7]), p) == 1  # row 1 again: a retried batch
    assert not t.complete
    t.finish(4)
    assert not t.complete  # row 2 is missing
    t.add(np.array([2]), np.array([1]), np.array([0.6]), p[:1])
    assert t.complete and t.filled == 4
    a = t.arrays()
    assert a["label"].tolist() == [0, 1, 1, 0] and a["probs"].shape == (4, 2)
    beyond = ShardTally(2)
    beyond.add(np.array([0, 5]), np.array([0, 0]), np.array([0.5, 0.5]))
    beyond.finish(2)
    assert not beyond.complete  # a row the reader never read: something is wrong, never written


def _write(src: Path, out: Path, stamp: ShardStamp, n: int, probs: bool = False) -> int:
    label = np.arange(n) % 2
    return write_shard(
        src, out, stamp, LABELS, label, np.full(n, 0.75, dtype=np.float32),
        np.tile([0.25, 0.75], (n, 1)).astype(np.float32) if probs else None, chunk_rows=2,
    )  # fmt: skip


def test_write_shard_keeps_every_row_in_order_with_its_prediction(corpus: Path, tmp_path: Path) -> None:
    [shard] = discover_shards(corpus / "b.csv")
    stamp = ShardStamp(source=shard.name, source_bytes=shard.size, rows=4, student="fp1")
    out = tmp_path / "out" / "b.parquet"
    assert _write(shard.path, out, stamp, 4, probs=True) == 4
    df = pd.read_parquet(out)
    assert df["id"].tolist() == ["r5", "r6", "r7", "r8"]
    assert df["pred_label"].tolist() == ["neg", "pos", "neg", "pos"]
    assert df["prob_pos"].tolist() == [0.75] * 4 and df["pred_prob"].tolist() == [0.75] * 4
    assert read_stamp(out) == (stamp, 4)
    assert pq.ParquetFile(out).num_row_groups == 2  # written chunk by chunk
    assert not list(out.parent.glob(".*"))  # no temporary file left


def test_write_shard_refuses_a_source_that_changed_and_writes_nothing(corpus: Path, tmp_path: Path) -> None:
    [shard] = discover_shards(corpus / "b.csv")
    out = tmp_path / "b.parquet"
    stamp = ShardStamp(source=shard.name, source_bytes=shard.size, rows=3, student="fp1")
    with pytest.raises(InputError, match="b.csv: has more rows"):
        _write(shard.path, out, stamp, 3)
    with pytest.raises(InputError, match="b.csv: has 4 rows now, 6"):
        _write(shard.path, out, stamp, 6)
    assert not out.exists() and not list(tmp_path.glob(".*"))


def test_check_done_reads_the_footer(corpus: Path, tmp_path: Path) -> None:
    [shard] = discover_shards(corpus / "a.parquet")
    out = output_path(tmp_path, shard)
    assert check_done(out, shard, "fp1") == (False, "")
    stamp = ShardStamp(source=shard.name, source_bytes=shard.size, rows=5, student="fp1")
    _write(shard.path, out, stamp, 5)
    assert check_done(out, shard, "fp1") == (True, "")
    assert check_done(out, shard, "fp2")[1] == "written by another student or with other options"
    other = Shard(0, shard.path, "other.parquet")
    assert "another input shard" in check_done(out, other, "fp1")[1]
    # The input changed since it was predicted.
    _frame(6).to_parquet(corpus / "a.parquet", index=False)
    assert "the input changed" in check_done(out, discover_shards(corpus / "a.parquet")[0], "fp1")[1]
    # A cut file (what a non-atomic copy could leave) and a foreign Parquet file are redone, not trusted.
    [shard] = discover_shards(corpus / "a.parquet")
    _write(shard.path, out, ShardStamp(source=shard.name, source_bytes=shard.size, rows=6, student="fp1"), 6)
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    assert "not a whole Parquet file" in check_done(out, shard, "fp1")[1]
    _frame(6).to_parquet(out, index=False)
    assert "no stamp" in check_done(out, shard, "fp1")[1]
    # A stamp that promises more rows than the footer holds.
    seven = ShardStamp(source=shard.name, source_bytes=shard.size, rows=7, student="fp1")
    w = TableWriter(out, metadata={STAMP_KEY: seven.model_dump_json()})
    w.write(_frame(6))
    w.close()
    assert "incomplete (6 of 7 rows)" in check_done(out, shard, "fp1")[1]


def test_temporaries_of_a_killed_run_are_cleaned(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in (".a.parquet.tmp", "sub/.b.parquet.tmp"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "keep.parquet").write_bytes(b"x")
    assert clean_temporaries(tmp_path) == 2
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["keep.parquet"]


def test_table_writer_abort_leaves_no_output(tmp_path: Path) -> None:
    out = tmp_path / "x.parquet"
    w = TableWriter(out)
    w.write(_frame(3))
    w.abort()
    assert not out.exists() and not list(tmp_path.iterdir())


def test_fingerprint_changes_with_weights_and_options(tmp_path: Path) -> None:
    (tmp_path / "student.json").write_text(json.dumps({"labels": LABELS}))
    (tmp_path / "adapter_model.safetensors").write_bytes(b"w" * 10)
    (tmp_path / "run.json").write_text("{}")
    a = fingerprint(tmp_path, {"dtype": "float32"})
    (tmp_path / "run.json").write_text('{"rewritten": true}')  # the run record is not the model
    assert fingerprint(tmp_path, {"dtype": "float32"}) == a
    assert fingerprint(tmp_path, {"dtype": "int8"}) != a
    (tmp_path / "adapter_model.safetensors").write_bytes(b"w" * 11)
    assert fingerprint(tmp_path, {"dtype": "float32"}) != a


def test_reader_sends_rows_then_a_marker_and_a_corrupt_shard_as_one_message(corpus: Path) -> None:
    (corpus / "bad.parquet").write_bytes(b"PAR1 not really parquet")
    paths = {0: str(corpus / "a.parquet"), 1: str(corpus / "bad.parquet"), 2: str(corpus / "b.csv")}
    out = list(read_shards({"shard": np.array([0, 1, 2])}, paths, "text", 2))
    shard = np.concatenate([b["_shard"] for b in out])
    row = np.concatenate([b["_row"] for b in out])
    err = np.concatenate([b["_error"] for b in out])
    n = np.concatenate([b["_n"] for b in out])
    assert row[shard == 0].tolist() == [0, 1, 2, 3, 4, -1] and n[(shard == 0) & (row < 0)].tolist() == [5]
    assert row[shard == 2].tolist() == [0, 1, 2, 3, -1]
    [msg] = err[shard == 1].tolist()
    assert "bad.parquet" in msg and "parquet" in msg.lower()
    assert list(read_shards({"shard": np.array([0])}, paths, "body", 2))[-1]["_error"][0].startswith(
        "a.parquet: no column 'body'"
    )


def test_cli_engine_flags_belong_to_ray(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from promptclf.cli import main

    (tmp_path / "student").mkdir()
    _frame(2).to_csv(tmp_path / "in.csv", index=False)
    res = CliRunner().invoke(
        main,
        [
            "predict",
            str(tmp_path / "student"),
            str(tmp_path / "in.csv"),
            "-o",
            str(tmp_path / "o.csv"),
            "--workers",
            "2",
        ],
    )
    assert res.exit_code == 2 and "--engine ray" in res.output


def test_rerun_with_every_shard_done_skips_all_without_a_cluster(corpus: Path, tmp_path: Path) -> None:
    from promptclf.predict import ray_engine

    student = tmp_path / "student"
    student.mkdir()
    (student / "student.json").write_text(json.dumps({"labels": LABELS}))
    (student / "options.json").write_text(json.dumps({"text_col": "text"}))
    out = tmp_path / "out"
    shards = discover_shards(corpus)
    fp = fingerprint(student, {"dtype": "float32", "merge": False, "class_probs": False, "text_col": "text"})
    for s, n in zip(shards, (5, 4, 3), strict=True):
        _write(s.path, output_path(out, s), ShardStamp(source=s.name, source_bytes=s.size, rows=n, student=fp), n)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    run = ray_engine.predict_shards(student, corpus, out, progress=False)
    assert [s.status for s in run.shards] == ["skipped"] * 3 and run.rows == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")} == mtimes
    assert json.loads((out / "_promptclf_predict.json").read_text())["shards"][0]["status"] == "skipped"
    os.utime(corpus / "b.csv")  # touching an input is no change: size and rows still match
    assert ray_engine.predict_shards(student, corpus, out, progress=False).rows == 0
