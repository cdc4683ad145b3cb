"""Attribution patching (AtP): every patching effect of a grid, to first order, from two forwards and a backward.

Example:
    >>> pp = Pairs.of(base, source, base_answer=[5] * 4, source_answer=[6] * 4)   # token ids and answer ids
    >>> grid = attribution_patch(lm, pp, layers=range(2), positions={"first": at(0), "last": last()})
    >>> grid.effect.shape                  # (n_layers, n_positions), the same Grid that patch_grid returns
    torch.Size([2, 2])
    >>> grid.best()["layer"], grid.best()["position"]
    (1, 'last')
    >>> heads = attribution_patch(lm, pp, component="head")            # every head, at the last token
    >>> heads.effect.shape, heads.axes["heads"]                        # (n_layers, n_heads, n_positions)
    (torch.Size([2, 4, 1]), [0, 1, 2, 3])
    >>> custom = attribution_patch(lm, base, source, metric=lambda logits: logits[:, 5])   # any metric of logits

With ``a`` a site's activation, ``m`` the metric (by default the logit difference between the base and the source
answer at the last token, averaged over pairs) and ``g = dm/da`` at the base run, patching ``a_source`` into the
base run changes the metric by ``m(a_source) - m(a_base) = (a_source - a_base) . g + O(|a_source - a_base|^2)``.
AtP (Nanda 2023; Kramar et al. 2024, "AtP*") keeps the first-order term and normalises it as
:func:`interp.patching.patch_grid` does, so the two grids compare cell for cell:

    effect ~ -(a_source - a_base) . g / (m_base - m_source)

One base forward keeps every site's activation with its gradient, one source forward reads the same sites, one
backward gives ``g`` everywhere: the cost of a whole grid is about three forwards, where exact patching pays one
forward per cell. The estimate is exact where the metric is linear in the site and degrades with curvature: on IOI
with Gemma-3-270M it fails where a patch swaps a name in the early residual stream (attention saturation; see
:func:`compare_with_patching`); ``method="atp*"`` (:mod:`interp.atp_star`) recomputes attention exactly there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from . import atp_star
from . import sites as _sites
from .causal import Pairs
from .engine import Op, execute, legacy
from .grid import Grid
from .inputs import InputError, encode, token_ids
from .patching import patch_grid
from .positions import Position, last
from .sites import Site

Metric = Callable[[torch.Tensor], torch.Tensor]  # logits (B, V) at the last token -> (B,) or a scalar
METHODS = ("atp", "atp*")


def attribution_patch(
    lm,
    base,
    source=None,
    *,
    layers: Iterable[int] | None = None,
    positions: Mapping[str, Position] | None = None,
    component: str = "resid_post",
    metric: Metric | None = None,
    backend: str | None = None,
    method: str = "atp",
    grad_drop: bool = False,
) -> Grid:
    """First-order estimate of :func:`interp.patching.patch_grid`'s effects, from two forwards and one backward.

    Example:
        >>> pp = Pairs.of(base, source, base_answer=[5] * 4, source_answer=[6] * 4)
        >>> atp = attribution_patch(lm, pp, positions={"last": last()})
        >>> atp.effect.shape, atp.method                                # (n_layers, n_positions)
        (torch.Size([2, 1]), 'atp')

    Args:
        base: :class:`interp.causal.Pairs` (e.g. :func:`interp.tasks.ioi_pairs`, or ``Pairs.of(base, source,
            base_answer=..., source_answer=...)``; then leave ``source`` out), or base prompts / token ids.
        source: source prompts, one per base prompt (when ``base`` is not pairs).
        layers: layers to score (default: all).
        positions: names -> positions (default: ``{"last": last()}``); each resolves on base and source alike.
        component: any site component (``resid_pre``, ``resid_mid``, ``resid_post``, ``attn_out``, ``mlp_out``,
            ``q``, ``k``, ``v``, ``mlp_hidden``, ``attn_pattern`` (a query row of every head's probabilities; base
            and source of the same length), or ``head``: every head of each layer).
        metric: a function of the last-token logits (B, V) returning (B,) or a scalar (averaged over rows);
            default: ``logit(base answer) - logit(source answer)`` per pair, as :func:`patch_grid` scores.
        backend: deprecated; use ``with interp.engine.options(backend=...)`` (the same plan either way).
        method: ``"atp"`` (first order everywhere) or ``"atp*"`` (:mod:`interp.atp_star`: the QK fix; one token
            per position; not for ``head`` and ``attn_pattern``).
        grad_drop: with ``"atp*"``, also GradDrop's magnitudes ``grid.graddrop`` (to rank cells).

    Returns:
        A :class:`interp.grid.Grid` of ``effect`` (n_layers, n_positions), or (n_layers, n_heads, n_positions) for
        ``component="head"``, normalised like ``patch_grid`` (0 = the base run, 1 = the source run). Metadata:
        ``component``, ``method`` (``"atp"``), ``base_metric``, ``source_metric``, ``n_pairs``, and with the default
        metric ``clean_accuracy``, ``base_logit_diff`` and ``source_logit_diff``.
    """
    if method not in METHODS:
        raise InputError(f"method is {method!r}; expected one of {METHODS} ('atp*': AtP with the QK fix)")
    if grad_drop and method != "atp*":
        raise InputError(f"grad_drop={grad_drop!r} needs method='atp*' (GradDrop is part of AtP*); got {method!r}")
    with legacy("attribution_patch", backend, None):
        run = _attribution(lm, base, source, layers, positions, component, metric, method, grad_drop)
    return run.grid()


@dataclass
class _Run:
    """What one AtP pass leaves: per layer the activations (B, T, w) of both runs and the gradient at the base."""

    layers: list[int]
    positions: dict[str, tuple[torch.Tensor, torch.Tensor]]  # name -> (base columns (B, k), source columns (B, k))
    a_base: list[torch.Tensor]
    a_source: list[torch.Tensor]
    grad: list[torch.Tensor]
    m_base: float
    m_source: float
    component: str
    n_heads: int | None
    meta: dict
    method: str = "atp"
    delta: torch.Tensor | None = None  # AtP*: the change of the mean metric per cell, computed in interp.atp_star
    graddrop: torch.Tensor | None = None  # AtP* with GradDrop: the mean |estimate| over dropped layers per cell

    def first_order(self) -> torch.Tensor:
        """``(a_source - a_base) . g`` per cell: (L, P) or (L, H, P) for heads (the change in the mean metric)."""
        rows = None
        cells = []
        for a_b, a_s, g in zip(self.a_base, self.a_source, self.grad):
            per_pos = []
            for cb, cs in self.positions.values():
                rows = torch.arange(cb.shape[0], device=a_b.device)[:, None] if rows is None else rows
                diff = (a_s[rows, cs.to(a_s.device)] - a_b[rows, cb.to(a_b.device)]).double()  # (B, k, w)
                prod = diff * g[rows, cb.to(g.device)].double()
                if self.n_heads is not None:  # (B, k, n_heads * head_dim) -> (n_heads,)
                    per_pos.append(prod.reshape(*prod.shape[:2], self.n_heads, -1).sum((0, 1, 3)))
                else:
                    per_pos.append(prod.sum())
            cells.append(torch.stack(per_pos, -1))
        return torch.stack(cells).float().cpu()

    def grid(self) -> Grid:
        denom = self.m_base - self.m_source
        if abs(denom) < 1e-6:
            raise InputError("base and source runs have the same metric value; the normalised effect is undefined")
        effect = -(self.first_order() if self.delta is None else self.delta) / denom
        axes: dict[str, list] = {"layers": self.layers}
        if self.n_heads is not None:
            axes["heads"] = list(range(self.n_heads))
        axes["positions"] = list(self.positions)
        meta = dict(component=self.component, method=self.method, base_metric=self.m_base, source_metric=self.m_source)
        extra = {} if self.graddrop is None else {"graddrop": self.graddrop / abs(denom)}
        return Grid("effect", effect, axes, extra=extra, meta=meta | self.meta)


def _attribution(lm, base, source, layers, positions, component, metric, method="atp", grad_drop=False) -> _Run:
    base_in, source_in, answers = _split_pairs(base, source)
    layers = list(range(lm.n_layers) if layers is None else layers)
    positions = dict(positions or {"last": last()})
    if not layers or not positions:
        raise InputError(f"need at least one layer and one position; got layers={layers}, positions={positions}")
    b_batch, s_batch = encode(lm, base_in), encode(lm, source_in)
    if len(b_batch) != len(s_batch):
        raise InputError(f"{len(b_batch)} base prompts but {len(s_batch)} source prompts; pair them one to one")
    if len(b_batch) == 0:
        raise InputError("got no base/source pairs; expected at least one")
    if metric is None:
        if answers is None:
            raise InputError(
                "no metric and no answers: pass pairs with base_answer and source_answer (e.g. ioi_pairs(16)), "
                "or metric=lambda logits: ... (a function of the last-token logits (B, V))"
            )
        ia, ib = (token_ids(lm, a, len(b_batch)) for a in answers)
        metric = _logit_diff(ia, ib)
    targets = [_target(lm, component, layer) for layer in layers]  # every site checked before any forward
    cols = {}
    for name, pos in positions.items():
        if not isinstance(pos, Position):
            raise InputError(f"position {name!r} is {pos!r}; expected a Position such as last() or at(3)")
        cb = pos.resolve(b_batch.attention_mask, b_batch.input_ids, lm.tokenizer)
        cs = pos.resolve(s_batch.attention_mask, s_batch.input_ids, lm.tokenizer)
        if cb.shape != cs.shape:
            raise InputError(
                f"position {name!r} ({pos!r}) gives {cb.shape[1]} tokens per base prompt but {cs.shape[1]} per "
                "source prompt; patching pairs them one to one"
            )
        cols[name] = (cb, cs)
    if method == "atp*":
        return _star(lm, b_batch, s_batch, metric, layers, cols, component, grad_drop)

    # One source forward: every site, at every column; the metric at its last token.
    s_ops = [Op(None, t, _every_column(s_batch), read=True) for t in targets]
    with torch.no_grad():
        src = execute(lm, s_batch, s_ops, logits_at=last().resolve(s_batch.attention_mask))
        m_source = _mean(metric(src.logits[:, -1])).item()

    # One base forward that adds a zero (B, T, w) tensor at each site: d metric / d zero = d metric / d activation.
    T = b_batch.input_ids.shape[1]
    zeros = [
        torch.zeros(_shape(t, len(b_batch), T), device=lm.device_at(t.path), dtype=lm.dtype, requires_grad=True)
        for t in targets
    ]
    b_ops = [Op(None, t, _every_column(b_batch), fn=_adder(z), read=True) for t, z in zip(targets, zeros)]
    with torch.enable_grad():
        out = execute(lm, b_batch, b_ops, logits_at=last().resolve(b_batch.attention_mask))
        logits = out.logits[:, -1]
        m = _mean(metric(logits))
        if not m.requires_grad:
            raise InputError("the metric does not depend on the logits it is given; AtP needs a differentiable metric")
        # One backward. A zero the metric never reaches (e.g. a site after the last one that matters) gets 0.
        grads = torch.autograd.grad(m, zeros, allow_unused=True)
    grads = [torch.zeros_like(z) if g is None else g for g, z in zip(grads, zeros)]

    meta = {"n_pairs": len(b_batch)}
    if isinstance(metric, _logit_diff):
        meta |= dict(clean_accuracy=metric.accuracy(logits), base_logit_diff=m.item(), source_logit_diff=m_source)
    return _Run(
        layers=layers,
        positions=cols,
        a_base=[r.detach() for r in out.reads],
        a_source=src.reads,
        grad=grads,
        m_base=m.item(),
        m_source=m_source,
        component=component,
        n_heads=lm.spec.n_heads if component == "head" else None,
        meta=meta,
    )


def _star(lm, b_batch, s_batch, metric, layers, cols, component, grad_drop) -> _Run:
    read = metric.narrow() if isinstance(metric, _logit_diff) else None  # patched runs: the answers' logits only
    got = atp_star.grid_effects(lm, b_batch, s_batch, metric, layers, cols, component, grad_drop, read)
    delta, graddrop, m_base, m_source, logits = got
    meta = {"n_pairs": len(b_batch), "grad_drop": grad_drop}
    if isinstance(metric, _logit_diff):  # as the AtP run's metadata
        meta |= dict(clean_accuracy=metric.accuracy(logits), base_logit_diff=m_base, source_logit_diff=m_source)
    return _Run(layers, cols, [], [], [], m_base, m_source, component, None, meta, "atp*", delta, graddrop)


class _logit_diff:
    """The default metric: ``logit(a) - logit(b)`` per row (B,), with the answer ids kept for the metadata."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        self.a, self.b = a, b

    def accuracy(self, logits: torch.Tensor) -> float:
        return (logits.argmax(-1) == self.a.to(logits.device)).float().mean().item()

    def narrow(self):  # the same metric over the answers' logits only, and their ids
        vocab = torch.unique(torch.cat([self.a, self.b]).cpu())
        return _logit_diff(*(torch.searchsorted(vocab, x.cpu()) for x in (self.a, self.b))), vocab

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(logits.shape[0], device=logits.device)
        return logits[rows, self.a.to(logits.device)] - logits[rows, self.b.to(logits.device)]


def _split_pairs(base, source):
    """``(base inputs, source inputs, (base answers, source answers) or None)`` from Pairs or from two inputs."""
    if source is None:
        if not isinstance(base, Pairs):
            raise InputError(
                f"got base of type {type(base).__name__} and no source; pass interp.Pairs (e.g. ioi_pairs(16), or "
                "Pairs.of(base, source, base_answer=..., source_answer=...)) or base and source prompts: "
                "attribution_patch(lm, base, source, metric=...)"
            )
        return base.base, base.source, (base.base_answer, base.source_answer)
    return base, source, None


def _target(lm, component: str, layer: int) -> _sites.Target:
    """Where a component of a layer is read; for ``head``, the whole input of the output projection (all heads)."""
    if component == "head":
        t = _sites.resolve(lm, Site("head", layer, head=0))
        return _sites.Target(t.path, t.io, None, t.n_heads, t.n_heads * t.width)
    if component == "module":
        raise InputError("attribution_patch scores components of layers; 'module' sites have no layer to sweep")
    return _sites.resolve(lm, Site(component, layer))


def _shape(t: _sites.Target, B: int, T: int) -> tuple[int, ...]:
    """What a site gives at every column: (B, T, w), or for attention probabilities the query rows (B, T, H, T)."""
    return (B, T, t.n_heads, T) if t.pattern else (B, T, t.width)


def _every_column(batch) -> torch.Tensor:
    return torch.arange(batch.input_ids.shape[1], device=batch.input_ids.device).expand(len(batch), -1)  # (B, T)


def _adder(zero: torch.Tensor):
    return lambda h: h + zero  # (B, T, w): the value is unchanged, the gradient reaches ``zero``


def _mean(m: torch.Tensor) -> torch.Tensor:
    m = torch.as_tensor(m)
    return m.float().mean() if m.dim() else m.float()


@dataclass
class Comparison:
    """AtP (or AtP*: ``atp.method``) and exact patching of one component over the same grid: agreement, and where
    they part.

    Attributes:
        pearson: correlation of the two grids' effects over all cells.
        overlap: of the ``k`` cells with the largest ``|exact effect|``, how many are among AtP's top ``k`` (by
            ``|effect|``, or GradDrop's magnitudes where the grid has them).
        atp_seconds, exact_seconds: wall time of each grid.
    """

    component: str
    atp: Grid
    exact: Grid
    pearson: float
    overlap: int
    k: int
    atp_seconds: float
    exact_seconds: float

    def worst(self, n: int = 3) -> list[dict]:
        """The ``n`` cells where AtP misses the exact effect most: ``{"layer", "position", "exact", "atp"}``."""
        e, a = self.exact, self.atp.effect
        cells = [
            divmod(f, len(e.positions)) for f in (e.effect - a).abs().flatten().argsort(descending=True)[:n].tolist()
        ]
        return [
            dict(layer=e.layers[i], position=e.positions[j], exact=float(e.effect[i, j]), atp=float(a[i, j]))
            for i, j in cells
        ]


def compare_with_patching(
    lm,
    pairs,
    *,
    components: Sequence[str] = ("resid_pre", "resid_post", "attn_out", "mlp_out"),
    layers: Iterable[int] | None = None,
    positions: Mapping[str, Position] | None = None,
    k: int = 10,
    progress: bool = False,
    methods: Sequence[str] = ("atp",),
    grad_drop: bool = False,
) -> list[Comparison]:
    """AtP next to exact :func:`interp.patching.patch_grid`, per component: correlation and top-``k`` overlap;
    with ``methods=("atp", "atp*")`` one comparison per component and method (one exact grid each; ``report``
    marks AtP* rows with ``*``).

    Example:
        >>> pp = Pairs.of(base, source, base_answer=[5] * 4, source_answer=[6] * 4)
        >>> (c,) = compare_with_patching(lm, pp, components=["mlp_out"],
        ...                              positions={"first": at(0), "last": last()}, k=2)
        >>> c.exact.effect.shape == c.atp.effect.shape, -1 <= c.pearson <= 1, c.overlap <= 2
        (True, True, True)
        >>> print(report([c]))                                              # doctest: +ELLIPSIS
        component   cells  pearson  top-2 overlap  AtP s  exact s  worst cell (exact / AtP)
        mlp_out         4   ...
    """
    layers = list(range(lm.n_layers) if layers is None else layers)
    out = []
    for component in components:
        t0 = time.perf_counter()
        exact = patch_grid(lm, pairs, layers=layers, positions=positions, component=component, progress=progress)
        t_exact = time.perf_counter() - t0
        for method in methods:
            t0 = time.perf_counter()
            kw = dict(method=method, grad_drop=grad_drop and method == "atp*")
            atp = attribution_patch(lm, pairs, layers=layers, positions=positions, component=component, **kw)
            t = time.perf_counter() - t0
            p, o = _pearson(atp.effect, exact.effect), _overlap(atp, exact, k)
            out.append(Comparison(component, atp, exact, p, o, k, t, t_exact))
    return out


def report(comparisons: Sequence[Comparison]) -> str:
    """A plain-text table of :func:`compare_with_patching`'s results, one line per component."""
    k = comparisons[0].k if comparisons else 10
    lines = [f"component   cells  pearson  top-{k} overlap  AtP s  exact s  worst cell (exact / AtP)"]
    for c in comparisons:
        w = c.worst(1)[0]
        name = c.component + ("*" if c.atp.method == "atp*" else "")
        lines.append(
            f"{name:<11} {c.exact.effect.numel():>5}  {c.pearson:>7.3f}  {c.overlap:>7d}/{c.k:<6d} "
            f"{c.atp_seconds:>6.2f}  {c.exact_seconds:>7.2f}  L{w['layer']} {w['position']}: "
            f"{w['exact']:.2f} / {w['atp']:.2f}"
        )
    return "\n".join(lines)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    den = (a.norm() * b.norm()).item()
    return float((a @ b).item() / den) if den > 0 else float("nan")


def _overlap(atp: Grid, exact: Grid, k: int) -> int:
    k = min(k, exact.effect.numel())
    top = lambda t: set(t.abs().flatten().topk(k).indices.tolist())  # noqa: E731
    return len(top(atp.extra.get("graddrop", atp.effect)) & top(exact.effect))


__all__ = ["attribution_patch", "compare_with_patching", "Comparison", "report"]
