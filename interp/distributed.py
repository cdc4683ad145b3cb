"""Data parallel training over several processes (``torchrun`` or ``accelerate launch``), on torch.distributed.

Example:
    >>> from interp import distributed
    >>> distributed.world_size(), distributed.rank(), distributed.is_main()   # a plain process: one of one
    (1, 0, True)
    >>> distributed.shard(list(range(10)), rank=1, world=4)                   # rank 1 of 4 takes items 1, 5, 9
    [1, 5, 9]
    >>> distributed.gather("cells of this rank")                              # one list entry per rank
    ['cells of this rank']
    >>> import subprocess; subprocess.run(["torchrun", "--nproc_per_node", "2", "-m", "reft", "train", "--task",
    ...     "style", "--batch-size", "10", "--out", "runs/style"], check=True)   # doctest: +SKIP

Every rank draws the same global batch (same seed) and takes its slice, ``batch[rank::world]``;
:func:`data_parallel` wraps the module holding the trainable parameters in ``DistributedDataParallel``,
which starts them equal (a broadcast from rank 0) and averages their gradients in ``backward``. A loss
that is a sum over the shard's examples (or tokens) divided by the *global* count, times ``world``, then
averages to exactly the single-process loss of the whole batch, whatever the shard sizes. Sweeps give
each rank the cells ``rank, rank + world, ...`` (:func:`shard`) and :func:`gather` the results.
Without an initialised process group (or with one process) every function here is the identity and
training runs exactly as in one process.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Sequence

import torch
import torch.distributed as tdist
from torch import nn

_LOCAL = contextvars.ContextVar("interp_distributed_local", default=False)


def _group() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def active() -> bool:
    """True when this process is one of several in an initialised process group (and not inside :func:`local`).

    Example:
        >>> active()
        False
    """
    return not _LOCAL.get() and _group() and tdist.get_world_size() > 1


def world_size() -> int:
    """Processes that share the data: ``torch.distributed.get_world_size()``, 1 without a group or in :func:`local`."""
    return tdist.get_world_size() if active() else 1


def rank() -> int:
    """This process's index among :func:`world_size`: 0 without a group or in :func:`local`."""
    return tdist.get_rank() if active() else 0


def is_main() -> bool:
    """Whether this process prints and saves: global rank 0 (the ``RANK`` a launcher set, before or after the
    group exists; True in a plain process). Unlike :func:`rank`, :func:`local` does not change it.

    Example:
        >>> is_main()
        True
    """
    if _group():
        return tdist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def launched_world_size() -> int:
    """The world size a launcher announced (``WORLD_SIZE``), known before the process group is initialised."""
    if _group():
        return tdist.get_world_size()
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def shard(items: Sequence, *, rank: int | None = None, world: int | None = None) -> list:
    """This rank's part of ``items``: ``items[rank::world]`` (sizes differ by at most one; some may be empty).

    Example:
        >>> shard(["a", "b", "c"], rank=0, world=2), shard(["a", "b", "c"], rank=1, world=2)
        (['a', 'c'], ['b'])
    """
    r = (tdist.get_rank() if active() else 0) if rank is None else rank
    return list(items)[r :: world_size() if world is None else world]


def check_divisible(n: int, what: str, *, world: int | None = None, error: type[Exception] = ValueError) -> None:
    """Refuse a global batch of ``n`` that ``world`` processes (default :func:`world_size`) cannot split equally.

    Example:
        >>> check_divisible(6, "batch_size", world=4)
        Traceback (most recent call last):
        ValueError: batch_size=6 is the global batch, split over 4 processes, so it must be a multiple of 4; try
        batch_size=8 (or 4), or launch a number of processes that divides 6
    """
    world = world_size() if world is None else world
    if world > 1 and n % world:
        up, down = -(-n // world) * world, n // world * world
        alt = f" (or {down})" if down else ""
        raise error(
            f"{what}={n} is the global batch, split over {world} processes, so it must be a multiple of {world}; "
            f"try {what}={up}{alt}, or launch a number of processes that divides {n}"
        )


class Objective(nn.Module):
    """The loss of a batch as a module's forward, so that ``DistributedDataParallel`` can wrap it.

    ``owner`` is the module holding the trainable parameters (registered here, so DDP sees them); ``fn`` computes
    the loss from whatever the forward is given, through the frozen model's hooks or traces.

    Example:
        >>> lin = nn.Linear(2, 1)
        >>> obj = Objective(lin, lambda x: lin(x).sum())
        >>> obj(torch.ones(3, 2)).shape, [n for n, _ in obj.named_parameters()]
        (torch.Size([]), ['owner.weight', 'owner.bias'])
    """

    def __init__(self, owner: nn.Module, fn: Callable):
        super().__init__()
        self.owner = owner
        self.fn = fn

    def forward(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def data_parallel(module: nn.Module, *, find_unused: bool = True) -> nn.Module:
    """``DistributedDataParallel(module)`` when :func:`active`, else ``module`` itself.

    DDP broadcasts the parameters and buffers from rank 0 once, then averages gradients over ranks in each
    ``backward``. ``find_unused`` (DDP's ``find_unused_parameters``): a parameter that a step does not reach
    (a ReFT part that no prompt of a shard has) gets no gradient there, as in one process; pass False where
    every step reaches every parameter (a DAS basis), which spares a walk of the graph per step.

    Example:
        >>> lin = nn.Linear(2, 1)
        >>> data_parallel(lin) is lin          # one process: nothing to wrap
        True
    """
    if not active():
        return module
    return nn.parallel.DistributedDataParallel(module, find_unused_parameters=find_unused)


def _device() -> torch.device:
    if tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sums of ``values`` over ranks (float64; ``list(values)`` in one process).

    Example:
        >>> all_sum([2, 0.5])
        [2.0, 0.5]
    """
    if not active():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_device())
    tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t.tolist()


def broadcast(obj):
    """Rank 0's ``obj`` on every rank (so that decisions such as early stopping agree); ``obj`` in one process."""
    if not active():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj) -> list:
    """Every rank's ``obj``, in rank order, on every rank (``all_gather_object``); ``[obj]`` in one process."""
    if not active():
        return [obj]
    out = [None] * tdist.get_world_size()
    tdist.all_gather_object(out, obj)
    return out


@contextlib.contextmanager
def local():
    """Within this block, this process works alone (:func:`world_size` is 1): a sweep's own cells, one each.

    Example:
        >>> with local():
        ...     world_size()
        1
    """
    token = _LOCAL.set(True)
    try:
        yield
    finally:
        _LOCAL.reset(token)


@contextlib.contextmanager
def launched():
    """Initialise the process group a launcher asked for (``WORLD_SIZE`` > 1, env:// rendezvous), and destroy it
    at the end; gloo on CPU, nccl (one GPU per ``LOCAL_RANK``) on CUDA. Nothing happens in a plain process or
    when a group already exists (the caller's, which it keeps).

    Example:
        >>> with launched():          # not under torchrun: no group
        ...     active()
        False
    """
    if _group() or launched_world_size() <= 1:
        yield
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        tdist.init_process_group("nccl")
    else:
        tdist.init_process_group("gloo")
    try:
        yield
        tdist.barrier()  # every rank done before any tears down (a rank leaving early aborted its peer's gloo)
    finally:
        tdist.destroy_process_group()


__all__ = [
    "active",
    "all_sum",
    "broadcast",
    "check_divisible",
    "data_parallel",
    "gather",
    "is_main",
    "launched",
    "launched_world_size",
    "local",
    "rank",
    "shard",
    "world_size",
    "Objective",
]
