"""Run a plan: one forward of a batch with its ops, on either backend, with logits only where they are read.

Example:
    >>> from interp.sites import resolve
    >>> batch = encode(lm, torch.tensor([[5, 6, 7], [8, 9, 10]]))
    >>> site = Site("resid_post", 0, last())
    >>> op = Op(site, resolve(lm, site), site.pos.resolve(batch.attention_mask), read=True)
    >>> out = execute(lm, batch, [op], logits_at=last().resolve(batch.attention_mask), backend="hooks")
    >>> out.reads[0].shape, out.logits.shape                          # (B, k, d), (B, k, V)
    (torch.Size([2, 1, 32]), torch.Size([2, 1, 97]))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..arch import ARCHITECTURES
from .attention import pattern_attention, uses_patterns
from .hooks import forward, refuse_unfireable
from .nnsight_backend import run_nnsight
from .options import BACKENDS, current
from .plan import Batch, Op, Outcome
from .unembed import final_norm_target, readout


def execute(
    lm,
    batch: Batch,
    ops: Sequence[Op] = (),
    *,
    logits_at: torch.Tensor | None = None,
    vocab: torch.Tensor | None = None,
    head: torch.nn.Module | None = None,
    backend: str | None = None,
    full: bool | None = None,
    hf: torch.nn.Module | None = None,
) -> Outcome:
    """One forward of ``batch`` with ``ops``. Logits (B, k, V) only at the (B, k) columns ``logits_at``.

    Args:
        vocab: token ids: logits over these words only (B, k, len(vocab)).
        head: a linear head over the final hidden states instead of the unembedding (B, k, n_labels).
        backend: ``"nnsight"`` or ``"hooks"`` (default: :func:`interp.engine.options` in force; the hot paths
            of reft name ``"hooks"`` here).
        full: the unoptimised reference: no early stop, logits at every position, then ``logits_at`` read
            (default: :func:`interp.engine.options` in force).
        hf: run this module instead of ``lm.hf`` (same architecture; e.g. a LoRA copy; hooks backend only).

    Raises:
        EditNotAppliedError: an op fired zero times or more than once (see :class:`interp.engine.Tally`).
    """
    opts = current()
    backend = opts.backend if backend is None else backend
    full = opts.full if full is None else full
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    if hf is not None and backend != "hooks":
        raise ValueError("hf= runs another module and needs backend='hooks'")
    if logits_at is None and not ops:
        raise ValueError("a run with no reads, writes or logits would compute nothing")
    ops = list(ops)
    n_user = len(ops)
    model = hf or lm.hf
    refuse_unfireable(model, ops)  # before any work: an op listed twice, or one a stand-in replaced
    table = lm.spec.architecture in ARCHITECTURES
    if full and logits_at is None:
        logits_at = torch.zeros(len(batch), 1, dtype=torch.long, device=batch.input_ids.device)
    wants = logits_at is not None
    if wants and table:  # logits from the final norm's output at the columns read, never from lm_head
        T = batch.input_ids.shape[1]
        cols = torch.arange(T, device=batch.input_ids.device).expand(len(batch), T) if full else logits_at
        ops.append(Op(None, final_norm_target(lm), cols, read=True))
    kwargs = batch.forward_kwargs()
    own = wants and not table  # a model outside the table: its own logits, only at the columns read
    if own:
        cols = torch.unique(logits_at)
        kwargs["logits_to_keep"] = cols
    with pattern_attention(model, on=uses_patterns(ops)):  # attn_pattern needs eager attention
        if backend == "hooks":
            reads, out = forward(lm, ops, stop=not full and not own, hf=hf, **kwargs, use_cache=False)
            model_logits = out.logits if own else None
        else:
            reads, model_logits = run_nnsight(lm, ops, kwargs, stop=not full, own=own)
    logits = None
    if own:
        where = torch.searchsorted(cols, logits_at.to(cols.device)).to(model_logits.device)
        logits = model_logits[torch.arange(len(batch), device=where.device)[:, None], where]
        logits = logits if vocab is None else logits[..., vocab]
    elif wants:
        hidden = reads[-1]
        if full:
            hidden = readout(lm, hidden, vocab, head, hf=hf)  # (B, T, V): every position's logits
            rows = torch.arange(len(batch), device=hidden.device)[:, None]
            logits = hidden[rows, logits_at.to(hidden.device)]
        else:
            logits = readout(lm, hidden, vocab, head, hf=hf)
    if logits is not None:  # on the inputs' device, as the labels a loss compares them with (device maps)
        logits = logits.to(batch.input_ids.device)
    return Outcome(reads[:n_user], logits)


__all__ = ["BACKENDS", "execute"]
