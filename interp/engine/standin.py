"""Stand-in modules: run a model with some of its modules replaced, and know which addresses still mean anything.

Example:
    >>> stream = torch.zeros(2, 3, 32)                                 # what layer 0 would have produced
    >>> with swapped(lm.hf, layer_stand_ins(lm, 1, stream, purpose="a test")):
    ...     type(lm.hf.model.layers[0]).__name__, blocked(lm.hf, "model.layers.0.mlp", "output") is not None
    ('StandIn', True)
    >>> type(lm.hf.model.layers[0]).__name__                           # the real layer is back
    'LlamaDecoderLayer'
    >>> cols = torch.tensor([[2], [2]])                                # (N, k): the columns a run reads
    >>> with swapped(lm.hf, narrowed_mlp(lm, cols)):                  # the last layer's MLP at those columns only
    ...     type(lm.hf.model.layers[1].mlp).__name__
    'Narrowed'

One mechanism serves three uses: prefix replay (:class:`interp.replay.PrefixCache`: layers below a site return a
cached stream), cached patching cells (:class:`interp.fastpatch.CleanRun`: layers below a patch return the clean
run's output) and the last layer's MLP narrowed to the columns read. A stand-in keeps only some addresses of the
module it replaces (a layer stand-in that returns the real stream keeps its output; nothing inside it runs), and
:func:`blocked` says why an address is gone, so the engine refuses an op there (``EditNotAppliedError``) instead
of letting its edit silently never apply.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..arch import architecture

_SWAPPED: dict[int, int] = {}  # id(model) -> how many swaps are active on it (no walk when none)


class StandIn(nn.Module):
    """Stands in for a decoder layer that is not computed: passes the stream on (``value`` None), or returns
    ``value`` (B, T, d), the stream the real layer would give. ``why`` says what it serves (for error messages)."""

    def __init__(self, value: torch.Tensor | None = None, *, why: str = "a stand-in layer"):
        super().__init__()
        self.value, self.why = value, why

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states if self.value is None else self.value

    def keeps(self, io: str) -> bool:
        """Whether the real module's ``io`` is still there: the output of a stand-in that returns the real stream."""
        return io == "output" and self.value is not None


class Narrowed(nn.Module):
    """Stands in for a module that acts token by token: runs it at the (N, k) columns ``cols`` only and gives
    zeros elsewhere (for a module whose other columns nothing reads)."""

    def __init__(self, inner: nn.Module, cols: torch.Tensor, *, why: str = "a narrowed module"):
        super().__init__()
        self.inner, self.cols, self.why = inner, cols, why

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        rows = torch.arange(x.shape[0], device=x.device)[:, None]
        cols = self.cols.to(x.device)
        out = self.inner(x[rows, cols], *args, **kwargs)  # (N, k, d) -> (N, k, d')
        full = out.new_zeros(*x.shape[:2], out.shape[-1])
        return full.index_put((rows.expand_as(cols), cols), out)  # (N, T, d'), zeros outside cols

    def keeps(self, io: str) -> bool:
        return False


def _put(parent: nn.Module, name: str, module: nn.Module) -> None:
    if name.isdigit():
        parent[int(name)] = module  # a ModuleList entry
    else:
        setattr(parent, name, module)


@contextlib.contextmanager
def swapped(model: nn.Module, swaps: dict[str, nn.Module]):
    """While the block runs, the module at each dotted path of ``swaps`` is replaced; the originals come back after."""
    if not swaps:
        yield
        return
    done = []
    _SWAPPED[id(model)] = _SWAPPED.get(id(model), 0) + 1
    try:
        for path, new in swaps.items():
            parent_path, _, name = path.rpartition(".")
            parent = model.get_submodule(parent_path)
            done.append((parent, name, parent.get_submodule(name)))
            _put(parent, name, new)
        yield
    finally:
        for parent, name, old in reversed(done):
            _put(parent, name, old)
        _SWAPPED[id(model)] -= 1
        if not _SWAPPED[id(model)]:
            del _SWAPPED[id(model)]


def is_swapped(model: nn.Module) -> bool:
    """Whether some module of ``model`` is replaced by a stand-in right now."""
    return id(model) in _SWAPPED


def blocked(model: nn.Module, path: str, io: str) -> str | None:
    """Why the ``io`` of the module at ``path`` is not the real one while stand-ins are in place; None if it is."""
    if not is_swapped(model):
        return None
    node, walked = model, []
    for part in path.split("."):
        node = node._modules.get(part)
        if node is None:
            return None  # no such module: the caller reports the path itself
        walked.append(part)
        if isinstance(node, (StandIn, Narrowed)):
            here = ".".join(walked)
            if here == path and node.keeps(io):
                return None
            inside = f"{path} is inside {here}, which" if here != path else f"{path} {io} is gone: the module"
            return f"{inside} is a stand-in ({node.why}), so it never runs there"
    return None


def layer_stand_ins(lm, n: int, value: torch.Tensor | None, *, purpose: str) -> dict[str, nn.Module]:
    """Swaps for decoder layers ``0..n-1``: the first ``n - 1`` pass the stream on, layer ``n - 1`` returns
    ``value`` (the stream layer ``n`` reads). Only layer ``n - 1``'s output keeps its meaning."""
    layers = architecture(lm).layers
    why = f"decoder layers 0..{n - 1} are not computed ({purpose}); only the output of layer {n - 1} is kept"
    return {f"{layers}.{i}": StandIn(value if i == n - 1 else None, why=why) for i in range(n)}


def narrowed_mlp(lm, cols: torch.Tensor | None) -> dict[str, nn.Module]:
    """A swap for the last decoder layer's MLP (the MLP module itself, from the architecture table) that computes
    it at ``cols`` (N, k) only; none when ``cols`` is None or the table names no MLP module."""
    arch = architecture(lm)
    if cols is None or arch.mlp is None:
        return {}
    path = f"{arch.layers}.{lm.n_layers - 1}.{arch.mlp}"
    why = "the last layer's MLP runs at the columns read only"
    return {path: Narrowed(lm.hf.get_submodule(path), cols, why=why)}


__all__ = ["Narrowed", "StandIn", "blocked", "is_swapped", "layer_stand_ins", "narrowed_mlp", "swapped"]
