"""Large inputs in chunks and Hugging Face datasets in and out.

* ``iter_table`` / ``count_rows`` / ``TableWriter``: chunked reading and writing give exactly
  what whole-table reading and writing give, in every format.
* Hugging Face datasets as input: a ``save_to_disk`` folder (DatasetDict: needs a split, or its
  only one), an ``.arrow`` file, a dataset name loaded offline from the datasets cache; ClassLabel
  columns read as label names. Output: ``label --save-dataset`` writes a dataset whose
  ``pred_label`` is a ClassLabel over the label set.
* ``label`` in chunks (the real SmolLM2 scoring in-process): the same output and run.json figures
  as one chunk; the rows used as shots are written with status ``shot``.

Memory is not tested here (timing-free): ``bench/bench_million.py`` measures it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from promptclf.cli import main  # noqa: E402
from promptclf.data.tables import count_rows, iter_table, read_table, write_table  # noqa: E402
from promptclf.data.writers import TableWriter  # noqa: E402
from promptclf.errors import InputError  # noqa: E402

datasets = pytest.importorskip("datasets")

FRAME = pd.DataFrame(
    {
        "id": [f"r{i}" for i in range(11)],
        "text": [f"text {i}, with a comma" if i != 4 else 'multi\nline "quoted"' for i in range(11)],
        "label": ["a", "b", "", "a", "b", "a", "", "b", "a", "b", "a"],
    }
)


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".jsonl", ".parquet", ".arrow", ".xlsx"])
def test_chunked_read_and_write_equal_whole(tmp_path: Path, ext: str) -> None:
    src = write_table(FRAME, tmp_path / f"in{ext}")
    whole = read_table(src)
    chunks = list(iter_table(src, chunk_rows=3))
    assert [len(c) for c in chunks][:3] == [3, 3, 3] and sum(len(c) for c in chunks) == len(FRAME)
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), whole)
    assert count_rows(src) == len(FRAME)
    with TableWriter(tmp_path / f"out{ext}") as w:
        for c in chunks:
            w.write(c)
    pd.testing.assert_frame_equal(read_table(tmp_path / f"out{ext}"), whole)


def test_parquet_is_read_by_row_groups(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    big = pd.concat([FRAME] * 10, ignore_index=True)
    pq.write_table(pa.Table.from_pandas(big, preserve_index=False), tmp_path / "g.parquet", row_group_size=20)
    assert pq.ParquetFile(tmp_path / "g.parquet").metadata.num_row_groups == 6
    chunks = list(iter_table(tmp_path / "g.parquet", chunk_rows=1000))
    assert [len(c) for c in chunks] == [20, 20, 20, 20, 20, 10]  # never more than one row group in memory
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), big)


def test_csv_writer_leaves_whole_chunks_on_disk_before_close(tmp_path: Path) -> None:
    w = TableWriter(tmp_path / "part.csv")
    w.write(FRAME.iloc[:4])
    w.write(FRAME.iloc[4:8])
    # Not closed (a killed run): what is on disk is every row written so far, whole.
    back = pd.read_csv(tmp_path / "part.csv", dtype=str, keep_default_na=False)
    assert list(back["id"]) == list(FRAME["id"][:8]) and back["text"][4] == FRAME["text"][4]
    w.close()


# --- Hugging Face datasets ---------------------------------------------------------------------


def _dataset_dict() -> object:
    feats = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    train = datasets.Dataset.from_dict({"text": ["bad film", "great film", "dull"], "label": [0, 1, 0]}, features=feats)
    test = datasets.Dataset.from_dict({"text": ["loved it", "no label"], "label": [1, -1]}, features=feats)
    return datasets.DatasetDict({"train": train, "test": test})


def test_save_to_disk_folder_needs_a_split_and_decodes_class_labels(tmp_path: Path) -> None:
    dd = _dataset_dict()
    dd.save_to_disk(str(tmp_path / "dd"))  # type: ignore[attr-defined]
    with pytest.raises(InputError, match=r"has splits train, test: pass --split"):
        read_table(tmp_path / "dd")
    with pytest.raises(InputError, match=r"no split 'dev'; its splits are train, test"):
        read_table(tmp_path / "dd", split="dev")
    test = read_table(tmp_path / "dd", split="test")
    assert test.to_dict("list") == {"text": ["loved it", "no label"], "label": ["pos", ""]}
    assert count_rows(tmp_path / "dd", split="train") == 3
    assert [len(c) for c in iter_table(tmp_path / "dd", chunk_rows=2, split="train")] == [2, 1]
    # One split saved alone: no --split needed, and --split is refused with the fix.
    dd["train"].save_to_disk(str(tmp_path / "train"))  # type: ignore[index]
    assert read_table(tmp_path / "train")["label"].tolist() == ["neg", "pos", "neg"]
    with pytest.raises(InputError, match="drop --split"):
        read_table(tmp_path / "train", split="train")
    # The .arrow file inside a saved folder is read without datasets' help, ClassLabel names too.
    arrow = next((tmp_path / "train").glob("*.arrow"))
    pd.testing.assert_frame_equal(read_table(arrow), read_table(tmp_path / "train"))


def test_folder_that_is_not_a_dataset_and_a_missing_name(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="not one written by datasets' save_to_disk"):
        read_table(tmp_path / "plain")
    with pytest.raises(InputError, match="no such file or folder, and no Hugging Face dataset"):
        read_table("promptclf-test/no-such-dataset")
    with pytest.raises(InputError, match="no such file"):
        read_table(tmp_path / "missing.csv")


def _cache_as_hub_dataset(cache: Path, repo: str, dd: object, work: Path) -> None:
    """Lay out ``dd`` in the datasets cache the way a download of ``repo`` from the hub leaves it
    (``<namespace>___<name>/<config>/<version>/<revision>/``), so it loads by name offline."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    files = {}
    for split, ds in dd.items():  # type: ignore[attr-defined]
        files[split] = [str(work / f"{split}.parquet")]
        ds.to_parquet(files[split][0])
    name = repo.split("/")[-1]
    builder = Parquet(cache_dir=str(work / "build"), dataset_name=name, data_files=files)
    builder.download_and_prepare()
    target = cache / repo.replace("/", "___") / "default" / "0.0.0" / "0123456789abcdef"
    target.parent.mkdir(parents=True)
    shutil.copytree(builder.cache_dir, target)


def test_dataset_name_loads_offline_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "hf-cache"
    _cache_as_hub_dataset(cache, "promptclf-test/reviews", _dataset_dict(), tmp_path)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    assert datasets.config.HF_HUB_OFFLINE  # the hub is never asked
    with pytest.raises(InputError, match="has splits train, test: pass --split"):
        read_table("promptclf-test/reviews")
    train = read_table("promptclf-test/reviews", split="train")
    assert train.to_dict("list") == {"text": ["bad film", "great film", "dull"], "label": ["neg", "pos", "neg"]}


# --- label in chunks, with the real SmolLM2 scoring in-process ------------------------------------

TEXTS = [
    "Shares fell after the bank warned on profits",
    "The striker scored twice in the cup final",
    "Parliament voted on the new budget law",
    "The band released a new album this week",
    "Oil prices rose as markets opened",
    "The coach praised his team after the win",
    "",
    "Ministers met to discuss the election",
    "The film won three awards at the festival",
]
GOLD = ["business", "sport", "politics", "entertainment", "business", "sport", "sport", "", "entertainment"]


@pytest.fixture(scope="module")
def news_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stream") / "news.csv"
    pd.DataFrame({"id": [f"n{i}" for i in range(len(TEXTS))], "text": TEXTS, "label": GOLD}).to_csv(path, index=False)
    return path


def _label(src: Path | str, out: Path, *extra: str) -> tuple[pd.DataFrame, dict]:
    res = CliRunner().invoke(
        main,
        ["label", str(src), "-o", str(out), "--provider", "local", "--batch-size", "2", "--shots", "1",
         "--labels", "business,entertainment,politics,sport", "-q", *extra],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    run = json.loads((out.with_name(out.stem + ".run") / "run.json").read_text())
    return read_table(out), run


def test_label_in_chunks_equals_one_chunk_and_saves_a_dataset(news_csv: Path, tmp_path: Path) -> None:
    whole, run1 = _label(news_csv, tmp_path / "whole.csv")
    parts, run3 = _label(news_csv, tmp_path / "parts.csv", "--chunk-rows", "3", "--save-dataset", str(tmp_path / "ds"))
    assert list(parts["id"]) == list(whole["id"]) == [f"n{i}" for i in range(len(TEXTS))]
    assert (parts["pred_status"] == "shot").sum() == 4  # one per class, chosen from the whole file
    assert parts.loc[6, "pred_status"] == "error"  # the empty text
    cols = ["pred_label", "pred_status", "pred_reason"]
    pd.testing.assert_frame_equal(parts[cols], whole[cols])
    diff = pd.to_numeric(parts["pred_prob"]) - pd.to_numeric(whole["pred_prob"])
    assert diff.abs().max() < 1e-4  # the batches differ at chunk edges (padding), not the scores
    for key in ("statuses", "n_rows", "n_items", "n_shots", "labels"):
        assert run3[key] == run1[key], key
    assert run3["metrics"]["accuracy"] == run1["metrics"]["accuracy"]
    assert run3["metrics"]["n_scored"] == run1["metrics"]["n_scored"] == 4  # gold rows that are not shots
    # --save-dataset: the same rows, pred_label a ClassLabel over the label set ('' -> -1).
    ds = datasets.load_from_disk(str(tmp_path / "ds"))
    assert ds.features["pred_label"].names == ["business", "entertainment", "politics", "sport"]
    assert ds.num_rows == len(TEXTS) and ds["id"] == list(parts["id"])
    names = ds.features["pred_label"].names
    assert [names[v] if v >= 0 else "" for v in ds["pred_label"]] == parts["pred_label"].fillna("").tolist()
    assert run3["dataset"] == str((tmp_path / "ds").resolve())


def test_label_reads_a_saved_dataset_folder(news_csv: Path, tmp_path: Path) -> None:
    df = pd.read_csv(news_csv, dtype=str, keep_default_na=False)
    feats = datasets.Features(
        {
            "id": datasets.Value("string"),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["business", "entertainment", "politics", "sport"]),
        }
    )
    codes = [feats["label"].names.index(g) if g else -1 for g in df["label"]]
    ds = datasets.Dataset.from_dict(
        {"id": df["id"].tolist(), "text": df["text"].tolist(), "label": codes}, features=feats
    )
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "news_ds"))
    from_ds, run = _label(tmp_path / "news_ds", tmp_path / "from_ds.csv")
    from_csv, _ = _label(news_csv, tmp_path / "from_csv.csv")
    pd.testing.assert_frame_equal(
        from_ds[["id", "label", "pred_label", "pred_status"]], from_csv[["id", "label", "pred_label", "pred_status"]]
    )
    assert run["input"] == str(tmp_path / "news_ds") and run["split"] is None


# --- predict in chunks, with a real (briefly trained) MiniLM student --------------------------------


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("peft")
    from promptclf.data.tables import bbc_sample
    from promptclf.distill.options import DistillOptions
    from promptclf.distill.run import distill

    work = tmp_path_factory.mktemp("student")
    df = bbc_sample(40, seed=2)[["text", "label"]]
    df["text"] = df["text"].str.slice(0, 200)
    df["pred_label"], df["pred_status"] = df["label"], "ok"
    data = write_table(df, work / "teacher.csv")
    opts = DistillOptions.build(recipe="minilm-lora", max_steps=2, max_length=32, test_fraction=0.2, patience=0)
    distill(data, work / "student", opts)
    return work / "student"


def test_predict_in_chunks_equals_one_pass(student: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from promptclf.data.tables import bbc_sample
    from promptclf.predict.file import predict_file
    from promptclf.predict.student import Student

    df = bbc_sample(23, seed=9)[["id", "text"]]
    df["text"] = df["text"].str.slice(0, 150)
    csv = write_table(df, tmp_path / "in.csv")
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "in.parquet", row_group_size=4)
    one = predict_file(student, csv, tmp_path / "one.csv", chunk_rows=10**6, progress=False, class_probs=True)
    assert one["rows"] == 23
    whole = read_table(tmp_path / "one.csv")
    direct = Student.load(student).predict(df["text"].tolist())
    assert whole["pred_label"].tolist() == [lab for lab, _ in direct]
    for src, out, rows in ((csv, "csv5.csv", 5), (tmp_path / "in.parquet", "pq.jsonl", 1000)):
        res = predict_file(student, src, tmp_path / out, chunk_rows=rows, progress=False, class_probs=True)
        got = read_table(tmp_path / out)
        assert res["rows"] == 23 and got["id"].tolist() == df["id"].tolist()
        assert got["pred_label"].tolist() == whole["pred_label"].tolist(), out
        probs = ["pred_prob", *[c for c in got.columns if c.startswith("prob_")]]
        assert len(probs) == 1 + len(Student.load(student).labels)
        gap = (got[probs].astype(float) - whole[probs].astype(float)).abs().to_numpy().max()
        assert gap < 1e-4, (out, gap)  # other batches, other padding: the same scores


def test_predict_refuses_to_overwrite_its_input(student: Path, tmp_path: Path) -> None:
    from promptclf.predict.file import predict_file

    src = write_table(FRAME, tmp_path / "in.csv")
    with pytest.raises(InputError, match="is the input file"):
        predict_file(student, src, src, progress=False)
