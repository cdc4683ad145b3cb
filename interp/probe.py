"""Linear-probe baseline: can a variable be *read* at a site (as opposed to *used*, which IIA tests)?

Example:
    >>> values = pairs.base_labels                     # one value per prompt: the base answer, 5 or 6
    >>> pr = fit_probe(lm, pairs.base, values, at=Site("resid_post", 0, at(1)))
    >>> pr.classes, pr.weight.shape                    # (n_classes, k * w)
    ([5, 6], torch.Size([2, 32]))
    >>> pr.accuracy_train, round(pr.accuracy_test, 2)  # a random model: fits the training split, not the rest
    (1.0, 0.42)
    >>> pr.direction.shape                             # class 6 vs 5, in activation space (the scaler undone)
    torch.Size([1, 32])
    >>> acts = collect(lm, pairs.base, at=Site("resid_post", 0, at(1)))    # (N, 1, w): collected once ...
    >>> probe_acts(acts, values).accuracy_train                            # ... probed without the model
    1.0
    >>> ps = probe_sweep(lm, pairs.base, values, layers=range(2), positions={"a": at(1), "last": last()})
    >>> ps.accuracy.shape, type(ps.results[1, "last"]).__name__   # (n_layers, n_positions), and every fit
    (torch.Size([2, 2]), 'ProbeResult')

A multinomial logistic regression on standardised activations, trained full-batch with L-BFGS and an L2
penalty, on a held-out split. The result keeps the scaler (``mean``, ``scale``), so its weights read in
activation space too (``activation_weight``, ``direction``, :meth:`ProbeResult.basis`). High probe accuracy with
low IIA marks information the model carries but does not use for the output (Geiger et al. 2023; Wu et al. 2023
discuss this gap).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from .batches import collect_rows
from .checks import as_float, as_int, finite
from .errors import FeaturizerError
from .grid import Grid
from .positions import Position
from .sites import Site
from .subspace import Fixed


@dataclass
class ProbeResult:
    """A fitted probe: accuracies, the classifier over the site's flattened (k * w) vectors, and its scaler.

    Example:
        >>> acts = torch.randn(200, 8); acts[:100, 0] += 2         # class "b" sits 2 higher along axis 0
        >>> pr = probe_acts(acts, ["b"] * 100 + ["a"] * 100, test_fraction=0)
        >>> pr.direction.argmax().item()                            # "a" -> "b" points along axis 0
        0
        >>> pr.predict(torch.eye(8)[:2] * 5)                        # far along axis 0: "b"; along axis 1: not
        ['b', 'a']
    """

    site: Site | None
    classes: list
    accuracy_train: float
    accuracy_test: float | None  # None when fitted with test_fraction=0
    weight: torch.Tensor  # (n_classes, k * w), on standardised features: (x - mean) / scale
    bias: torch.Tensor  # (n_classes,)
    mean: torch.Tensor | None = None  # (k * w,): the scaler fitted on the training split
    scale: torch.Tensor | None = None  # (k * w,)

    @property
    def activation_weight(self) -> torch.Tensor:
        """The weights on raw activations (n_classes, k * w): ``logits = x @ activation_weight.T + activation_bias``."""
        return self.weight / self.scale if self.scale is not None else self.weight

    @property
    def activation_bias(self) -> torch.Tensor:
        return self.bias - self.activation_weight @ self.mean if self.mean is not None else self.bias

    @property
    def direction(self) -> torch.Tensor:
        """(n_classes - 1, k * w): each class's logit weight minus the first class's, in activation space (for two
        classes, one row pointing from ``classes[0]`` to ``classes[1]``)."""
        W = self.activation_weight
        return W[1:] - W[:1]

    def basis(self) -> Fixed:
        """The directions as a frozen basis (orthonormalised), ready for ``via=``."""
        return Fixed(self.direction)

    def logits(self, acts: torch.Tensor) -> torch.Tensor:
        """(N, n_classes) for activations (N, ...) of the probed site (flattened like the fit's)."""
        x = acts.reshape(acts.shape[0], -1).to(self.weight.dtype)
        return x @ self.activation_weight.T + self.activation_bias

    def predict(self, acts: torch.Tensor) -> list:
        return [self.classes[int(i)] for i in self.logits(acts).argmax(-1)]


@dataclass
class ProbeSweep(Grid):
    """A probe sweep's :class:`interp.grid.Grid` of test accuracy that keeps what it fitted: ``results[(layer,
    position)]`` is the cell's :class:`ProbeResult` (classifier, scaler, direction).

    Example:
        >>> ps = probe_sweep(lm, pairs.base, pairs.base_labels, layers=[0, 1], positions={"last": last()})
        >>> sorted(ps.results), ps.results[1, "last"].direction.shape
        ([(0, 'last'), (1, 'last')], torch.Size([1, 32]))
    """

    results: dict[tuple, ProbeResult] = field(default_factory=dict, repr=False)


def logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, *, l2: float, steps: int):
    """Weights (n_classes, D) and bias of a multinomial logistic regression of ``y`` on ``x`` (N, D): full batch,
    L-BFGS with strong-Wolfe line search, penalty ``l2 * |W|^2``. Features are used as given (standardise first).

    Example:
        >>> x = torch.tensor([[-2.0], [-1.0], [1.0], [2.0]])
        >>> W, b = logistic(x, torch.tensor([0, 0, 1, 1]), 2, l2=1e-3, steps=50)
        >>> bool(W[1, 0] > W[0, 0])
        True
    """
    W = torch.zeros(n_classes, x.shape[1], dtype=x.dtype, requires_grad=True)
    b = torch.zeros(n_classes, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ W.T + b, y) + l2 * (W**2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return W.detach(), b.detach()


def classes_of(values: Sequence, what: str = "labels") -> tuple[list, torch.Tensor]:
    """The distinct values, sorted (by repr where they do not compare), and each value's class index."""
    values = values.tolist() if isinstance(values, torch.Tensor) else list(values)
    try:
        classes = sorted(set(values))
    except TypeError:
        classes = sorted(set(values), key=repr)
    if len(classes) < 2:
        raise FeaturizerError(
            f"the {what} take only the value {classes}: a probe, difference of means or LDA needs at least two "
            "classes; give examples of each value"
        )
    index = {c: i for i, c in enumerate(classes)}
    return classes, torch.tensor([index[v] for v in values])


def probe_acts(
    acts: torch.Tensor,
    values: Sequence,
    *,
    site: Site | None = None,
    test_fraction: float = 0.3,
    seed: int = 0,
    l2: float = 1e-3,
    steps: int = 100,
    scale: str = "feature",
) -> ProbeResult:
    """Fit a probe on precollected activations ``acts`` (N, ...) (flattened per row), one value per row.

    ``test_fraction`` of the rows (shuffled with ``seed``) are held out for ``accuracy_test``; 0 fits on all
    of them (``accuracy_test`` None). ``scale="feature"`` standardises each feature (the classic probe);
    ``"global"`` divides by one number (the features' mean standard deviation), so the L2 penalty is the same in
    every direction of activation space and the direction is not bent toward low-variance features (what
    :func:`interp.featurizers.probe_direction` uses).

    Example:
        >>> acts = collect(lm, pairs.base, at=Site("resid_post", 1, last()))
        >>> round(probe_acts(acts, pairs.base_labels, site=Site("resid_post", 1, last())).accuracy_test, 2)
        0.58
    """
    if not isinstance(acts, torch.Tensor) or acts.dim() < 2 or acts.shape[0] < 2 or not acts.is_floating_point():
        shape = tuple(acts.shape) if isinstance(acts, torch.Tensor) else type(acts).__name__
        raise FeaturizerError(f"probe activations must be a float tensor (N, ...) with N >= 2 rows; got {shape}")
    if len(values) != acts.shape[0]:
        raise FeaturizerError(f"got {acts.shape[0]} activation rows and {len(values)} values; expected one per row")
    test_fraction = as_float(test_fraction, "test_fraction", low=0, high=1, open_high=True, error=FeaturizerError)
    l2 = as_float(l2, "probe l2", low=0, error=FeaturizerError, hint="; try l2=1e-3")
    steps = as_int(steps, "probe steps", low=1, error=FeaturizerError)
    x = finite(acts.detach().reshape(acts.shape[0], -1).float(), "probe activations", error=FeaturizerError)
    classes, y = classes_of(values, "probed values")
    n = len(y)
    perm = list(range(n))
    random.Random(seed).shuffle(perm)
    n_test = max(1, int(round(test_fraction * n))) if test_fraction > 0 else 0
    te, tr = torch.tensor(perm[:n_test], dtype=torch.long), torch.tensor(perm[n_test:], dtype=torch.long)
    if len(tr) < 2:
        raise FeaturizerError(
            f"{n} rows with test_fraction={test_fraction} leave {len(tr)} to train on; give more rows"
        )
    if scale not in ("feature", "global"):
        raise FeaturizerError(f"probe scale must be 'feature' or 'global'; got {scale!r}")
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
    if scale == "global":
        sd = torch.full_like(sd, float(sd.mean()))
    z = (x - mu) / sd
    W, b = logistic(z[tr], y[tr], len(classes), l2=l2, steps=steps)
    acc = [float(((z[i] @ W.T + b).argmax(-1) == y[i]).float().mean()) if len(i) else None for i in (tr, te)]
    return ProbeResult(site, classes, acc[0], acc[1], W, b, mu, sd)


def fit_probe(
    lm,
    inputs: Sequence,
    values: Sequence,
    *,
    at: Site,
    test_fraction: float = 0.3,
    seed: int = 0,
    l2: float = 1e-3,
    steps: int = 100,
) -> ProbeResult:
    """Train a linear probe for ``values`` (one per input) on the activations at ``at`` (collected once; with
    activations already at hand call :func:`probe_acts`).

    Example:
        >>> round(fit_probe(lm, pairs.base, pairs.base_labels, at=Site("resid_post", 1, last())).accuracy_test, 2)
        0.58
    """
    _check(inputs, values)
    feats = collect_rows(lm, inputs, [at])[0]
    return probe_acts(feats, list(values), site=at, test_fraction=test_fraction, seed=seed, l2=l2, steps=steps)


def probe_sweep(
    lm,
    inputs: Sequence,
    values: Sequence,
    *,
    layers: Sequence[int],
    positions: dict[str, Position],
    component: str = "resid_post",
    test_fraction: float = 0.3,
    seed: int = 0,
    l2: float = 1e-3,
    steps: int = 100,
) -> Grid:
    """Probe every (layer, position) from a single collection pass per batch over all sites.

    Example:
        >>> probe_sweep(lm, pairs.base, pairs.base_labels, layers=range(2), positions={"last": last()}).accuracy
        tensor([[0.5000],
                [0.5833]])

    Returns:
        A :class:`ProbeSweep` (a :class:`interp.grid.Grid`) of test ``accuracy`` (n_layers, n_positions), with
        ``accuracy_train``; its ``results`` keep every fitted :class:`ProbeResult` by ``(layer, position name)``.
    """
    _check(inputs, values)
    layers = [int(x) for x in layers]
    sites = [Site(component, l, p) for l in layers for p in positions.values()]
    feats = collect_rows(lm, inputs, sites)
    acc = torch.zeros(len(layers), len(positions))
    acc_tr = torch.zeros_like(acc)
    probes = {}
    for i, (site, f) in enumerate(zip(sites, feats)):
        r = probe_acts(f, list(values), site=site, test_fraction=test_fraction, seed=seed, l2=l2, steps=steps)
        li, pi = divmod(i, len(positions))
        acc[li, pi] = r.accuracy_test if r.accuracy_test is not None else float("nan")
        acc_tr[li, pi] = r.accuracy_train
        probes[layers[li], list(positions)[pi]] = r
    axes = {"layers": layers, "positions": list(positions)}
    return ProbeSweep("accuracy", acc, axes, {"accuracy_train": acc_tr}, {"component": component}, results=probes)


def _check(inputs, values):
    if len(inputs) == 0 or len(inputs) != len(values):
        raise ValueError(f"got {len(inputs)} inputs and {len(values)} values; expected one value per input, >= 1")
