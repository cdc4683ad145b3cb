"""Activation patching / DII grids over layers x positions, scored by normalised logit difference.

Example:
    >>> pp = Pairs.of(base, source, base_answer=[5] * 4, source_answer=[6] * 4)   # token ids and answer ids
    >>> grid = patch_grid(lm, pp, layers=range(2), positions={"first": at(0), "last": last()})
    >>> grid.effect.shape                  # (n_layers, n_positions)
    torch.Size([2, 2])
    >>> grid.best()                        # the last layer at the last token carries the whole answer
    {'layer': 1, 'position': 'last', 'effect': 1.0}
    >>> ax = grid.plot()                   # plot_patching_grid(grid.effect, grid.layers, grid.positions)

On the real model, ``patch_grid(interp.load(), ioi_pairs(32), positions=IOI_POSITIONS)`` patches IOI prompts
(:mod:`interp.tasks.ioi`) at all 18 layers and 15 token roles.

With ``LD = logit(base answer) - logit(source answer)`` averaged over pairs, the effect of patching a site is

    effect = (LD_base - LD_patched) / (LD_base - LD_source)

so 0 means no change from the base run and 1 means the base run's logit difference fully flipped to the
source's (Wang et al. 2022; Heimersheim & Nanda 2024). The source run is done once, reading every site in
one trace; by default (``method="cached"``) one clean base forward keeps its KV cache, and each site then runs
only the layers from its own and the tokens from its first patched one (:mod:`interp.fastpatch`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping

import torch
from tqdm.auto import tqdm

from . import fastpatch
from .causal import Pairs
from .dii import DIIResult, intervene, plan
from .engine import Op, execute
from .grid import Grid
from .inputs import InputError, encode, token_ids
from .interventions import Interchange, as_intervention
from .positions import Position, last
from .sites import Site

METHODS = ("cached", "full")


def _cells(lm, pairs, base, sites, layers, clean: DIIResult):
    """A function giving the per-pair logit differences (B,) of many cells on the cached path, or None where the
    cached path cannot run (then every cell runs in full).

    Logits are computed over the answer tokens only. Cells of one layer whose windows start at nearby columns run
    stacked in one forward (:func:`interp.fastpatch.plan_groups`); at ``resid_post`` the patched layer itself is
    not recomputed (its clean output is kept and edited). The cached path is checked once: an unpatched run from
    the highest layer and the earliest position of the grid must give the clean run's logit differences (else a
    warning, and the full path).
    """
    why = fastpatch.supported(lm, sites[0].component)
    if why is not None:
        return None  # the documented fallbacks (fastpatch.supported) are silent
    n = len(base)
    a, b = token_ids(lm, pairs.base_answer, n), token_ids(lm, pairs.source_answer, n)
    vocab = torch.unique(torch.cat([a, b])).to(lm.device)  # sorted
    ia, ib = torch.searchsorted(vocab.cpu(), a), torch.searchsorted(vocab.cpu(), b)
    rows, read_at = torch.arange(n), last().resolve(base.attention_mask)
    own = sites[0].component == "resid_post"  # the site is the layer's output: that layer need not run
    kept = fastpatch.CleanRun.of(lm, base, upto=max(layers) + own)
    planned = {id(s): (t, p) for s, t, p in plan(lm, base, sites)}

    def op(site, iv, src):
        target, pos = planned[id(site)]
        return Op(site, target, pos, fn=lambda h: iv(h, src))

    def lds(group, layer):  # [(site, iv, src)] at one layer -> [(B,)]
        lg = kept.stacked(lm, [[op(*c)] for c in group], skip=layer + own, logits_at=read_at, vocab=vocab).cpu()
        return [g[rows, ia] - g[rows, ib] for g in lg]

    def cells(items, done=lambda k: None):
        """``items``: (site, intervention, source vectors, base vectors) per cell."""
        out = [None] * len(items)
        by_layer: dict[int, list[int]] = {}
        for i, (site, iv, src, own_vectors) in enumerate(items):
            if isinstance(iv, Interchange) and torch.equal(src, own_vectors):
                out[i] = clean_ld  # the source equals the base at every patched slot: the cell is the clean run
                done(1)
            else:
                by_layer.setdefault(site.layer, []).append(i)
        T = base.input_ids.shape[1]
        for layer, idx in by_layer.items():
            starts = [int(planned[id(items[i][0])][1].min()) for i in idx]
            for group in fastpatch.plan_groups(starts, rows=n, tokens=T):
                for i, ld in zip(group, lds([items[idx[g]][:3] for g in group], layer)):
                    out[idx[i]] = ld
                done(len(group))
        return out

    clean_ld = logit_diff(clean, pairs)
    top = max(sites, key=lambda s: s.layer)
    target, pos = planned[id(top)]
    p0 = min(int(p.min()) for _, p in planned.values())
    unpatched = Op(top, target, torch.full_like(pos, p0), fn=lambda h: h)
    lg = kept.stacked(lm, [[unpatched]], skip=top.layer + own, logits_at=read_at, vocab=vocab)[0].cpu()
    err = (lg[rows, ia] - lg[rows, ib] - clean_ld).abs()
    if err.max().item() <= 1e-4 * max(1.0, clean.logits.abs().max().item()):
        return cells
    msg = f"an unpatched cached run differs from the clean run by {err.max().item():.2e}; running every cell in full"
    warnings.warn(f"patch_grid: {msg}", stacklevel=3)
    return None


def logit_diff(result: DIIResult, pairs) -> torch.Tensor:
    """Per-pair ``logit(base answer) - logit(source answer)`` of a run, shape (B,)."""
    return result.logit_diff(pairs.base_answer, pairs.source_answer)


def patch_grid(
    lm,
    pairs,
    *,
    layers: Iterable[int] | None = None,
    positions: Mapping[str, Position] | None = None,
    component: str = "resid_post",
    via=None,
    method: str = "cached",
    progress: bool = True,
) -> Grid:
    """Patch each (layer, position) from source into base and measure the normalised logit-difference effect.

    Args:
        pairs: :class:`interp.causal.Pairs` with one source per example (e.g. :func:`interp.tasks.ioi_pairs`,
            or ``Pairs.of(base, source, base_answer=..., source_answer=...)``); the same data ``fit_das`` takes.
        layers: layers to patch (default: all).
        positions: names -> positions (default: ``{"last": last()}``).
        component: the site component (``resid_post``, ``attn_out``, ...).
        via: None for the whole vector (activation patching), a Basis for a DII along a subspace, or a dict
            ``{(layer, position_name): Basis}`` for a different subspace at each site.
        method: ``"cached"`` (default): one clean base forward keeps its KV cache and layer outputs, and each
            cell runs only the layers from its own and the tokens from its first patched one, with logits over
            the answer tokens only (:mod:`interp.fastpatch`). It equals ``"full"`` (a whole base forward per
            cell, kept for comparison) within float rounding (tests/test_fast_patching.py: 1e-4 on effects). A
            cell whose source vectors equal the base's at every patched slot (e.g. a shared first token) is the
            clean run and is not run (interchanges only; an ablation such as ``Zero()`` always runs). It
            falls back to ``"full"`` by itself for ``attn_pattern`` (its vectors span the key columns) and
            ``Site.module`` sites, models outside the site table, models with edits of their own (a ReFT), and
            whenever an unpatched windowed run does not reproduce the clean run (checked once per grid; a warning).

    Returns:
        A :class:`interp.grid.Grid` of ``effect`` (n_layers, n_positions), with ``component``, ``method`` (the
        one that ran), ``clean_accuracy``, ``base_logit_diff``, ``source_logit_diff`` and ``n_pairs`` as metadata.
    """
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}; got {method!r}")
    layers = list(range(lm.n_layers) if layers is None else layers)
    positions = dict(positions or {"last": last()})
    if not layers or not positions:
        raise InputError(f"need at least one layer and one position; got layers={layers}, positions={positions}")
    if not isinstance(pairs, Pairs):
        raise InputError(
            f"pairs is a {type(pairs).__name__}; expected interp.Pairs, e.g. ioi_pairs(16) or "
            "Pairs.of(base, source, base_answer=..., source_answer=...)"
        )
    if len(pairs) == 0:
        raise InputError("got no base/source pairs; expected at least one")
    base, source = encode(lm, pairs.base), encode(lm, pairs.source)
    if len(base) != len(source):
        raise InputError(f"{len(base)} base prompts but {len(source)} source prompts; pair them one to one")
    sites = [Site(component, layer, pos) for layer in layers for pos in positions.values()]
    keys = [(layer, name) for layer in layers for name in positions]
    if isinstance(via, Mapping):
        missing = [k for k in keys if k not in via]
        if missing:
            raise InputError(f"via has no basis for sites {missing[:4]}; expected a key (layer, position) per site")
        ivs = [as_intervention(via[k]) for k in keys]
    else:
        ivs = [as_intervention(via)] * len(sites)
    for (_, target, _), iv in zip(plan(lm, base, sites), ivs):  # every site and position checked on both sides
        iv.check(target.width)
    with torch.no_grad():  # both runs read every site once
        reads = lambda b: [Op(s, t, p, read=True) for s, t, p in plan(lm, b, sites)]  # noqa: E731
        runs = [execute(lm, b, reads(b), logits_at=last().resolve(b.attention_mask)) for b in (base, source)]
    (base_vectors, base_res), (src_vectors, src_res) = ((r.reads, DIIResult(r.logits[:, -1], lm)) for r in runs)
    ld_base = logit_diff(base_res, pairs).mean().item()
    ld_source = logit_diff(src_res, pairs).mean().item()
    denom = ld_base - ld_source
    if abs(denom) < 1e-6:
        raise InputError("base and source runs have the same logit difference; the effect is undefined")
    cells = _cells(lm, pairs, base, sites, layers, base_res) if method == "cached" else None
    bar = tqdm(total=len(sites), desc=f"patching {component}", disable=not progress)
    with torch.no_grad():
        if cells is not None:
            lds = cells(list(zip(sites, ivs, src_vectors, base_vectors)), done=bar.update)
        else:
            lds = []
            for site, src, iv in zip(sites, src_vectors, ivs):
                lds.append(logit_diff(intervene(lm, base, at=site, via=iv, sources=[src]), pairs))
                bar.update()
    effect = torch.tensor([(ld_base - ld.mean().item()) / denom for ld in lds]).reshape(len(layers), len(positions))
    bar.close()
    meta = dict(
        component=component,
        method="cached" if cells is not None else "full",
        clean_accuracy=base_res.accuracy(pairs.base_answer),
        base_logit_diff=ld_base,
        source_logit_diff=ld_source,
        n_pairs=len(pairs),
    )
    return Grid("effect", effect, {"layers": layers, "positions": list(positions)}, meta=meta)
