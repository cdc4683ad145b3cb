"""Distributed alignment search (DAS): learn the subspace where a model represents a causal variable.

Example:
    >>> pairs = data.render(lambda s: [1, s["a"], 7], int, candidates=[5, 6])   # interp.causal: counterfactual pairs
    >>> train, test = pairs.split(0.8, seed=0)
    >>> das = fit_das(lm, train, at=Site("resid_post", 1, last()), rank=1, steps=5)
    >>> das.iia(test)                                             # interchange intervention accuracy
    0.75
    >>> interchange(lm, base, source, at=das.site, via=das.basis).logits.shape   # reuse the subspace for DII
    torch.Size([4, 97])
    >>> path = das.save(tmp / "gender-l1"); DASResult.load(path, lm).site
    Site('resid_post', 1, last())

DAS (Geiger et al. 2023) trains the rows ``R`` (orthonormal, ``rank x d``) of the edit
``h + R^T (R s - R h)`` at one site so that the intervened model's next token is the causal model's
counterfactual label: cross-entropy on ``logits(base | R-subspace <- source)``. Boundless DAS (Wu et al.
2023) learns a full rotation and a soft mask over its rows instead of a fixed rank. With several variables,
consecutive blocks of rows are aligned to them, each fed by its own source. IIA is the fraction of held-out
pairs whose intervened argmax is the counterfactual label.

The model is frozen, so source activations are collected once (no grad; the run stops at the site), and so is
the base rows' residual stream entering the site's layer (:mod:`interp.replay`): each step runs only the layers
from the site up, with logits at the last token and a backward that stops at the site.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from . import sites as _sites
from .batches import DASError, _check_pairs, check_positions, collect_sources, rows
from .causal import Pairs
from .inputs import InputError
from .interventions import Intervention
from .metrics import _replaying, das_loss, iia, label_ids
from .replay import PrefixCache
from .sites import Site
from .subspace import Basis, BasisError, Boundless, Coordinate, LowRankRotation, edit


@dataclass(frozen=True, kw_only=True)
class DASConfig:
    """Hyper-parameters of one DAS run. Change with ``dataclasses.replace`` or keyword overrides of fit_das.

    Example:
        >>> DASConfig(steps=300, lr=3e-3).to_dict()["steps"]
        300
    """

    steps: int = 200  # optimiser steps at most (early stopping may end sooner)
    batch_size: int = 32
    lr: float = 2e-3
    schedule: str = "linear"  # "linear" (warm-up then linear decay), "cosine" or "constant"
    warmup: float = 0.1  # fraction of steps spent warming up
    eval_every: int = 25  # steps between held-out IIA evaluations
    patience: int = 4  # evaluations without improvement before stopping; 0 never stops early
    val_fraction: float = 0.1  # held-out part of the training pairs used for early stopping (without held_out=)
    eval_batch_size: int = 128
    seed: int = 0
    boundary_lr: float = 1e-2  # Boundless: learning rate of the mask boundary
    temperature: tuple[float, float] = (50.0, 0.1)  # Boundless: mask temperature annealed from first to second
    boundary_weight: float = 0.0  # Boundless: penalty on the interchanged fraction (smaller subspaces)
    progress: bool = True

    def __post_init__(self):
        checks = {
            "steps": self.steps >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "schedule": self.schedule in ("linear", "cosine", "constant"),
            "warmup": 0 <= self.warmup < 1,
            "eval_every": self.eval_every >= 1,
            "patience": self.patience >= 0,
            "val_fraction": 0 <= self.val_fraction < 1,
            "eval_batch_size": self.eval_batch_size >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise DASError(f"DASConfig.{name}={getattr(self, name)!r} is invalid; see DASConfig's comments")
        object.__setattr__(self, "temperature", tuple(float(t) for t in self.temperature))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DASConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DASError(f"unknown DASConfig keys {unknown}; known: {sorted(known)}")
        return cls(**d)


@dataclass(eq=False)
class Alignment(Intervention):
    """Interchange along ``via`` with consecutive row blocks fed by different sources (one per variable).

    ``source`` holds the variables' source vectors side by side: (B, k, w * n_variables). Rows of ``via``
    beyond ``sum(splits)`` keep the base's coordinates. With one variable this is ``Interchange(via)``.

    Example:
        >>> iv = Alignment(Rotation(16), splits=(8, 8))   # WX -> rows 0..7, YZ -> rows 8..15
        >>> h, s_wx, s_yz = torch.randn(3, 2, 1, 16)       # (B, k, w) base and one source per variable
        >>> iv(h, torch.cat([s_wx, s_yz], -1)).shape      # sources side by side: (B, k, w * 2)
        torch.Size([2, 1, 16])
    """

    via: Basis
    splits: tuple[int, ...] = ()
    needs_source = True

    def __post_init__(self):
        self.splits = tuple(int(s) for s in self.splits) or (self.via.rank,)
        if min(self.splits) < 1 or sum(self.splits) > self.via.rank:
            raise DASError(f"splits {self.splits} must be positive and sum to at most the basis rank {self.via.rank}")
        if isinstance(self.via, Boundless) and len(self.splits) > 1:
            raise DASError("a Boundless basis aligns one variable; use Rotation or LowRankRotation with splits=")

    def __call__(self, h, source=None):
        if source is None:
            raise InputError("Alignment needs source activations")
        R = self.via.weight.to(h.dtype)  # (r, w)
        w = h.shape[-1]
        if source.shape[-1] != w * len(self.splits):
            raise InputError(
                f"source vectors have width {source.shape[-1]}; expected {w} x {len(self.splits)} variables"
            )
        targets, start = [], 0
        for s, r in zip(source.split(w, dim=-1), self.splits):
            targets.append(s.to(h.dtype) @ R[start : start + r].T)  # (B, k, w) -> (B, k, r_j)
            start += r
        if start < R.shape[0]:
            targets.append(h @ R[start:].T)  # unaligned rows keep the base's coordinates
        return edit(h, R, torch.cat(targets, -1), self.via.mask())

    def check(self, width: int) -> None:
        self.via.check_width(width, "site's vectors")


# ----------------------------------------------------------------------------------------------- fitting


@dataclass
class DASResult:
    """A learned alignment: site, basis (and row blocks per variable), training history and IIA.

    Example:
        >>> das.iia(test), das.iia_test                      # fit_das(..., test=test) stored the same score
        (0.6, 0.6)
        >>> das.rotation.shape                               # (rank, d) orthonormal rows
        torch.Size([4, 32])
        >>> interchange(lm, base, source, at=das.site, via=das.basis).logits.shape
        torch.Size([4, 97])
        >>> path = das.save(tmp / "ioi-l1"); das2 = DASResult.load(path, lm)
        >>> torch.equal(das2.rotation, das.rotation)
        True
    """

    site: Site
    basis: Basis
    variables: tuple[str, ...]
    splits: tuple[int, ...]
    history: list[dict] = field(default_factory=list)
    iia_train: float | None = None
    iia_test: float | None = None
    config: DASConfig = field(default_factory=DASConfig)
    fingerprint: dict = field(default_factory=dict)
    lm: object = field(default=None, repr=False)

    @property
    def intervention(self) -> Alignment:
        """The interchange to pass as ``via=`` (handles several variables; a Basis alone works for one)."""
        return Alignment(self.basis, self.splits)

    @property
    def rotation(self) -> torch.Tensor:
        """The learned rows ``R`` (rank, d), detached."""
        return self.basis.weight.detach().clone()

    def iia(self, pairs: Pairs, *, batch_size: int = 128) -> float:
        """IIA of this alignment on ``pairs`` (needs the model it was fitted on or loaded into)."""
        if self.lm is None:
            raise DASError("this result has no model attached; use DASResult.load(path, lm) or iia(lm, pairs, ...)")
        return iia(self.lm, pairs, at=self.site, via=self.intervention, batch_size=batch_size)

    def save(self, path, *, overwrite: bool = False) -> Path:
        """Write ``path/basis.safetensors`` (weights) and ``path/das.json`` (everything else); never pickle."""
        from . import alignment_io

        return alignment_io.save(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path, lm) -> DASResult:
        """Load a saved alignment into ``lm``; refuses a model whose fingerprint differs."""
        from . import alignment_io

        return alignment_io.load(path, lm)


def _make_basis(lm, site: Site, via, rank, n_vars: int) -> Basis:
    width = _sites.resolve(lm, site).width
    if via is not None:
        if not isinstance(via, Basis):
            raise DASError(f"via must be a Basis (LowRankRotation, Rotation, Boundless); got {type(via).__name__}")
        if rank is not None and rank != via.rank:
            raise DASError(f"rank={rank} but via has rank {via.rank}; give one or the other")
        via.check_width(width, f"vectors at {site!r}")
        return via
    if rank is None:
        raise DASError("give rank=... (a LowRankRotation is built) or via=a Basis (Rotation, Boundless, ...)")
    if not isinstance(rank, int) or not n_vars <= rank <= width:
        raise DASError(
            f"rank={rank!r} is out of range at {site!r}: expected an integer in [{n_vars}, {width}] (at least one "
            f"row per variable, at most the site's width {width}); try rank=1 for a binary variable"
        )
    return LowRankRotation(width, rank)


def _schedule(cfg: DASConfig):
    warm = max(1, int(cfg.warmup * cfg.steps)) if cfg.warmup > 0 else 0

    def factor(step):
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        frac = (step - warm) / max(1, cfg.steps - warm)
        return max(0.0, 1.0 - frac) if cfg.schedule == "linear" else 0.5 * (1 + math.cos(math.pi * frac))

    return factor


def fit_das(
    lm,
    pairs: Pairs,
    *,
    at: Site,
    via: Basis | None = None,
    rank: int | None = None,
    splits: Sequence[int] | None = None,
    held_out: Pairs | None = None,
    test: Pairs | None = None,
    config: DASConfig | None = None,
    **overrides,
) -> DASResult:
    """Learn the subspace at ``at`` whose interchange makes the model follow the counterfactual labels.

    Example:
        >>> das = fit_das(lm, train, at=Site("resid_post", 1, last()), rank=1, test=test, steps=5)
        >>> das.rotation.shape, das.history[-1]["step"]
        (torch.Size([1, 32]), 5)
        >>> das = fit_das(lm, train, at=site, via=Boundless(lm.d_model, init_fraction=0.1), steps=2)
        >>> from interp.tasks.hierarchical_equality import EqualityMLP, equality_pairs
        >>> mlp = interp.LM(EqualityMLP(seed=0))          # two variables, WX and YZ (untrained here)
        >>> das = fit_das(mlp, equality_pairs(n=64), at=Site.module("layers.0", last()), via=Rotation(16),
        ...               splits=(8, 8), steps=2)
        >>> das.variables, das.splits
        (('WX', 'YZ'), (8, 8))

    Args:
        pairs: training pairs (:class:`interp.causal.Pairs`), one source list per variable.
        at: the site; base and source must both have its positions.
        via: a basis to train (LowRankRotation, Rotation, Boundless); or give ``rank`` for a LowRankRotation.
        splits: rows of the basis per variable (default: the rank divided evenly).
        held_out: pairs for early stopping; default: ``config.val_fraction`` of ``pairs`` set aside.
        test: pairs to report ``iia_test`` on (not used for any decision).
        config: a :class:`DASConfig`; keyword ``overrides`` replace its fields (``steps=100, lr=1e-3``).

    Returns:
        :class:`DASResult` with the best basis on the held-out pairs, its history and IIA.
    """
    cfg = config or DASConfig()
    if overrides:
        bad = sorted(set(overrides) - {f.name for f in fields(DASConfig)})
        if bad:
            raise DASError(f"unknown options {bad}; fit_das takes DASConfig fields: {[f.name for f in fields(cfg)]}")
        cfg = replace(cfg, **overrides)
    pairs = _check_pairs(pairs)
    n_vars = len(pairs.variables)
    _sites.resolve(lm, at)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        basis = _make_basis(lm, at, via, rank, n_vars)
    if splits is None:
        q, r = divmod(basis.rank, n_vars)
        splits = [q + (1 if j < r else 0) for j in range(n_vars)]
    if len(splits) != n_vars:
        raise DASError(f"splits {tuple(splits)} has {len(splits)} blocks for {n_vars} variables {pairs.variables}")
    iv = Alignment(basis, tuple(splits))
    labels = label_ids(lm, pairs.labels)  # errors on multi-token labels before anything runs
    if held_out is None and cfg.val_fraction > 0 and len(pairs) >= 10:
        pairs, held_out = pairs.split(1 - cfg.val_fraction, seed=cfg.seed)
        labels = label_ids(lm, pairs.labels)
    for p in [pairs, held_out, test]:
        if p is not None:
            _check_pairs(p)
            label_ids(lm, p.labels)
            check_positions(lm, p, at)
            if tuple(p.variables) != tuple(pairs.variables):
                raise DASError(f"held-out/test variables {p.variables} differ from training's {pairs.variables}")
    basis.to(lm.device)

    src = collect_sources(lm, pairs, [at], batch_size=cfg.eval_batch_size)[0]  # (N, k, w * n_vars), no grad
    val_src = collect_sources(lm, held_out, [at], batch_size=cfg.eval_batch_size)[0] if held_out else None
    prefix = val_prefix = None
    if PrefixCache.applies(lm, at):  # the frozen layers below the site run once per prompt, not once per step
        prefix = PrefixCache.collect(lm, pairs.base, layer=at.layer, batch_size=cfg.eval_batch_size)
        if held_out is not None:
            val_prefix = PrefixCache.collect(lm, held_out.base, layer=at.layer, batch_size=cfg.eval_batch_size)

    rot = [p for n, p in basis.named_parameters() if n != "boundary"]
    groups = [{"params": rot, "lr": cfg.lr}]
    if isinstance(basis, Boundless):
        groups.append({"params": [basis.boundary], "lr": cfg.boundary_lr})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)  # decay would shrink R toward 0 and switch the edit off
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg))
    rng = random.Random(cfg.seed)
    t0, t1 = cfg.temperature

    history: list[dict] = []
    best = (-1.0, None, 0)  # (val iia, state, step)
    bad_evals = 0
    order: list[int] = []
    from tqdm.auto import tqdm

    bar = tqdm(range(cfg.steps), desc=f"DAS {at!r}", disable=not cfg.progress, leave=False)
    for step in bar:
        if isinstance(basis, Boundless):
            basis.temperature = t0 * (t1 / t0) ** (step / max(1, cfg.steps - 1))
        if len(order) < cfg.batch_size:
            more = list(range(len(pairs)))
            rng.shuffle(more)
            order += more
        idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
        base = rows(lm, [pairs.base[i] for i in idx])
        with _replaying(prefix, lm, idx, base):
            loss = das_loss(lm, base, src[idx], labels[idx], at=at, via=iv)
        if isinstance(basis, Boundless) and cfg.boundary_weight:
            loss = loss + cfg.boundary_weight * basis.boundary.clamp(0, 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        record = {"step": step + 1, "loss": loss.item(), "lr": sched.get_last_lr()[0]}
        last_step = step + 1 == cfg.steps
        if held_out is not None and ((step + 1) % cfg.eval_every == 0 or last_step):
            score = iia(
                lm, held_out, at=at, via=iv, sources=val_src, prefix=val_prefix, batch_size=cfg.eval_batch_size
            )
            record["val_iia"] = score
            if score > best[0]:
                best = (score, {k: v.detach().clone() for k, v in basis.state_dict().items()}, step + 1)
                bad_evals = 0
            else:
                bad_evals += 1
            bar.set_postfix(loss=f"{record['loss']:.3f}", val_iia=f"{score:.3f}")
            history.append(record)
            if cfg.patience and bad_evals >= cfg.patience or score == 1.0:
                break
        else:
            bar.set_postfix(loss=f"{record['loss']:.3f}")
            history.append(record)
    bar.close()
    if best[1] is not None:
        basis.load_state_dict(best[1])

    result = DASResult(
        site=at,
        basis=basis,
        variables=tuple(pairs.variables),
        splits=tuple(splits),
        history=history,
        config=cfg,
        fingerprint=lm.spec.fingerprint(),
        lm=lm,
    )
    result.iia_train = iia(lm, pairs, at=at, via=iv, sources=src, prefix=prefix, batch_size=cfg.eval_batch_size)
    if test is not None:
        result.iia_test = iia(lm, test, at=at, via=iv, batch_size=cfg.eval_batch_size)
    return result


def neuron_aligned(width: int, splits: Sequence[int]) -> Alignment:
    """The no-rotation baseline: variable ``j`` gets the next ``splits[j]`` coordinate axes (neurons).

    Example:
        >>> from interp.tasks.hierarchical_equality import FIRST_HIDDEN, EqualityMLP, equality_pairs
        >>> mlp, test = interp.LM(EqualityMLP(seed=0)), equality_pairs(n=64, seed=1)
        >>> iia(mlp, test, at=FIRST_HIDDEN, via=neuron_aligned(16, (8, 8)))   # WX: neurons 0..7, YZ: 8..15
        0.59375
    """
    if sum(splits) > width:
        raise BasisError(f"splits {tuple(splits)} need {sum(splits)} neurons but the site has {width}")
    return Alignment(Coordinate(width, range(sum(splits))), tuple(splits))


__all__ = ["DASConfig", "DASError", "DASResult", "Alignment", "fit_das", "neuron_aligned"]
