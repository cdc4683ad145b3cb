"""The hooks backend: a plan's ops as plain forward hooks on the modules they address (the hot paths).

Example:
    >>> from interp.sites import resolve
    >>> site = Site("resid_post", 0, last())
    >>> op = Op(site, resolve(lm, site), torch.tensor([[5], [5], [5], [5]]), read=True)
    >>> with hooked(lm, [op]) as reads:                     # every forward while the block runs applies the ops
    ...     _ = lm.hf(input_ids=base)
    >>> reads[0].shape                                      # (B, k, d)
    torch.Size([4, 1, 32])
    >>> with hooked(lm, [op]):                              # a block that never runs the model: the op never fired
    ...     pass
    Traceback (most recent call last):
    interp.errors.EditNotAppliedError: read op 0 at Site('resid_post', 0, last()) (model.layers.0 output) fired 0 ...

Every op fires exactly once per forward (:class:`interp.engine.Tally`): an op on a module the forward never
reached, under a stand-in layer, hooked twice or on a module that ran twice raises ``EditNotAppliedError`` naming
it. The hooks are removed when the block ends, whatever happens in it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from ..arch import submodule
from ..errors import EditNotAppliedError
from .attention import pattern_attention, uses_patterns
from .plan import Op, Stop, apply_ops, group_ops
from .probe import execution_order, recording
from .standin import blocked, swapped
from .tally import Tally, describe

_HOOKED: dict[int, set[int]] = {}  # id(model) -> ids of the ops hooked on it right now


def refuse_unfireable(model: torch.nn.Module, ops: Sequence[Op]) -> None:
    """Refuse, before any work, an op listed twice in a plan (it would apply twice) or whose address a stand-in
    replaced (it would never apply; see :func:`interp.engine.blocked`)."""
    seen: set[int] = set()
    for i, op in enumerate(ops):
        if id(op) in seen:
            raise _unfireable(op, i, "is listed twice in the plan, so it would fire twice in the forward")
        seen.add(id(op))
        why = blocked(model, op.target.path, op.target.io)
        if why is not None:
            raise _unfireable(op, i, f"would never fire ({why})")


def _unfireable(op: Op, i: int, why: str) -> EditNotAppliedError:
    return EditNotAppliedError(f"{describe(op, i)} ({op.target.path} {op.target.io}) {why}; planned 1")


@contextlib.contextmanager
def _claimed(model: torch.nn.Module, ops: Sequence[Op]):
    """Mark ``ops`` as hooked on ``model`` while the block runs; an op hooked already (by an enclosing run) would
    apply twice and is refused."""
    active = _HOOKED.setdefault(id(model), set())
    mine: list[int] = []
    try:
        for i, op in enumerate(ops):
            if id(op) in active:
                why = "is hooked on this model already (by an enclosing run), so it would fire twice in every forward"
                raise _unfireable(op, i, why)
            active.add(id(op))
            mine.append(id(op))
        yield
    finally:
        active.difference_update(mine)
        if not active:
            _HOOKED.pop(id(model), None)


@contextlib.contextmanager
def hooked(
    lm,
    ops: Sequence[Op],
    *,
    reads: dict | None = None,
    stop: bool = False,
    hf: torch.nn.Module | None = None,
    each_forward: bool = False,
    when: str = "the forward",
):
    """While the block runs, every forward of the model (``hf`` or ``lm.hf``) applies ``ops``.

    ``reads`` collects what read ops select; with ``stop`` the forward ends after the last op (raising
    :class:`interp.engine.Stop`, which the caller catches). Fire-once accounting: with ``each_forward`` every
    forward is checked as it ends (each op fired once in it); otherwise the block is one forward (or, for a prompt
    pass, ops that fire once in all), checked when the block ends without an error.
    """
    model = hf or lm.hf
    ops = list(ops)
    reads = {} if reads is None else reads
    tally = Tally(ops)
    refuse_unfireable(model, ops)
    handles = []
    with _claimed(model, ops):
        groups = group_ops(ops, lambda: execution_order(lm))
        try:
            for g, ((path, io), group) in enumerate(groups):
                last = stop and g == len(groups) - 1
                handles.append(_register(submodule(model, path), io, group, reads, tally, last))
            if each_forward:

                def per_forward(mod, args, output):
                    if recording():
                        return
                    tally.check(when=when)
                    tally.reset()

                handles.append(model.register_forward_hook(per_forward))
            with pattern_attention(model, on=uses_patterns(ops)):  # attn_pattern: eager attention while hooked
                yield reads
            if not each_forward:
                tally.check(when=when)
        finally:
            for h in handles:
                h.remove()


def _register(module, io, group, reads, tally, last):
    def run(h):
        if recording():
            return None
        new = apply_ops(h, group, reads, tally=tally)
        if last:
            raise Stop
        return new

    if io == "output":

        def hook(mod, args, output):
            packed = isinstance(output, tuple)
            new = run(output[0] if packed else output)
            if new is None:
                return None
            return (new, *output[1:]) if packed else new

        return module.register_forward_hook(hook)

    def pre_hook(mod, args, kwargs):
        key = None if args else ("hidden_states" if "hidden_states" in kwargs else next(iter(kwargs)))
        new = run(args[0] if args else kwargs[key])
        if new is None:
            return None
        return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, key: new})

    return module.register_forward_pre_hook(pre_hook, with_kwargs=True)


def forward(
    lm,
    ops: Sequence[Op] = (),
    *,
    stop: bool = False,
    hf: torch.nn.Module | None = None,
    swaps: dict[str, torch.nn.Module] | None = None,
    **model_kwargs,
):
    """One forward of the model with ``ops`` hooked: ``(reads, output)``, reads in the order of the ops (None where
    an op only edits), the model's output (None when the run stopped after the last op). ``swaps`` ({path: module},
    see :mod:`interp.engine.standin`) stand in for modules while it runs; ``model_kwargs`` go to the model (token
    ids, a mask, a key/value cache ...)."""
    model = hf or lm.hf
    reads: dict[int, torch.Tensor] = {}
    out = None
    if swaps:
        execution_order(lm)  # recorded with the real modules, before any is swapped out
    with swapped(model, swaps or {}), hooked(lm, ops, reads=reads, stop=stop, hf=hf):
        try:
            out = model(**model_kwargs)
        except Stop:
            pass
    return [reads.get(i) for i in range(len(ops))], out


def _contiguous_input(module, args):
    """Feed the unembedding a contiguous input: Hugging Face slices the kept positions (``logits_to_keep``) out of
    the final hidden states, and with frozen weights torch's CPU linear runs that non-contiguous (B, k, d) view
    through a batched-matmul path several times slower than the matrix product it uses for a contiguous one (and
    for trainable weights). The values are those of the unfrozen model's forward."""
    x = args[0] if args else None
    if isinstance(x, torch.Tensor) and not x.is_contiguous():
        return (x.contiguous(), *args[1:])
    return None


def contiguous_unembedding(model: torch.nn.Module) -> None:
    """Make ``model``'s unembedding always see a contiguous input (a permanent pre-hook, installed once)."""
    unembed = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if unembed is not None and not getattr(unembed, "_interp_contiguous", False):
        unembed.register_forward_pre_hook(_contiguous_input)
        unembed._interp_contiguous = True


__all__ = ["contiguous_unembedding", "forward", "hooked", "refuse_unfireable"]
