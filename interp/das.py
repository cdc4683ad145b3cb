"""Distributed alignment search (DAS): learn the subspace where a model represents a causal variable.

Example:
    >>> pairs = data.render(prompt, answer)                       # interp.causal: counterfactual pairs
    >>> train, test = pairs.split(0.8, seed=0)
    >>> das = fit_das(lm, train, at=Site("resid_post", 6, last()), rank=1, steps=200)
    >>> das.iia(test)                                             # interchange intervention accuracy
    >>> interchange(lm, base, source, at=das.site, via=das.basis) # reuse the subspace for DII
    >>> das.save("runs/gender-l6"); DASResult.load("runs/gender-l6", lm)

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

import contextlib
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
from torch.nn import functional as F

from . import sites as _sites
from ._trace import Batch, run
from .causal import CausalModel, Pairs
from .dii import collect, intervene
from .inputs import InputError, encode, token_ids
from .interventions import Intervention
from .positions import Position, PositionError, last
from .replay import PrefixCache
from .sites import Site
from .subspace import Basis, BasisError, Boundless, Coordinate, LowRankRotation, edit


class DASError(ValueError):
    """A DAS run that cannot start as asked (bad data, rank, site or saved file)."""


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
        >>> Alignment(Rotation(16), splits=(8, 8))   # WX -> rows 0..7, YZ -> rows 8..15
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


# ----------------------------------------------------------------------------------------------- data


def rows(lm, items: Sequence) -> Batch:
    """A left-padded :class:`Batch` from prompts (str) or token-id sequences (ints, lists or tensors)."""
    items = list(items)
    if items and isinstance(items[0], str):
        return encode(lm, items)
    if not items:
        raise InputError("no inputs; expected at least one prompt or token-id sequence")
    if isinstance(items[0], (list, tuple)) and len({len(x) for x in items}) == 1:  # equal lengths: no padding
        ids = torch.tensor(items, dtype=torch.long)
        return Batch(ids.to(lm.device), torch.ones_like(ids).to(lm.device))
    seqs = [torch.as_tensor(x, dtype=torch.long).reshape(-1) for x in items]
    T = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), T, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, T - len(s) :] = s
        mask[i, T - len(s) :] = 1
    return Batch(ids.to(lm.device), mask.to(lm.device))


def label_ids(lm, labels: Sequence) -> torch.Tensor:
    """Token ids (N,) of answer words (each must be one token) or ids; errors name the offending label."""
    labels = list(labels)
    if labels and isinstance(labels[0], str):
        return token_ids(lm, labels)
    ids = torch.as_tensor([int(x) for x in labels], dtype=torch.long)
    vocab = lm.spec.vocab_size
    bad = [int(i) for i in ids if not 0 <= i < vocab]
    if bad:
        raise InputError(f"label ids {bad[:5]} are outside the vocabulary [0, {vocab}); pass words or valid ids")
    return ids.to(lm.device)


def _check_pairs(pairs) -> Pairs:
    if not isinstance(pairs, Pairs):
        raise DASError(f"expected interp.causal.Pairs (from CounterfactualDataset.render); got {type(pairs).__name__}")
    if len(pairs) == 0:
        raise DASError("the dataset is empty; expected at least one counterfactual pair (check the sampler/filter)")
    return pairs


def _chunks(n: int, size: int):
    for a in range(0, n, size):
        yield slice(a, min(n, a + size))


def collect_rows(lm, inputs: Sequence, sites: Sequence[Site], *, batch_size: int = 128) -> list[torch.Tensor]:
    """Vectors at each site for all ``inputs``, in batches, without grad: a list of (N, k, w) tensors.

    Example:
        >>> h6, h9 = collect_rows(lm, prompts, [Site("resid_post", 6, last()), Site("resid_post", 9, last())])
    """
    per_site: list[list[torch.Tensor]] = [[] for _ in sites]
    for sl in _chunks(len(inputs), batch_size):
        for i, h in enumerate(collect(lm, rows(lm, inputs[sl]), at=list(sites))):
            per_site[i].append(h)
    return [torch.cat(p) for p in per_site]


def collect_sources(lm, pairs: Pairs, sites: Sequence[Site], *, batch_size: int = 128) -> list[torch.Tensor]:
    """Source vectors per site, variables side by side: a list of (N, k, w * n_variables) tensors, no grad.

    Each source run stops after the last site, so caching costs less than one forward per source.
    """
    per_var = [collect_rows(lm, src, sites, batch_size=batch_size) for src in pairs.sources]  # [var][site]
    return [torch.cat([v[i] for v in per_var], dim=-1) for i in range(len(sites))]


def check_positions(lm, pairs: Pairs, site: Site) -> None:
    """Raise PositionError before any forward pass if ``site.pos`` is undefined on some base or source."""
    k = None
    named = [("base", pairs.base)] + [(f"source of {v!r}", s) for v, s in zip(pairs.variables, pairs.sources)]
    for name, items in named:
        batch = rows(lm, items)
        try:
            pos = site.pos.resolve(batch.attention_mask, batch.input_ids, lm.tokenizer)
        except PositionError as e:
            raise PositionError(f"{site!r} on the {name} inputs: {e}") from None
        if k is not None and pos.shape[1] != k:
            raise PositionError(
                f"{site!r} selects {k} token(s) on the base inputs but {pos.shape[1]} on the {name} inputs; "
                "base and source must give the same number of positions"
            )
        k = pos.shape[1]


# ----------------------------------------------------------------------------------------------- losses, IIA


def das_logits(lm, base, sources: torch.Tensor, *, at: Site, via: Intervention, grad: bool = False) -> torch.Tensor:
    """Logits (B, V) at the last token of ``base`` with the ``via`` interchange from cached ``sources``."""
    return intervene(lm, base, at=at, via=via, sources=[sources], grad=grad).logits


def das_loss(lm, base, sources: torch.Tensor, labels: torch.Tensor, *, at: Site, via: Intervention) -> torch.Tensor:
    """Cross-entropy of the counterfactual labels under the interchange; differentiable in ``via``'s weights.

    Example:
        >>> loss = das_loss(lm, batch, src_cache[idx], labels[idx], at=site, via=Alignment(R)); loss.backward()
    """
    logits = das_logits(lm, base, sources, at=at, via=via, grad=True)
    return F.cross_entropy(logits.float(), labels)


def _replaying(prefix: PrefixCache | None, lm, idx, batch):
    return prefix.replay(lm, idx, batch) if prefix is not None else contextlib.nullcontext()


def _predict(logits: torch.Tensor, candidates: torch.Tensor | None) -> torch.Tensor:
    if candidates is None:
        return logits.argmax(-1)
    return candidates[logits[:, candidates].argmax(-1)]


def _candidate_ids(lm, pairs: Pairs) -> torch.Tensor | None:
    return label_ids(lm, pairs.candidates) if pairs.candidates else None


@torch.no_grad()
def iia(
    lm,
    pairs: Pairs,
    *,
    at: Site,
    via: Basis | Intervention,
    sources: torch.Tensor | None = None,
    prefix: PrefixCache | None = None,
    batch_size: int = 128,
) -> float:
    """Interchange intervention accuracy: the fraction of pairs whose intervened prediction is the label.

    Example:
        >>> iia(lm, test, at=das.site, via=das.intervention)
        0.97

    Predictions are the argmax over the whole vocabulary, or over ``pairs.candidates`` when set. ``sources``
    and ``prefix`` (:class:`interp.replay.PrefixCache` of ``pairs.base``) reuse cached activations.
    """
    pairs = _check_pairs(pairs)
    iv = via if isinstance(via, Intervention) else Alignment(via)
    if sources is None:
        sources = collect_sources(lm, pairs, [at], batch_size=batch_size)[0]
    labels = label_ids(lm, pairs.labels)
    cand = _candidate_ids(lm, pairs)
    hits = 0
    for sl in _chunks(len(pairs), batch_size):
        batch = rows(lm, pairs.base[sl])
        with _replaying(prefix, lm, range(sl.start, sl.stop), batch):
            logits = das_logits(lm, batch, sources[sl], at=at, via=iv)
        hits += int((_predict(logits, cand) == labels[sl]).sum())
    return hits / len(pairs)


@torch.no_grad()
def task_accuracy(lm, inputs: Sequence, answers: Sequence, *, candidates=None, batch_size: int = 128) -> float:
    """Fraction of ``inputs`` on which the unintervened model predicts ``answers`` (argmax, or over candidates)."""
    if len(inputs) == 0 or len(inputs) != len(answers):
        raise InputError(f"got {len(inputs)} inputs and {len(answers)} answers; expected equally many, at least one")
    want = label_ids(lm, answers)
    cand = label_ids(lm, candidates) if candidates else None
    hits = 0
    for sl in _chunks(len(inputs), batch_size):
        batch = rows(lm, inputs[sl])
        read = last().resolve(batch.attention_mask)
        _, logits = run(lm, batch, [], logits_at=read)
        hits += int((_predict(logits[:, -1], cand) == want[sl]).sum())
    return hits / len(inputs)


# ----------------------------------------------------------------------------------------------- fitting


@dataclass
class DASResult:
    """A learned alignment: site, basis (and row blocks per variable), training history and IIA.

    Example:
        >>> das.iia(test), das.iia_train, das.iia_test
        >>> das.rotation.shape                               # (rank, d) orthonormal rows
        >>> interchange(lm, base, source, at=das.site, via=das.basis)
        >>> das.save("runs/ioi-l9"); das2 = DASResult.load("runs/ioi-l9", lm)
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
        >>> das = fit_das(lm, train, at=Site("resid_post", 9, last()), rank=1, test=test, steps=150)
        >>> das = fit_das(mlp, train, at=Site.module("layers.0", last()), via=Rotation(16), splits=(8, 8))
        >>> das = fit_das(lm, train, at=site, via=Boundless(lm.d_model, init_fraction=0.1))

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
        >>> iia(mlp, test, at=site, via=neuron_aligned(16, (8, 8)))
    """
    if sum(splits) > width:
        raise BasisError(f"splits {tuple(splits)} need {sum(splits)} neurons but the site has {width}")
    return Alignment(Coordinate(width, range(sum(splits))), tuple(splits))


__all__ = [
    "CausalModel",
    "Pairs",
    "DASConfig",
    "DASError",
    "DASResult",
    "Alignment",
    "fit_das",
    "iia",
    "das_loss",
    "task_accuracy",
    "neuron_aligned",
    "collect_sources",
    "sweep_das",
    "SweepResult",
]


# ----------------------------------------------------------------------------------------------- sweeps


@dataclass
class SweepResult:
    """IIA of a DAS fit at every (rank, layer, position) of a grid.

    Attributes:
        iia: (n_ranks, n_layers, n_positions) test IIA (train IIA where no test set was given).
        iia_train: the same grid on the training pairs.
    """

    layers: list[int]
    positions: list[str]
    ranks: list[int]
    iia: torch.Tensor
    iia_train: torch.Tensor
    component: str = "resid_post"

    def best(self) -> dict:
        """The best cell: ``{"layer", "position", "rank", "iia"}``."""
        flat = int(torch.nan_to_num(self.iia, nan=-1.0).argmax())
        r, rest = divmod(flat, len(self.layers) * len(self.positions))
        li, pi = divmod(rest, len(self.positions))
        return {
            "layer": self.layers[li],
            "position": self.positions[pi],
            "rank": self.ranks[r],
            "iia": float(self.iia[r, li, pi]),
        }

    def plot(self, *, rank: int | None = None, ax=None, title: str | None = None):
        """Heatmap of IIA over layers x positions at one rank (default: the first); returns the Axes."""
        from .viz import plot_iia_grid

        r = self.ranks.index(rank) if rank is not None else 0
        title = title or f"DAS IIA, {self.component}, rank {self.ranks[r]}"
        return plot_iia_grid(self.iia[r].numpy(), self.layers, self.positions, ax=ax, title=title, annotate=True)

    def to_dict(self) -> dict:
        return {
            "layers": self.layers,
            "positions": self.positions,
            "ranks": self.ranks,
            "component": self.component,
            "iia": self.iia.tolist(),
            "iia_train": self.iia_train.tolist(),
            "best": self.best(),
        }


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
    **overrides,
) -> SweepResult:
    """Fit DAS at every (rank, layer, position) and score it: where is the variable?

    Example:
        >>> sw = sweep_das(lm, train, test, layers=range(0, 18, 3), positions={"name": at(1), "last": last()})
        >>> sw.best()          # {'layer': 6, 'position': 'last', 'rank': 1, 'iia': 0.98}
        >>> sw.plot()

    ``config``/``overrides`` are :class:`DASConfig` fields used for every fit (keep ``steps`` small on CPU).
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
        check_positions(lm, _check_pairs(train), s)
    shape = (len(ranks), len(layers), len(positions))
    out, out_train = torch.full(shape, float("nan")), torch.full(shape, float("nan"))
    cfg = replace(config or DASConfig(), progress=False, **overrides)
    from tqdm.auto import tqdm

    bar = tqdm(grid, desc="DAS sweep", disable=not progress)
    for r, l, p in bar:
        res = fit_das(lm, train, at=sites[(l, p)], rank=r, test=test, config=cfg)
        i = (ranks.index(r), layers.index(l), list(positions).index(p))
        out_train[i] = res.iia_train
        out[i] = res.iia_test if res.iia_test is not None else res.iia_train
        bar.set_postfix(layer=l, pos=p, rank=r, iia=f"{float(out[i]):.2f}")
    return SweepResult(layers, list(positions), ranks, out, out_train, component)
