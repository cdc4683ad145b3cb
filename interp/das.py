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

import random
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from . import display, optim
from . import distributed as _dist
from . import io as _io
from . import sites as _sites
from .alignment import Alignment, neuron_aligned
from .batches import DASError, check_pairs, check_positions, collect_sources, rows
from .causal import Pairs
from .checks import as_float, is_int
from .errors import DASConfigError
from .io.das import load_das, save_das
from .metrics import das_loss, iia, label_ids, replaying
from .replay import PrefixCache
from .sites import Site
from .subspace import Basis, Boundless, LowRankRotation


@dataclass(frozen=True, kw_only=True)
class DASConfig:
    """Hyper-parameters of one DAS run. Change with ``dataclasses.replace`` or keyword overrides of fit_das.

    Example:
        >>> DASConfig(steps=300, lr=3e-3).to_dict()["steps"]
        300
        >>> DASConfig.from_dict({"steps": 300, "warmup": 0.2}).warmup_ratio   # a config saved before the rename
        0.2

    The training options share :mod:`interp.optim`'s vocabulary and checks with ``reft.TrainConfig``; a bad value
    raises :class:`interp.errors.DASConfigError` (a ConfigError and a DASError).
    """

    steps: int = 200  # optimiser steps at most (early stopping may end sooner)
    batch_size: int = 32
    lr: float = 2e-3
    schedule: str = "linear"  # "linear" (warm-up then linear decay), "cosine" or "constant"
    warmup_ratio: float = 0.1  # fraction of steps spent warming up (saved configs' "warmup" loads as this)
    max_grad_norm: float | None = None  # clip the gradient norm to this (None or 0: no clipping)
    eval_every: int = 25  # steps between held-out IIA evaluations (0: after the last step only)
    patience: int = 4  # evaluations without improvement before stopping; 0 never stops early
    val_fraction: float = 0.1  # held-out part of the training pairs used for early stopping (without held_out=)
    eval_batch_size: int = 128
    seed: int = 0
    boundary_lr: float = 1e-2  # Boundless: learning rate of the mask boundary
    temperature: tuple[float, float] = (50.0, 0.1)  # Boundless: mask temperature annealed from first to second
    boundary_weight: float = 0.0  # Boundless: penalty on the interchanged fraction (smaller subspaces)
    progress: bool = True

    def __post_init__(self):
        values = optim.check_options(asdict(self), owner="DASConfig", error=DASConfigError)  # the shared options
        reals = {
            "val_fraction": dict(low=0, high=1, open_high=True),
            "boundary_lr": dict(low=0, open_low=True),
            "boundary_weight": dict(low=0),
        }
        for name, bounds in reals.items():  # NaN and inf refused
            values[name] = as_float(values[name], f"DASConfig.{name}", error=DASConfigError, **bounds)
        for name, value in values.items():
            object.__setattr__(self, name, value)
        temps = self.temperature
        if isinstance(temps, (str, bytes)) or not hasattr(temps, "__len__") or len(temps) != 2:
            raise DASConfigError(
                f"DASConfig.temperature must be two positive numbers (start, end); got {temps!r}; try (50.0, 0.1)"
            )
        hint = f" in temperature={tuple(temps)!r}; the Boundless mask anneals from start to end, both > 0; try (50, .1)"
        temps = tuple(
            as_float(t, f"DASConfig.temperature {which}", low=0, open_low=True, error=DASConfigError, hint=hint)
            for t, which in zip(temps, ("start", "end"))
        )
        object.__setattr__(self, "temperature", temps)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DASConfig:
        d = _renamed(d)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DASError(f"unknown DASConfig keys {unknown}; known: {sorted(known)}")
        return cls(**d)


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

    def __repr__(self) -> str:
        return display.das_repr(self)

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
        """Write the folder ``path``: ``weights.safetensors`` (the rows R, rank x d: a few KB at rank 1) and
        ``config.json`` (everything else, :mod:`interp.io`'s format); never pickle.

        All at once: a failed save leaves the old result (``overwrite=True``) or nothing. What a load could
        not restore (a user-defined Position or Basis subclass) is refused before anything is written.

        Example:
            >>> path = das.save(tmp / "gender-l6")
            >>> sorted(f.name for f in path.iterdir())
            ['config.json', 'weights.safetensors']
        """
        return save_das(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path, lm) -> DASResult:
        """Load a saved result into ``lm``, with its basis restored bit for bit.

        Refuses a model of another architecture, size or parameter shapes, and warns
        (:class:`interp.errors.WeightsChangedWarning`) when only the weights differ; refuses edited or damaged
        files, naming the file and the key. Folders of the previous layout (``das.json``) load too.

        Example:
            >>> path = das.save(tmp / "gender-l3"); das2 = DASResult.load(path, lm)
            >>> DASResult.load(path, interp.LM(tiny_model))
            Traceback (most recent call last):
            interp.errors.FormatError: the DAS result in '.../gender-l3' was saved from a different model: architecture
            saved 'LlamaForCausalLM', this model 'GPT2LMHeadModel'; load it into the model it was trained on
        """
        return cls(**load_das(path, lm, make_config=DASConfig.from_dict, make_alignment=Alignment))


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
    if not is_int(rank) or not n_vars <= rank <= width:
        raise DASError(
            f"rank at {site!r} must be an integer in [{n_vars}, {width}] (at least one row per variable, at most "
            f"the site's width {width}); got {rank!r}; try rank=1 for a binary variable"
        )
    return LowRankRotation(width, int(rank))


def _renamed(options: dict) -> dict:
    """``warmup`` (the name before ``warmup_ratio``, in saved configs and old calls) as ``warmup_ratio``."""
    options = dict(options)
    if "warmup" in options and "warmup_ratio" not in options:
        options["warmup_ratio"] = options.pop("warmup")
    return options


def _batches(n: int, batch_size: int, seed: int):
    """Endless batches of pair indices cut from shuffled epochs (an epoch's tail starts the next batch)."""
    rng, order = random.Random(seed), []
    while True:
        if len(order) < batch_size:
            more = list(range(n))
            rng.shuffle(more)
            order += more
        yield order[:batch_size]
        order = order[batch_size:]


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

    Under ``torchrun --nproc_per_node N`` (:mod:`interp.distributed`) the basis trains data parallel: every rank
    draws the same batch, takes ``batch[rank::N]`` and DistributedDataParallel averages the gradients, so the fit
    equals one process's (``batch_size`` must be a multiple of N). Sources and IIA are computed on every rank.
    """
    cfg = config or DASConfig()
    if "warmup" in overrides:
        warnings.warn("fit_das(warmup=...) is now warmup_ratio=...", DeprecationWarning, stacklevel=2)
        overrides = _renamed(overrides)
    if overrides:
        bad = sorted(set(overrides) - {f.name for f in fields(DASConfig)})
        if bad:
            raise DASError(f"unknown options {bad}; fit_das takes DASConfig fields: {[f.name for f in fields(cfg)]}")
        cfg = replace(cfg, **overrides)
    _dist.check_divisible(cfg.batch_size, "DASConfig.batch_size", error=DASError)  # under torchrun: equal shards
    pairs = check_pairs(pairs)
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
            check_pairs(p)
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
    groups = [{"params": rot}]  # no weight decay: it would shrink R toward 0 and switch the edit off
    if isinstance(basis, Boundless):
        groups.append({"params": [basis.boundary], "lr": cfg.boundary_lr})
    t0, t1 = cfg.temperature

    def anneal(step):  # Boundless: the mask's temperature falls geometrically from t0 to t1
        basis.temperature = t0 * (t1 / t0) ** (step / max(1, cfg.steps - 1))

    def batch_loss(idx):  # the mean over this rank's pairs of the batch (all of it in one process)
        base = rows(lm, [pairs.base[i] for i in idx])
        with replaying(prefix, lm, idx, base):
            loss = das_loss(lm, base, src[idx], labels[idx], at=at, via=iv)
        if isinstance(basis, Boundless) and cfg.boundary_weight:
            loss = loss + cfg.boundary_weight * basis.boundary.clamp(0, 1)
        return loss

    def held_out_iia():
        return iia(lm, held_out, at=at, via=iv, sources=val_src, prefix=val_prefix, batch_size=cfg.eval_batch_size)

    # Under torchrun each rank takes batch[rank::world] of the same global batch (equal shards: batch_size is a
    # multiple of world), so the average of the shards' means is the mean; the basis is kept at its best val IIA.
    with _sites.resolving(lm):  # the site resolves once for the whole fit, not once per step
        hist = optim.train(
            groups,
            batch_loss,
            _batches(len(pairs), cfg.batch_size, cfg.seed),
            steps=cfg.steps,
            lr=cfg.lr,
            schedule=cfg.schedule,
            warmup_ratio=cfg.warmup_ratio,
            max_grad_norm=cfg.max_grad_norm,
            evaluate=held_out_iia if held_out is not None else None,
            eval_every=cfg.eval_every,
            patience=cfg.patience,
            stop_at=1.0,
            keep_best=True,
            before_step=anneal if isinstance(basis, Boundless) else None,
            module=basis,
            find_unused=False,
            progress=cfg.progress,
            desc=f"DAS {at!r}",
        )
    scores = dict(hist.evals)
    history = [
        {"step": s, "loss": loss, "lr": lr} | ({"val_iia": scores[s]} if s in scores else {})
        for s, loss, lr in zip(range(1, hist.steps + 1), hist.losses, hist.lrs)
    ]

    result = DASResult(
        site=at,
        basis=basis,
        variables=tuple(pairs.variables),
        splits=tuple(splits),
        history=history,
        config=cfg,
        fingerprint=_io.fingerprint(lm),
        lm=lm,
    )
    result.iia_train = iia(lm, pairs, at=at, via=iv, sources=src, prefix=prefix, batch_size=cfg.eval_batch_size)
    if test is not None:
        result.iia_test = iia(lm, test, at=at, via=iv, batch_size=cfg.eval_batch_size)
    return result


__all__ = ["DASConfig", "DASError", "DASResult", "Alignment", "fit_das", "neuron_aligned"]
