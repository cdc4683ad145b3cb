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
from the site up, with logits at the last token and a backward that stops at the site. Both live in an
:class:`interp.paircache.PairCache`, which ``fit_das(..., cache=)`` shares between fits (``sweep_das`` does);
:mod:`interp.mdas` trains several variables with cause and isolation examples on this same fit.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch

from . import display, optim
from . import distributed as _dist
from . import io as _io
from . import sites as _sites
from .alignment import Alignment, neuron_aligned
from .batches import DASError, check_pairs, check_positions, rows
from .causal import Pairs
from .checks import is_int
from .das_config import DASConfig, renamed_options
from .das_objective import annealer, interchange_loss, param_groups, regulariser
from .io.das import load_das, save_das
from .metrics import iia, label_ids, replaying
from .paircache import PairCache
from .replay import PrefixCache
from .sites import Site
from .subspace import Basis, LowRankRotation

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
    cache: PairCache | None = None,
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
        >>> cache = PairCache(lm)                         # sources and streams collected once for both fits
        >>> fits = [fit_das(lm, train, at=site, rank=r, steps=2, cache=cache, score_train=False) for r in (1, 2)]
        >>> fits[1].iia_train is None                     # score_train=False: no IIA on the training set
        True

    Args:
        pairs: training pairs (:class:`interp.causal.Pairs`), one source list per variable; their ``weights``
            (if any) multiply each example's cross-entropy.
        at: the site; base and source must both have its positions.
        via: a basis to train (LowRankRotation, Rotation, Boundless, a DBM ``Mask``: anything with trainable
            parameters); or give ``rank`` for a LowRankRotation.
        splits: rows of the basis per variable (default: the rank divided evenly).
        held_out: pairs for early stopping; default: ``config.val_fraction`` of ``pairs`` set aside.
        test: pairs to report ``iia_test`` on (not used for any decision).
        config: a :class:`DASConfig`; keyword ``overrides`` replace its fields (``steps=100, lr=1e-3``).
        cache: a :class:`interp.paircache.PairCache` of this model: sources and prefix streams are read from it
            (collected into it the first time), so fits at one site or layer share them.

    Returns:
        :class:`DASResult` with the best basis on the held-out pairs, its history and IIA.

    Any basis with a ``temperature`` attribute is annealed along ``config.temperature``, and one with a
    ``penalty()`` adds ``config.penalty_weight * basis.penalty()`` to each step's loss; only parameters that
    require grad train, and a basis with none (``Fixed``) is refused: score it with ``iia`` instead.

    Under ``torchrun --nproc_per_node N`` (:mod:`interp.distributed`) the basis trains data parallel: every rank
    draws the same batch, takes ``batch[rank::N]`` and DistributedDataParallel averages the gradients, so the fit
    equals one process's (``batch_size`` must be a multiple of N). Sources and IIA are computed on every rank.
    """
    cfg = _config(config, overrides)
    _dist.check_divisible(cfg.batch_size, "DASConfig.batch_size", error=DASError)  # under torchrun: equal shards
    pairs = check_pairs(pairs)
    n_vars = len(pairs.variables)
    _sites.resolve(lm, at)
    if cache is not None and not isinstance(cache, PairCache):
        raise DASError(f"cache must be an interp.paircache.PairCache(lm); got {type(cache).__name__}")
    cache = cache if cache is not None else PairCache(lm, batch_size=cfg.eval_batch_size)
    cache.check(lm)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        basis = _make_basis(lm, at, via, rank, n_vars)
    groups = param_groups(basis, cfg)  # refuses a basis with nothing to train before any model work
    if splits is None:
        q, r = divmod(basis.rank, n_vars)
        splits = [q + (1 if j < r else 0) for j in range(n_vars)]
    if len(splits) != n_vars:
        raise DASError(f"splits {tuple(splits)} has {len(splits)} blocks for {n_vars} variables {pairs.variables}")
    iv = Alignment(basis, tuple(splits))
    label_ids(lm, pairs.labels)  # errors on multi-token labels before anything runs
    if held_out is None and cfg.val_fraction > 0 and len(pairs) >= 10:
        pairs, held_out = pairs.split(1 - cfg.val_fraction, seed=cfg.seed)
    for p in [pairs, held_out, test]:
        if p is not None:
            check_pairs(p)
            label_ids(lm, p.labels)
            check_positions(lm, p, at)
            if tuple(p.variables) != tuple(pairs.variables):
                raise DASError(f"held-out/test variables {p.variables} differ from training's {pairs.variables}")
    labels = label_ids(lm, pairs.labels)
    weights = None if pairs.weights is None else torch.tensor(pairs.weights, device=labels.device)
    basis.to(lm.device)
    groups = param_groups(basis, cfg)  # the parameters as they are on the model's device

    src, prefix = _cached(cache, lm, pairs, at)  # (N, k, w * n_vars) no grad; the stream below the site, once
    val_src, val_prefix = _cached(cache, lm, held_out, at) if held_out is not None else (None, None)
    extra = regulariser(basis, cfg)

    def batch_loss(idx):  # the mean over this rank's pairs of the batch (all of it in one process)
        base = rows(lm, [pairs.base[i] for i in idx])
        w = weights[idx] if weights is not None else None
        with replaying(prefix, lm, idx, base):
            loss = interchange_loss(lm, base, src[idx], labels[idx], at=at, via=iv, weights=w)
        return loss + extra() if extra is not None else loss

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
            before_step=annealer(basis, cfg),
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
    if cfg.score_train:
        result.iia_train = iia(lm, pairs, at=at, via=iv, sources=src, prefix=prefix, batch_size=cfg.eval_batch_size)
    if test is not None:
        test_src, test_prefix = _cached(cache, lm, test, at)
        result.iia_test = iia(
            lm, test, at=at, via=iv, sources=test_src, prefix=test_prefix, batch_size=cfg.eval_batch_size
        )
    return result


def _config(config: DASConfig | None, overrides: dict) -> DASConfig:
    """``config`` (default DASConfig()) with the keyword ``overrides`` of fit_das applied and checked."""
    cfg = config or DASConfig()
    if "warmup" in overrides:
        warnings.warn("fit_das(warmup=...) is now warmup_ratio=...", DeprecationWarning, stacklevel=3)
        overrides = renamed_options(overrides)
    if overrides:
        bad = sorted(set(overrides) - {f.name for f in fields(DASConfig)})
        if bad:
            raise DASError(f"unknown options {bad}; fit_das takes DASConfig fields: {[f.name for f in fields(cfg)]}")
        cfg = replace(cfg, **overrides)
    return cfg


def _cached(cache: PairCache, lm, pairs: Pairs, at: Site) -> tuple[torch.Tensor, PrefixCache | None]:
    """The pairs' source vectors at ``at`` and, where the site allows replay, their bases' prefix streams."""
    prefix = cache.prefix(pairs.base, layer=at.layer) if PrefixCache.applies(lm, at) else None
    return cache.sources(pairs, at), prefix


__all__ = ["DASConfig", "DASError", "DASResult", "Alignment", "PairCache", "fit_das", "neuron_aligned"]
