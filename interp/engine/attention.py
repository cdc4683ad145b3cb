"""``attn_pattern``: an eager attention function that passes the probabilities through a module of their own.

Example:
    >>> attach_patterns(lm)                                    # a PatternPoint in each attention module (once)
    >>> type(lm.hf.model.layers[0].self_attn.attn_pattern).__name__
    'PatternPoint'
    >>> with pattern_attention(lm.hf):                         # the model's attention calls it while the block runs
    ...     lm.hf.config._attn_implementation
    'interp_eager'
    >>> lm.hf.config._attn_implementation != PATTERN_ATTENTION  # and its own implementation is back after
    True

A plan that touches ``attn_pattern`` runs under :data:`PATTERN_ATTENTION` (registered with transformers'
``AttentionInterface``), which computes attention as transformers' eager function does and calls the attention
module's :class:`PatternPoint` on the probabilities (B, heads, T, S): reading or editing that point's output reads
or edits the pattern.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from ..arch import Target, architecture, submodule
from ..errors import SiteError
from .plan import Op

PATTERN = "attn_pattern"  # name of the point added to each attention module: its output is the probabilities
PATTERN_ATTENTION = "interp_eager"  # the attention implementation that calls it (registered with transformers)
QUERY = "attn_query"  # a point on the scaled queries (attached by attach_queries; AtP*'s exact attention scores)


class PatternPoint(torch.nn.Module):
    """Identity on the attention probabilities (B, heads, T, T): the module whose output is ``attn_pattern``.

    It has no parameters; :func:`attach_patterns` adds one to each attention module of a model, and
    :func:`pattern_attention` makes the model's attention call it.
    """

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        return probs


class QueryPoint(torch.nn.Module):
    """Identity on the scaled queries ``q * scaling`` (B, heads, T, d); its child ``rows`` sees them as
    (B, T, heads * d), the layout ops read and edit. ``softcap`` keeps the score softcapping it last ran under."""

    def __init__(self):
        super().__init__()
        self.rows = torch.nn.Identity()
        self.softcap: float | None = None

    def forward(self, query: torch.Tensor, softcap: float | None = None) -> torch.Tensor:
        self.softcap = softcap
        B, h, T, d = query.shape
        flat = self.rows(query.transpose(1, 2).reshape(B, T, h * d))
        return flat.reshape(B, T, h, d).transpose(1, 2)


def eager_with_pattern(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None, **kwargs):
    """Eager attention (as in transformers' ``eager_attention_forward``) with the probabilities passed through the
    module's :class:`PatternPoint`: q, k (B, h, T, d) and v -> (B, T, h, d) output and (B, h, T, S) probabilities."""
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    group = query.shape[1] // key.shape[1]
    if group > 1:  # grouped-query attention: each key/value head serves `group` consecutive query heads
        key, value = key.repeat_interleave(group, dim=1), value.repeat_interleave(group, dim=1)
    qpoint = getattr(module, QUERY, None)
    if qpoint is not None:  # the scaled queries pass through their point (attach_queries)
        scores = torch.matmul(qpoint(query * scaling, softcap), key.transpose(2, 3))
    else:
        scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, h, T, S)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, : key.shape[-2]]
    probs = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = torch.nn.functional.dropout(probs, p=dropout, training=module.training)
    point = getattr(module, PATTERN, None)
    if point is not None:
        probs = point(probs)
    out = torch.matmul(probs, value).transpose(1, 2).contiguous()  # (B, h, T, d) -> (B, T, h, d)
    return out, probs


_registered: list[bool] = []


def _register_attention() -> None:
    if not _registered:
        AttentionInterface.register(PATTERN_ATTENTION, eager_with_pattern)
        AttentionMaskInterface.register(PATTERN_ATTENTION, eager_mask)
        _registered.append(True)


def attach_patterns(lm) -> None:
    """Give every attention module of ``lm`` its :class:`PatternPoint` (once; refuse models that cannot)."""
    arch = architecture(lm)
    if getattr(lm, "_patterns", False):
        return
    can = getattr(type(lm.hf), "_can_set_attn_implementation", None)
    if can is None or not can() or not hasattr(lm.hf.config, "_attn_implementation"):
        raise SiteError(
            f"{lm.spec.architecture} cannot provide attn_pattern: its attention does not dispatch through "
            "transformers' AttentionInterface, so the probabilities cannot be exposed; read the attention "
            "weights with output_attentions=True under attn_implementation='eager', or use Site.module(...)"
        )
    for i in range(lm.spec.n_layers):
        attn = submodule(lm.hf, f"{arch.layers}.{i}.{arch.attn}")
        if not isinstance(getattr(attn, PATTERN, None), PatternPoint):
            attn.add_module(PATTERN, PatternPoint())
    lm._patterns = True
    lm._probe = None  # the recorded forward is found again, with the new points in it


def attach_queries(lm) -> None:
    """Give every attention module of ``lm`` a :class:`QueryPoint` (once; with its pattern points): runs under
    :func:`pattern_attention` pass the scaled queries through it, so an op on :func:`query_target` reads them."""
    attach_patterns(lm)
    if getattr(lm, "_queries", False):
        return
    arch = architecture(lm)
    for i in range(lm.spec.n_layers):
        attn = submodule(lm.hf, f"{arch.layers}.{i}.{arch.attn}")
        if not isinstance(getattr(attn, QUERY, None), QueryPoint):
            attn.add_module(QUERY, QueryPoint())
    lm._queries = True
    lm._probe = None


def query_target(lm, layer: int) -> Target:
    """Where layer ``layer``'s scaled queries are read, (B, T, heads * head_dim) (after :func:`attach_queries`)."""
    arch, s = architecture(lm), lm.spec
    return Target(f"{arch.layers}.{layer}.{arch.attn}.{QUERY}.rows", "output", None, s.n_heads, s.n_heads * s.head_dim)


@contextlib.contextmanager
def pattern_attention(model: torch.nn.Module, on: bool = True):
    """While the block runs, ``model`` uses :data:`PATTERN_ATTENTION` (eager, exposing ``attn_pattern``); its own
    attention implementation is restored after. ``on=False`` changes nothing."""
    config = getattr(model, "config", None)
    if not on or config is None or getattr(config, "_attn_implementation", None) == PATTERN_ATTENTION:
        yield
        return
    _register_attention()
    old = config._attn_implementation
    config._attn_implementation = PATTERN_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = old


def uses_patterns(ops: Sequence[Op]) -> bool:
    """Whether a plan touches ``attn_pattern`` (and so must run under :func:`pattern_attention`)."""
    return any(op.target.pattern or f".{QUERY}." in op.target.path for op in ops)


__all__ = [
    "PATTERN",
    "PATTERN_ATTENTION",
    "PatternPoint",
    "QUERY",
    "QueryPoint",
    "attach_patterns",
    "attach_queries",
    "eager_with_pattern",
    "pattern_attention",
    "query_target",
    "uses_patterns",
]
