"""The hyper-parameters of a DAS fit (:class:`DASConfig`), shared by ``fit_das``, ``fit_mdas`` and ``sweep_das``.

Example:
    >>> cfg = DASConfig(steps=300, lr=3e-3, score_train=False)
    >>> cfg.to_dict()["steps"], DASConfig.from_dict({"steps": 300, "warmup": 0.2}).warmup_ratio
    (300, 0.2)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from . import optim
from .checks import as_float
from .errors import DASConfigError, DASError


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

    ``temperature`` is annealed on any basis with a ``temperature`` attribute (Boundless, a DBM ``Mask``);
    ``penalty_weight`` multiplies ``basis.penalty()`` when the basis has one (a ``Mask``'s sparsity term, which
    carries its own coefficient: 1.0 adds it as the basis defines it, 0 turns it off). ``score_train=False``
    skips the IIA on the whole training set after the fit (``iia_train`` stays None): most of a short fit's time
    on a large training set.
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
    temperature: tuple[float, float] = (50.0, 0.1)  # any basis with a temperature: annealed from first to second
    boundary_weight: float = 0.0  # Boundless: penalty on the interchanged fraction (smaller subspaces)
    penalty_weight: float = 1.0  # scales basis.penalty() (a DBM Mask's sparsity term) when the basis has one
    score_train: bool = True  # score IIA on the whole training set after the fit (False: iia_train is None)
    progress: bool = True

    def __post_init__(self):
        values = optim.check_options(asdict(self), owner="DASConfig", error=DASConfigError)  # the shared options
        reals = {
            "val_fraction": dict(low=0, high=1, open_high=True),
            "boundary_lr": dict(low=0, open_low=True),
            "boundary_weight": dict(low=0),
            "penalty_weight": dict(low=0),
        }
        for name, bounds in reals.items():  # NaN and inf refused
            values[name] = as_float(values[name], f"DASConfig.{name}", error=DASConfigError, **bounds)
        if not isinstance(values["score_train"], bool):
            raise DASConfigError(f"DASConfig.score_train must be True or False; got {values['score_train']!r}")
        for name, value in values.items():
            object.__setattr__(self, name, value)
        temps = self.temperature
        if isinstance(temps, (str, bytes)) or not hasattr(temps, "__len__") or len(temps) != 2:
            raise DASConfigError(
                f"DASConfig.temperature must be two positive numbers (start, end); got {temps!r}; try (50.0, 0.1)"
            )
        hint = f" in temperature={tuple(temps)!r}; the mask anneals from start to end, both > 0; try (50, .1)"
        temps = tuple(
            as_float(t, f"DASConfig.temperature {which}", low=0, open_low=True, error=DASConfigError, hint=hint)
            for t, which in zip(temps, ("start", "end"))
        )
        object.__setattr__(self, "temperature", temps)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DASConfig:
        d = renamed_options(d)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DASError(f"unknown DASConfig keys {unknown}; known: {sorted(known)}")
        return cls(**d)


def renamed_options(options: dict) -> dict:
    """``warmup`` (the name before ``warmup_ratio``, in saved configs and old calls) as ``warmup_ratio``.

    Example:
        >>> renamed_options({"warmup": 0.2})
        {'warmup_ratio': 0.2}
    """
    options = dict(options)
    if "warmup" in options and "warmup_ratio" not in options:
        options["warmup_ratio"] = options.pop("warmup")
    return options


__all__ = ["DASConfig", "renamed_options"]
