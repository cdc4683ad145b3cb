"""Linear-probe baseline: can a variable be *read* at a site (as opposed to *used*, which IIA tests)?

Example:
    >>> values = pairs.base_labels                     # one value per prompt: the base answer, 5 or 6
    >>> pr = fit_probe(lm, pairs.base, values, at=Site("resid_post", 0, at(1)))
    >>> pr.classes, pr.weight.shape                    # (n_classes, k * w)
    ([5, 6], torch.Size([2, 32]))
    >>> pr.accuracy_train, round(pr.accuracy_test, 2)  # a random model: fits the training split, not the rest
    (1.0, 0.42)
    >>> ps = probe_sweep(lm, pairs.base, values, layers=range(2), positions={"a": at(1), "last": last()})
    >>> ps.accuracy.shape                              # (n_layers, n_positions)
    torch.Size([2, 2])

A multinomial logistic regression on standardised activations, trained full-batch with L-BFGS and an L2
penalty, on a held-out split. High probe accuracy with low IIA marks information the model carries but does
not use for the output (Geiger et al. 2023; Wu et al. 2023 discuss this gap).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .batches import collect_rows
from .grid import Grid
from .positions import Position
from .sites import Site


@dataclass
class ProbeResult:
    """A fitted probe: accuracies and the classifier over the site's flattened (k * w) vectors."""

    site: Site
    classes: list
    accuracy_train: float
    accuracy_test: float
    weight: torch.Tensor  # (n_classes, k * w), on standardised features
    bias: torch.Tensor


def _fit(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float, steps: int):
    W = torch.zeros(n_classes, x.shape[1], requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ W.T + b, y) + l2 * (W**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach(), b.detach()


def _probe(feats: torch.Tensor, values: Sequence, site: Site, test_fraction: float, seed: int, l2: float, steps: int):
    classes = sorted(set(values), key=repr)
    if len(classes) < 2:
        raise ValueError(f"the probed variable takes only the value {classes}; a probe needs at least two classes")
    y = torch.tensor([classes.index(v) for v in values])
    x = feats.reshape(len(values), -1).float()  # (N, k, w) -> (N, k * w)
    perm = list(range(len(values)))
    random.Random(seed).shuffle(perm)
    n_test = max(1, int(round(test_fraction * len(values))))
    te, tr = torch.tensor(perm[:n_test]), torch.tensor(perm[n_test:])
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
    x = (x - mu) / sd
    W, b = _fit(x[tr], y[tr], len(classes), l2, steps)
    acc = [float(((x[i] @ W.T + b).argmax(-1) == y[i]).float().mean()) for i in (tr, te)]
    return ProbeResult(site, classes, acc[0], acc[1], W, b)


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
    """Train a linear probe for ``values`` (one per input) on the activations at ``at``.

    Example:
        >>> round(fit_probe(lm, pairs.base, pairs.base_labels, at=Site("resid_post", 1, last())).accuracy_test, 2)
        0.58
    """
    _check(inputs, values)
    feats = collect_rows(lm, inputs, [at])[0]
    return _probe(feats, list(values), at, test_fraction, seed, l2, steps)


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
        A :class:`interp.grid.Grid` of test ``accuracy`` (n_layers, n_positions), with ``accuracy_train``.
    """
    _check(inputs, values)
    layers = [int(x) for x in layers]
    sites = [Site(component, l, p) for l in layers for p in positions.values()]
    feats = collect_rows(lm, inputs, sites)
    acc = torch.zeros(len(layers), len(positions))
    acc_tr = torch.zeros_like(acc)
    for i, (site, f) in enumerate(zip(sites, feats)):
        r = _probe(f, list(values), site, test_fraction, seed, l2, steps)
        acc[divmod(i, len(positions))] = r.accuracy_test
        acc_tr[divmod(i, len(positions))] = r.accuracy_train
    axes = {"layers": layers, "positions": list(positions)}
    return Grid("accuracy", acc, axes, {"accuracy_train": acc_tr}, {"component": component})


def _check(inputs, values):
    if len(inputs) == 0 or len(inputs) != len(values):
        raise ValueError(f"got {len(inputs)} inputs and {len(values)} values; expected one value per input, >= 1")
