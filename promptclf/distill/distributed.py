"""Several processes (``torchrun``): who is rank 0, and the few collectives distillation needs.

``torchrun --nproc_per_node N -m promptclf distill ...`` starts N copies of the command with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in the environment. Every
copy prepares the same data and trains one replica (the HF Trainer wraps the model in DDP);
only rank 0 writes the run folder and prints. Without those variables everything here is a
no-op, so single-process code calls these helpers unconditionally.

The process group is gloo on CPU and NCCL on CUDA (each rank on GPU ``LOCAL_RANK``). torch is
imported only when a group is really set up.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import timedelta
from typing import Any

# Long enough for rank 0 to evaluate and write the run folder while the others wait at the
# final barrier, or to load a large base model before the first collective. A rank that fails
# does not leave the others waiting this long: torchrun stops every worker when one exits with
# an error.
GROUP_TIMEOUT = timedelta(hours=2)


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def world_size() -> int:
    """Number of processes in the run (1 without torchrun)."""
    return max(1, _env_int("WORLD_SIZE", 1))


def rank() -> int:
    """This process's global rank (0 without torchrun)."""
    return _env_int("RANK", 0)


def local_rank() -> int:
    """This process's rank on its machine: its GPU index under torchrun (0 without)."""
    return _env_int("LOCAL_RANK", 0)


def is_main() -> bool:
    """True in the process that writes files and prints (rank 0, or the only process)."""
    return rank() == 0


def is_distributed() -> bool:
    return world_size() > 1


def backend() -> str:
    """``nccl`` when CUDA is available, else ``gloo`` (the CPU backend)."""
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def setup() -> None:
    """Join the process group once (no-op with one process, or when it already exists).

    The HF Trainer (accelerate) reuses this group rather than creating its own.
    """
    if not is_distributed():
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    _die_with_launcher()
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend(), timeout=GROUP_TIMEOUT)


def _die_with_launcher() -> None:
    """Stop this rank when torchrun itself dies (Linux).

    torchrun starts each worker in a session of its own, so a ``kill -9`` of torchrun (or of its
    process group) leaves the workers training on as orphans; a rerun would then write into the
    same folder as they do. With the parent-death signal the kernel kills them with it, as a
    crash of the whole machine would, and the rerun resumes from the last checkpoint.
    """
    if not sys.platform.startswith("linux") or "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    import ctypes
    import signal

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no prctl: orphans are then possible, as without this
        return
    if os.getppid() != parent:  # the launcher died before the call took effect
        os.kill(os.getpid(), signal.SIGKILL)


def _group_ready() -> bool:
    if not is_distributed():
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    """Wait until every rank gets here."""
    if _group_ready():
        import torch.distributed as dist

        dist.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects)."""
    if not _group_ready():
        return obj
    import torch.distributed as dist

    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not _group_ready():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any (say, one rank saw Ctrl-C)."""
    if not _group_ready():
        return flag
    import torch
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    if backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def teardown() -> None:
    """Leave the process group (avoids torch's warning at exit)."""
    if _group_ready():
        import torch.distributed as dist

        dist.destroy_process_group()


class _MainOnly(logging.Filter):
    """Lets a record through on rank 0 only: under torchrun, one copy of each message."""

    def filter(self, record: logging.LogRecord) -> bool:
        return is_main()


def main_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` whose records are emitted by rank 0 only."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, _MainOnly) for f in logger.filters):
        logger.addFilter(_MainOnly())
    return logger
