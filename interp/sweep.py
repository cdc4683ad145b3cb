"""DAS sweeps: fit an alignment at every (rank, layer, position) of a grid and score it: where is the variable?

Example:
    >>> sw = sweep_das(lm, train, test, layers=range(2), positions={"a": at(1), "last": last()}, steps=1)
    >>> sw.iia.shape       # a Grid (interp.grid): sw.iia and sw.iia_train are (ranks, layers, positions)
    torch.Size([1, 2, 2])
    >>> ax = sw.plot()

Under ``torchrun --nproc_per_node N`` the cells are shared out: rank ``r`` fits cells ``r, r + N, ...`` on its
own (one process per fit, :func:`interp.distributed.local`), and every rank gathers the same whole grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from tqdm.auto import tqdm

from . import distributed as _dist
from . import sites as _sites
from .batches import DASError, check_pairs, check_positions
from .causal import Pairs
from .das import DASConfig, DASResult, fit_das
from .grid import Grid
from .paircache import PairCache
from .positions import Position
from .sites import Site


@dataclass
class SweepResult(Grid):
    """A DAS sweep's :class:`interp.grid.Grid` of IIA that keeps what it fitted: ``results[(layer, position,
    rank)]`` is the cell's :class:`interp.das.DASResult` (basis, history, IIA), ready to save or reuse.

    Example:
        >>> sw = sweep_das(lm, train, test, layers=[1], positions={"last": last()}, ranks=[1, 2], steps=1)
        >>> sorted(sw.results), sw.results[(1, "last", 2)].rotation.shape
        ([(1, 'last', 1), (1, 'last', 2)], torch.Size([2, 32]))

    Under ``torchrun`` each rank keeps the results of the cells it fitted (the IIA grid is whole on every rank).
    """

    results: dict[tuple, DASResult] = field(default_factory=dict, repr=False)


def sweep_das(
    lm,
    train: Pairs,
    test: Pairs | None = None,
    *,
    layers: Sequence[int],
    positions: dict[str, Position] | Sequence[Position],
    component: str = "resid_post",
    ranks: Sequence[int] = (1,),
    config: DASConfig | None = None,
    progress: bool = True,
    cache: PairCache | None = None,
    **overrides,
) -> SweepResult:
    """Fit DAS at every (rank, layer, position) and score it: where is the variable?

    Example:
        >>> sw = sweep_das(lm, train, test, layers=range(2), positions={"a": at(1), "last": last()}, steps=1)
        >>> sw.best()          # the cell with the highest test IIA
        {'rank': 1, 'layer': 0, 'position': 'a', 'iia': 0.6...}
        >>> ax = sw.plot()

    ``config``/``overrides`` are :class:`DASConfig` fields used for every fit (keep ``steps`` small on CPU;
    ``score_train=False`` skips the training-set IIA, leaving ``iia_train`` NaN). The sources of each site and
    the prefix streams of each layer are collected once for the whole sweep (``cache``: an
    :class:`interp.paircache.PairCache` of ``lm``, made here if not given; pass one to share it further).

    Returns:
        A :class:`SweepResult`: a :class:`interp.grid.Grid` of ``iia`` (test IIA, train IIA where no test set was
        given) over axes ``ranks`` x ``layers`` x ``positions``, with ``iia_train`` beside it, and the fitted
        :class:`interp.das.DASResult` of each cell in ``results[(layer, position, rank)]``.
    """
    if not isinstance(positions, dict):
        positions = {repr(p): p for p in positions}
    layers, ranks = [int(x) for x in layers], [int(r) for r in ranks]
    if not layers or not positions or not ranks:
        raise DASError(f"empty grid: layers={layers}, positions={list(positions)}, ranks={ranks}")
    grid = [(r, l, p) for r in ranks for l in layers for p in positions]
    sites = {(l, p): Site(component, l, positions[p]) for l in layers for p in positions}
    for s in sites.values():  # every site and position checked before the first fit
        _sites.resolve(lm, s)
        check_positions(lm, check_pairs(train), s)
    shape = (len(ranks), len(layers), len(positions))
    out, out_train = torch.full(shape, float("nan")), torch.full(shape, float("nan"))
    cfg = replace(config or DASConfig(), progress=False, **overrides)
    cache = cache if cache is not None else PairCache(lm, batch_size=cfg.eval_batch_size)
    cells = _dist.shard(list(enumerate(grid)))  # all of them in one process; rank r's r, r + N, ... under torchrun
    bar = tqdm(cells, desc="DAS sweep", disable=not (progress and _dist.is_main()))
    mine, results = [], {}
    for c, (r, l, p) in bar:
        with _dist.local():  # this rank fits its cells alone
            res = fit_das(lm, train, at=sites[(l, p)], rank=r, test=test, config=cfg, cache=cache)
        results[(l, p, r)] = res
        nan = float("nan")
        score = res.iia_test if res.iia_test is not None else res.iia_train
        mine.append((c, nan if res.iia_train is None else res.iia_train, nan if score is None else score))
        bar.set_postfix(layer=l, pos=p, rank=r, iia=f"{float(score):.2f}")
    for c, score_train, score in (cell for part in _dist.gather(mine) for cell in part):
        r, l, p = grid[c]
        i = (ranks.index(r), layers.index(l), list(positions).index(p))
        out_train[i], out[i] = score_train, score
    axes = {"ranks": ranks, "layers": layers, "positions": list(positions)}
    return SweepResult("iia", out, axes, {"iia_train": out_train}, {"component": component}, results=results)


__all__ = ["SweepResult", "sweep_das"]
