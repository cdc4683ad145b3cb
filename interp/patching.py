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


def _cells(lm, base, sites, layers, clean: torch.Tensor, vocab: torch.Tensor, check, scale: float):
    """A function giving the logits (B, len(vocab)) over the answer tokens of many cells on the cached path, or
    None where the cached path cannot run (then every cell runs in full).

    Cells of one layer whose windows start at nearby columns run stacked in one forward
    (:func:`interp.fastpatch.plan_groups`); at ``resid_post`` the patched layer itself is not recomputed (its clean
    output is kept and edited). The cached path is checked once: an unpatched run from the highest layer and the
    earliest position of the grid must give the clean run's logit differences (``check`` gives the largest
    difference, compared with ``scale``, the clean logits' largest magnitude; else a warning, and the full path).
    """
    why = fastpatch.supported(lm, sites[0].component)
    if why is not None:
        return None  # the documented fallbacks (fastpatch.supported) are silent
    read_at = last().resolve(base.attention_mask)
    own = sites[0].component == "resid_post"  # the site is the layer's output: that layer need not run
    kept = fastpatch.CleanRun.of(lm, base, upto=max(layers) + own)
    planned = {id(s): (t, p) for s, t, p in plan(lm, base, sites)}
    ids = vocab.to(lm.device)

    def op(site, iv, src):
        target, pos = planned[id(site)]
        return Op(site, target, pos, fn=lambda h: iv(h, src))

    def logits(group, layer):  # [(site, iv, src)] at one layer -> [(B, V')]
        return list(kept.stacked(lm, [[op(*c)] for c in group], skip=layer + own, logits_at=read_at, vocab=ids).cpu())

    def cells(items, done=lambda k: None):
        """``items``: (site, intervention, source vectors, base vectors) per cell."""
        out = [None] * len(items)
        by_layer: dict[int, list[int]] = {}
        for i, (site, iv, src, own_vectors) in enumerate(items):
            if isinstance(iv, Interchange) and torch.equal(src, own_vectors):
                out[i] = clean  # the source equals the base at every patched slot: the cell is the clean run
                done(1)
            else:
                by_layer.setdefault(site.layer, []).append(i)
        T = base.input_ids.shape[1]
        for layer, idx in by_layer.items():
            starts = [int(planned[id(items[i][0])][1].min()) for i in idx]
            for group in fastpatch.plan_groups(starts, rows=len(base), tokens=T):
                for i, lg in zip(group, logits([items[idx[g]][:3] for g in group], layer)):
                    out[idx[i]] = lg
                done(len(group))
        return out

    top = max(sites, key=lambda s: s.layer)
    target, pos = planned[id(top)]
    p0 = min(int(p.min()) for _, p in planned.values())
    unpatched = Op(top, target, torch.full_like(pos, p0), fn=lambda h: h)
    err = check(kept.stacked(lm, [[unpatched]], skip=top.layer + own, logits_at=read_at, vocab=ids)[0].cpu())
    if err <= 1e-4 * max(1.0, scale):
        return cells
    msg = f"an unpatched cached run differs from the clean run by {err:.2e}; running every cell in full"
    warnings.warn(f"patch_grid: {msg}", stacklevel=3)
    return None


def logit_diff(result: DIIResult, pairs) -> torch.Tensor:
    """Per-pair ``logit(base answer) - logit(source answer)`` of a run, shape (B,)."""
    return result.logit_diff(pairs.base_answer, pairs.source_answer)


def _answers(lm, pairs: Pairs, answers, n: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Answer pairs by name -> (base answer ids (n,), source answer ids (n,)), checked before any run."""
    if answers is None:
        return {"": (token_ids(lm, pairs.base_answer, n).cpu(), token_ids(lm, pairs.source_answer, n).cpu())}
    if not isinstance(answers, Mapping) or not answers:
        raise InputError(
            f"answers is {answers!r}; expected a non-empty dict name -> (base answer, source answer), each a word, "
            "a token id or one per pair, e.g. {'IO vs S': (pairs.base_answer, pairs.source_answer)}"
        )
    out = {}
    for name, both in answers.items():
        if not isinstance(both, (tuple, list)) or len(both) != 2:
            raise InputError(f"answers[{name!r}] is {both!r}; expected a (base answer, source answer) pair")
        out[str(name)] = (token_ids(lm, both[0], n).cpu(), token_ids(lm, both[1], n).cpu())
    return out


def patch_grid(
    lm,
    pairs: Pairs,
    *,
    layers: Iterable[int] | None = None,
    positions: Mapping[str, Position] | None = None,
    component: str = "resid_post",
    via=None,
    method: str = "cached",
    answers: Mapping[str, tuple] | None = None,
    progress: bool = True,
) -> Grid:
    """Patch each (layer, position) from source into base and measure the normalised logit-difference effect.

    Example:
        >>> pp = Pairs.of(base, source, base_answer=[5] * 4, source_answer=[6] * 4)
        >>> grid = patch_grid(lm, pp, positions={"last": last()}, progress=False)
        >>> grid.per_pair.shape, torch.allclose(grid.per_pair.mean(-1), grid.effect)   # (layers, positions, pairs)
        (torch.Size([2, 1, 4]), True)
        >>> two = patch_grid(lm, pp, answers={"5-6": (5, 6), "7-8": (7, 8)}, progress=False)   # one run, two scores
        >>> two.effect.shape, two.answers
        (torch.Size([2, 2, 1]), ['5-6', '7-8'])

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
        answers: several answer pairs scored from the same runs: ``{name: (base answer, source answer)}``, each
            a word, a token id, or one per pair (default: the pairs' own ``base_answer`` / ``source_answer``).
            The grid then has a leading ``answers`` axis (``grid.plot(answer=name)``).

    Returns:
        A :class:`interp.grid.Grid` of ``effect`` (n_layers, n_positions), or (n_answers, n_layers,
        n_positions) with ``answers``; ``per_pair`` (the same axes and one over the pairs): each pair's
        ``(LD_base_i - LD_patched_i) / (LD_base - LD_source)`` with the grid's shared denominator, so its mean
        over pairs is the effect; ``logit_diffs`` (same shape): each pair's patched logit difference. Metadata:
        ``component``, ``method`` (the one that ran), ``clean_accuracy``, ``base_logit_diff``,
        ``source_logit_diff`` (one per answer pair with ``answers``), ``base_logit_diffs`` and
        ``source_logit_diffs`` (per pair, as lists) and ``n_pairs``.
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
    n = len(base)
    scored = _answers(lm, pairs, answers, n)
    vocab = torch.unique(torch.cat([t for both in scored.values() for t in both]))  # sorted: column = rank
    cols = {k: (torch.searchsorted(vocab, a), torch.searchsorted(vocab, b)) for k, (a, b) in scored.items()}
    rows = torch.arange(n)
    lds = lambda lg: torch.stack([lg[rows, a] - lg[rows, b] for a, b in cols.values()])  # noqa: E731  (A, n)
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
    clean = base_res.logits.float().cpu()[:, vocab]
    ld_base, ld_source = lds(clean), lds(src_res.logits.float().cpu()[:, vocab])  # (A, n)
    denom = ld_base.mean(-1) - ld_source.mean(-1)  # (A,)
    flat = [k for k in scored if abs(float(denom[list(scored).index(k)])) < 1e-6]
    if flat:
        which = "" if answers is None else f" for answers {flat}"
        raise InputError(f"base and source runs have the same logit difference{which}; the effect is undefined")
    check = lambda lg: float((lds(lg.float()) - ld_base).abs().max())  # noqa: E731
    scale = base_res.logits.abs().max().item()
    cells = _cells(lm, base, sites, layers, clean, vocab, check, scale) if method == "cached" else None
    bar = tqdm(total=len(sites), desc=f"patching {component}", disable=not progress)
    with torch.no_grad():
        if cells is not None:
            logits = cells(list(zip(sites, ivs, src_vectors, base_vectors)), done=bar.update)
        else:
            logits = []
            for site, src, iv in zip(sites, src_vectors, ivs):
                logits.append(intervene(lm, base, at=site, via=iv, sources=[src], vocab=vocab).logits.cpu())
                bar.update()
    bar.close()
    shape = (len(layers), len(positions), n)
    patched = torch.stack([lds(lg.float()) for lg in logits], 1).reshape(len(scored), *shape)  # (A, L, P, n)
    per_pair = (ld_base[:, None, None, :] - patched) / denom[:, None, None, None]
    effect = per_pair.mean(-1)
    axes = {"layers": layers, "positions": list(positions)}
    one = answers is None
    if one:
        per_pair, patched, effect = per_pair[0], patched[0], effect[0]
    else:
        axes = {"answers": list(scored)} | axes
    values = lambda t: t[0].tolist() if one else t.tolist()  # noqa: E731
    meta = dict(
        component=component,
        method="cached" if cells is not None else "full",
        clean_accuracy=base_res.accuracy(pairs.base_answer),
        base_logit_diff=values(ld_base.mean(-1)),
        source_logit_diff=values(ld_source.mean(-1)),
        base_logit_diffs=values(ld_base),
        source_logit_diffs=values(ld_source),
        n_pairs=n,
    )
    return Grid("effect", effect, axes, meta=meta, per_pair=per_pair, pair_extra={"logit_diffs": patched})
