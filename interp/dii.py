"""Distributed interchange interventions (DII), activation patching, ablation and collection.

Example:
    >>> site = Site("resid_post", 1, last())
    >>> out = interchange(lm, base, source, at=site)                       # activation patching
    >>> out = interchange(lm, base, source, at=site, via=LowRankRotation(lm.d_model, 16))
    >>> out.logit_diff(5, 6).shape           # logit(5) - logit(6) per pair; words (" Mary", " John") need a tokenizer
    torch.Size([4])
    >>> collect(lm, base, at=Site("resid_post", 0, last())).shape         # (B, 1, d_model)
    torch.Size([4, 1, 32])
    >>> run(lm, base).logit_diff(5, 6).shape                               # the plain model, same result type
    torch.Size([4])
    >>> torch.allclose(interchange(lm, base, base, at=site).logits, run(lm, base).logits)   # own source: no-op
    True
    >>> collect(rlm, base, at=site).shape                                  # under a trained ReFT (reft.attach)
    torch.Size([4, 1, 32])

The source run stops after the last site it feeds, and the base run computes logits only at the positions
read (by default the last token), so a DII costs far less than two full forwards (bench/bench_dii.py).
Every call builds ops for :mod:`interp.engine`; ``with interp.engine.options(backend="hooks"):`` runs the same plan
with module hooks (the ``backend=`` / ``full=`` keywords still work for one release, with a DeprecationWarning).
A model with edits of its own (a ``reft.ReftModel``, or anything with ``.lm`` and ``edit_ops(batch)``) can
stand in for ``lm``: its edits apply first, then the reads and interventions asked for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from . import sites as _sites
from .checks import as_int
from .dii_result import DIIResult, vocab_ids
from .engine import Batch, Op, execute, legacy
from .inputs import InputError, encode
from .interventions import Intervention, as_intervention
from .positions import Position, PositionError, last
from .sites import Site


def _as_list(x, n=None):
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x] * (n or 1)


def _unwrap(model):
    """``(lm, edited)``: the LM, and the model whose own edits apply to every run (None for a plain LM)."""
    if hasattr(model, "edit_ops") and hasattr(model, "lm"):
        return model.lm, model
    return model, None


def _own_ops(edited, batch: Batch) -> list[Op]:
    return [] if edited is None else list(edited.edit_ops(batch))


def plan(lm, batch: Batch, sites: Sequence[Site]) -> list[tuple[Site, _sites.Target, torch.Tensor]]:
    """Resolve sites and their positions on ``batch``: every check happens here, before a forward pass."""
    out = []
    for site in sites:
        target = _sites.resolved(lm, site)  # once per fit inside interp.sites.resolving (DAS steps)
        pos = site.pos.resolve(batch.attention_mask, batch.input_ids, lm.tokenizer)
        out.append((site, target, pos))
    return out


def collect(
    model,
    inputs,
    *,
    at: Site | Sequence[Site],
    batch_size: int | None = None,
    mean: bool = False,
    backend: str | None = None,
    full: bool | None = None,
) -> torch.Tensor | list[torch.Tensor]:
    """Vectors at one site (B, k, w) or a list of them for several sites; each run stops after the last site.

    The one activation collector: :func:`interp.cache` keys its reads by site, DAS caches its sources with it,
    and ReFT's steering directions average them (``mean=True``). No gradient flows.

    Example:
        >>> collect(lm, prompts, at=Site("resid_post", 0, last()), batch_size=3).shape   # 3 prompts a run
        torch.Size([8, 1, 32])
        >>> every = Site("resid_post", 0, interp.positions.all_tokens())     # 3 tokens, then 2
        >>> collect(lm, [[5, 6, 7], [8, 9]], at=every, mean=True).shape     # each prompt's own mean
        torch.Size([2, 32])

    Args:
        batch_size: run ``inputs`` (prompts, token-id lists, a (N, T) tensor or a Batch) so many at a time and
            concatenate the reads (default: all in one run).
        mean: each input's vectors averaged over its positions, (B, w) in float32; the positions may then give
            each prompt a different number of tokens (``all_tokens()`` on prompts of different lengths).
        backend, full: deprecated; use ``with interp.engine.options(backend=..., full=...)``.
    """
    sites = _as_list(at)
    if batch_size is not None:
        batch_size = as_int(batch_size, "collect(batch_size=)", low=1, error=InputError)
    per_site: list[list[torch.Tensor]] = [[] for _ in sites]
    with legacy("collect", backend, full):
        for part in _parts(inputs, batch_size):
            for i, h in enumerate(_read(model, part, sites, mean=mean)):
                per_site[i].append(h)
    reads = [p[0] if len(p) == 1 else torch.cat(p) for p in per_site]
    return reads if isinstance(at, (list, tuple)) else reads[0]


def _parts(inputs, size: int | None) -> list:
    """``inputs`` in runs of ``size`` (all of it when None, or when it is one string or a dict of tensors)."""
    if size is None or isinstance(inputs, (str, dict)):
        return [inputs]
    if isinstance(inputs, Batch):
        n = len(inputs)
        return [Batch(inputs.input_ids[a : a + size], inputs.attention_mask[a : a + size]) for a in range(0, n, size)]
    return [inputs[a : a + size] for a in range(0, len(inputs), size)] or [inputs]  # empty: encode says so


def _read(model, inputs, sites: list[Site], *, mean: bool) -> list[torch.Tensor]:
    """One run's reads at ``sites``: (B, k, w) each, or (B, w) averaged over each row's valid positions."""
    lm, edited = _unwrap(model)
    batch = encode(lm, inputs)
    if mean:
        for site in sites:
            if site.pos.decodes:
                raise PositionError(f"{site!r}: collect reads fixed inputs, which have no generated tokens")
        locs = [s.pos.locate(batch.attention_mask, batch.input_ids, lm.tokenizer) for s in sites]
        ops = [Op(s, _sites.resolved(lm, s), loc.index, read=True) for s, loc in zip(sites, locs)]
    else:
        ops = [Op(s, t, p, read=True) for s, t, p in plan(lm, batch, sites)]
    own = _own_ops(edited, batch)
    with torch.no_grad():
        reads = execute(lm, batch, own + ops).reads[len(own) :]
    if not mean:
        return reads
    weights = [loc.valid.to(h.device, torch.float32)[..., None] for h, loc in zip(reads, locs)]
    return [(h.float() * w).sum(1) / w.sum(1).clamp(min=1) for h, w in zip(reads, weights)]


def run(
    model,
    inputs,
    *,
    logits_at: Position | None = None,
    vocab=None,
    batch_size: int | None = None,
    prefix=None,
    backend: str | None = None,
    full: bool | None = None,
) -> DIIResult:
    """The model's own run (with its edits, for a ReFT) as a :class:`DIIResult`: logits where asked, metrics.

    Example:
        >>> res = run(lm, prompts)
        >>> res.logits.shape, res.predictions().shape        # (B, vocab) at the last token, argmax (B,)
        (torch.Size([8, 97]), torch.Size([8]))
        >>> res.accuracy(5)                                  # fraction predicting token 5 (or a word: " Mary")
        0.0
        >>> run(lm, prompts, vocab=[5, 6], batch_size=3).logits.shape   # two words, three prompts a forward
        torch.Size([8, 2])

    ``vocab``, ``batch_size`` and ``prefix`` as in :func:`intervene`.
    """
    with legacy("run", backend, full):
        return intervene(model, inputs, at=[], logits_at=logits_at, vocab=vocab, batch_size=batch_size, prefix=prefix)


def intervene(
    model,
    base,
    *,
    at: Site | Sequence[Site],
    via=None,
    sources: Sequence[torch.Tensor | None] | None = None,
    logits_at: Position | None = None,
    vocab=None,
    batch_size: int | None = None,
    prefix=None,
    grad: bool = False,
    backend: str | None = None,
    full: bool | None = None,
) -> DIIResult:
    """Run ``base`` with an intervention at each site; ``sources`` holds source vectors per site if needed.

    Example:
        >>> site = Site("resid_post", 1, last())
        >>> src = collect(lm, source, at=site)                                  # (B, 1, 32)
        >>> res = intervene(lm, base, at=site, sources=[src], vocab=[5, 6])     # logits of two words only
        >>> res.logits.shape, res.logit_diff(5, 6).shape
        (torch.Size([4, 2]), torch.Size([4]))
        >>> whole = intervene(lm, base, at=site, sources=[src], batch_size=1)   # one prompt a forward
        >>> torch.allclose(whole.logits[:, [5, 6]], res.logits, atol=1e-5)
        True

    Args:
        via: one Basis/Intervention for all sites or a list with one per site; ``at=[]`` is a plain run.
        logits_at: positions whose logits are computed (default: the last token).
        vocab: token ids or single-token words: only these rows of the unembedding are computed, and ``logits``
            has one column per entry, in the order given (``result.vocab`` keeps the ids; the result's metrics
            map words to columns). Default: the whole vocabulary.
        batch_size: run so many rows a forward (default: all at once); the results are concatenated. The batch
            is padded once, so every forward sees the same padding.
        prefix: a :class:`interp.replay.PrefixCache` collected on these base inputs (in this order): layers below
            its layer are not run, their output is replayed from the cache (exact; every site must be at that layer
            or above). Pays when the same prompts are run many times (several bases, layers or directions).
        grad: keep the graph (for training an intervention).
    """
    lm, edited = _unwrap(model)
    batch = encode(lm, base)
    sites = _as_list(at)
    ids = vocab_ids(lm, vocab)
    size = len(batch) if batch_size is None else as_int(batch_size, "batch_size", low=1, error=InputError)
    ivs = [as_intervention(v) for v in _as_list(via, len(sites))] if sites else []
    sources = list(sources) if sources is not None else [None] * len(sites)
    if not len(ivs) == len(sources) == len(sites):
        raise InputError(
            f"got {len(sites)} sites, {len(ivs)} interventions and {len(sources)} sources; expected one each"
        )
    edits = []  # (site, target, positions (B, k), intervention, source vectors (B, k, w) or None)
    for (site, target, pos), iv, src in zip(plan(lm, batch, sites), ivs, sources):
        iv.check(target.width)
        if iv.needs_source:
            if src is None:
                raise InputError(f"{type(iv).__name__} at {site!r} needs a source; pass source=...")
            if src.shape[:2] != pos.shape:
                raise InputError(
                    f"at {site!r}: the source gives {tuple(src.shape[:2])} (batch, positions) but the base needs "
                    f"{tuple(pos.shape)}; base and source batches must have the same size and the same number of "
                    "positions"
                )
        edits.append((site, target, pos, iv, src if iv.needs_source else None))
    read_at = (logits_at or last()).resolve(batch.attention_mask, batch.input_ids, lm.tokenizer)
    parts = []
    with torch.set_grad_enabled(grad), legacy("intervene", backend, full):
        for a in range(0, len(batch), size):
            sl = slice(a, a + size)
            part = batch if size >= len(batch) else Batch(batch.input_ids[sl], batch.attention_mask[sl])
            ops = _own_ops(edited, part)
            for site, target, pos, iv, src in edits:
                ops.append(Op(site, target, pos[sl], fn=_bind(iv, None if src is None else src[sl])))
            with prefix.replay(lm, range(a, a + len(part)), part) if prefix is not None else contextlib.nullcontext():
                parts.append(execute(lm, part, ops, logits_at=read_at[sl], vocab=ids).logits)
    logits = parts[0] if len(parts) == 1 else torch.cat(parts)
    if logits_at is None:
        logits = logits[:, -1]
    return DIIResult(logits, lm, ids)


def _bind(iv: Intervention, src):
    return lambda h: iv(h, src)


def interchange(
    model,
    base,
    source=None,
    *,
    at: Site | Sequence[Site],
    via=None,
    logits_at: Position | None = None,
    vocab=None,
    batch_size: int | None = None,
    grad: bool = False,
    backend: str | None = None,
    full: bool | None = None,
) -> DIIResult:
    """DII: run ``base`` with the ``via`` subspace at each site taken from ``source``'s run at that site.

    Example:
        >>> site = Site("resid_post", 1, last())
        >>> interchange(lm, base, source, at=site, vocab=[5, 6], batch_size=2).logits.shape   # (B, 2)
        torch.Size([4, 2])

    Args:
        base: prompts (list of str) or a tokenized batch.
        source: prompts of the same batch size; or a list with one source batch per site.
        at: a Site or a list of Sites (applied in one forward, in execution order).
        via: None (the whole vector: activation patching), a Basis, an Intervention, or a list per site.
        logits_at: positions whose logits are kept (default: the last token).
        vocab: token ids or words whose logits alone are computed (see :func:`intervene`).
        batch_size: rows a forward, for the source runs and the base runs alike (default: all at once).
        backend, full: deprecated; use ``with interp.engine.options(backend=..., full=...)`` (both backends run
            the same plan).
    """
    lm, _ = _unwrap(model)
    base_batch = encode(lm, base)
    sites = _as_list(at)
    if batch_size is not None:
        batch_size = as_int(batch_size, "batch_size", low=1, error=InputError)
    per_site = source if isinstance(source, (list, tuple)) and source and not isinstance(source[0], str) else None
    srcs = per_site if per_site is not None else [source] * len(sites)
    if len(srcs) != len(sites):
        raise InputError(f"got {len(srcs)} source batches for {len(sites)} sites; give one per site or one for all")
    ivs = [as_intervention(v) for v in _as_list(via, len(sites))]
    sources: list = [None] * len(sites)
    by_source: dict[int, list[int]] = {}
    for i, (s, iv) in enumerate(zip(srcs, ivs)):
        if iv.needs_source:
            if s is None:
                raise InputError(f"interchange at {sites[i]!r} needs a source batch; pass source=...")
            by_source.setdefault(id(s), []).append(i)
    # Validate everything (sizes, positions on both sides) before running anything.
    src_batches = {}
    for key, idx in by_source.items():
        src_batch = src_batches[key] = encode(lm, srcs[idx[0]])
        if len(src_batch) != len(base_batch):
            raise InputError(
                f"base has {len(base_batch)} examples but source has {len(src_batch)}; DII pairs them row by row, "
                "so give equally many"
            )
        plan(lm, base_batch, [sites[i] for i in idx])
        for i, (_, t, _p) in zip(idx, plan(lm, src_batch, [sites[i] for i in idx])):
            ivs[i].check(t.width)
    ids = vocab_ids(lm, vocab)  # checked before any run too
    with legacy("interchange", backend, full):
        for key, idx in by_source.items():
            reads = collect(model, src_batches[key], at=[sites[i] for i in idx], batch_size=batch_size)
            for i, r in zip(idx, reads):
                sources[i] = r
        return intervene(
            model,
            base_batch,
            at=sites,
            via=ivs,
            sources=sources,
            logits_at=logits_at,
            vocab=ids,
            batch_size=batch_size,
            grad=grad,
        )
