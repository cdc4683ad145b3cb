"""One recorded forward: what each module takes and returns, and the order the modules run in (found once).

Example:
    >>> shapes = module_shapes(lm)                           # one forward of 2 prompts x 3 tokens
    >>> shapes[("model.layers.1.mlp.act_fn", "output")]      # (batch, tokens, intermediate_size)
    (2, 3, 64)
    >>> order = execution_order(lm)
    >>> order[("model.layers.0", "output")] < order[("model.layers.1", "input")]
    True

:func:`interp.sites.resolve` reads the shapes for ``Site.module`` widths; the runner sorts a plan's ops by the order.
Both come from the same forward, cached on the wrapper (``lm``) until the model changes shape (the engine's
attention-pattern points, once attached, reset it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .attention import pattern_attention
from .standin import is_swapped

PROBE = (2, 3)  # (batch, tokens) of the forward pass that records what each module takes and returns
_RECORDING = [False]  # True while the recorded forward runs: the engine's own hooks stand aside


@dataclass
class Recording:
    """``order``: rank of each (module path, 'input'|'output') in the forward; ``shapes``: the shape of the tensor
    the engine would edit there (the first element of a tuple, the first positional input), or the name of the type
    found instead. Modules that do not run have no entry."""

    order: dict[tuple[str, str], int]
    shapes: dict[tuple[str, str], tuple[int, ...] | str]


def recorded(lm) -> Recording:
    """The :class:`Recording` of ``lm.hf``: one forward of :data:`PROBE` with a hook on every module (found once)."""
    cached = getattr(lm, "_probe", None)
    if cached is not None:
        return cached
    if is_swapped(lm.hf):
        raise RuntimeError("the recorded forward must run on the real modules; record it before swapping any out")
    order: dict = {}
    shapes: dict = {}

    def describe(x):
        x = x[0] if isinstance(x, tuple) and x else x
        return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__

    def pre(name):
        def hook(mod, args, kwargs):
            order.setdefault((name, "input"), len(order))
            x = args[0] if args else kwargs.get("hidden_states", next(iter(kwargs.values()), None))
            shapes.setdefault((name, "input"), describe(x))

        return hook

    def post(name):
        def hook(mod, args, output):
            order.setdefault((name, "output"), len(order))
            shapes.setdefault((name, "output"), describe(output))

        return hook

    B, T = PROBE
    ids = torch.arange(B * T, device=lm.device).reshape(B, T) % max(1, lm.spec.vocab_size)  # any valid token ids
    positions = torch.arange(T, device=lm.device).expand(B, T)
    handles = []
    try:
        for name, mod in lm.hf.named_modules():
            handles.append(mod.register_forward_pre_hook(pre(name), with_kwargs=True))
            handles.append(mod.register_forward_hook(post(name)))
        # with attn_pattern points attached, under the attention that calls them, so they are recorded too
        _RECORDING[0] = True  # hooks of a run in progress (an enclosing plan) do not fire on this forward
        with torch.no_grad(), pattern_attention(lm.hf, on=getattr(lm, "_patterns", False)):
            lm.hf(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=positions)
    finally:
        _RECORDING[0] = False
        for h in handles:
            h.remove()
    lm._probe = Recording(order, shapes)
    return lm._probe


def recording() -> bool:
    """Whether the recorded forward is running now (the engine's hooks then do nothing)."""
    return _RECORDING[0]


def execution_order(lm) -> dict[tuple[str, str], int]:
    """Rank of each (module path, 'input'|'output') in one forward pass."""
    return recorded(lm).order


def module_shapes(lm) -> dict[tuple[str, str], tuple[int, ...] | str]:
    """What each module of ``lm.hf`` takes and returns in one forward of 2 prompts x 3 tokens (see
    :class:`Recording`)."""
    return recorded(lm).shapes


__all__ = ["PROBE", "Recording", "execution_order", "module_shapes", "recorded", "recording"]
