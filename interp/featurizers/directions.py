"""Directions from activations alone or from labels, each returned as a frozen basis (:class:`interp.Fixed`).

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> labels = [0, 1] * 200
    >>> v = torch.zeros(16); v[3] = 1.0                              # the planted direction
    >>> acts = torch.randn(400, 16, generator=g) + 4 * torch.tensor(labels)[:, None] * v
    >>> [round(abs(float(f.weight[0] @ v)), 2) for f in (diff_means(acts, labels), lda(acts, labels))]
    [0.99, 0.99]
    >>> pca(acts, 1).weight[0].abs().argmax().item(), kmeans(acts, 2).rank, random_basis(16, 2).rank
    (3, 1, 2)

Every featurizer takes activations ``acts`` of shape (N, d) (or (N, 1, d), as :func:`interp.collect` returns
at one position) and gives a :class:`interp.Fixed` whose rows are orthonormal, so the same interchange, IIA and
plots apply to each (``via=diff_means(acts, labels)``). Supervised ones take one hashable label per row.
The activations are collected once and can serve every featurizer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..checks import as_float, as_int
from ..errors import FeaturizerError
from ..probe import probe_acts
from ..subspace import Fixed, independent_rows
from .data import as_acts, as_labels, count


def _class_means(x: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(c, d): the mean of each class's rows."""
    sums = torch.zeros(n_classes, x.shape[1], dtype=x.dtype).index_add_(0, y, x)
    return sums / torch.bincount(y, minlength=n_classes).to(x.dtype)[:, None]


def _span(rows: torch.Tensor, who: str, hint: str) -> Fixed:
    """Fixed(rows), or a FeaturizerError naming ``who`` when the rows are dependent (FeaturizerError, not
    BasisError: it is the data that gave no such directions)."""
    found = independent_rows(rows)
    if found < rows.shape[0]:
        raise FeaturizerError(
            f"{who} gave {rows.shape[0]} directions but they span only {found} dimensions ({hint}); "
            "the data does not separate the classes along that many directions"
        )
    return Fixed(rows)


def diff_means(acts: torch.Tensor, labels: Sequence) -> Fixed:
    """Difference of class means: for two classes one direction, ``mean(second) - mean(first)`` (classes in
    sorted order); for ``c`` classes the ``c - 1`` differences from the first class's mean, orthonormalised.

    Example:
        >>> acts = torch.tensor([[0.0, 1.0], [0.0, 3.0], [2.0, 1.0], [2.0, 3.0]])
        >>> diff_means(acts, ["off", "off", "on", "on"]).weight      # "on" sits +2 along axis 0
        tensor([[1., 0.]])
    """
    x = as_acts(acts)
    classes, y = as_labels(labels, len(x))
    if len(classes) - 1 > x.shape[1]:
        raise FeaturizerError(
            f"diff_means: {len(classes)} classes give {len(classes) - 1} directions, more than the width {x.shape[1]}"
        )
    means = _class_means(x, y, len(classes))
    return _span(means[1:] - means[:1], "diff_means", "classes with equal or collinear means")


def probe_direction(acts: torch.Tensor, labels: Sequence, *, l2: float = 1e-3, steps: int = 100) -> Fixed:
    """A logistic-regression probe's direction(s), in activation space. Two classes: one row, from the first
    class to the second; ``c`` classes: the ``c - 1`` differences of class weights, orthonormalised. Fits on all
    rows (:func:`interp.probe.probe_acts` for a held-out accuracy), centred and divided by one scale (the
    scaler is undone after): a per-feature standardisation would make the L2 penalty favour low-variance
    features and bend the direction away from where the classes differ.

    Example:
        >>> acts = torch.randn(60, 8); acts[:, 5] *= 100.0            # a wide, uninformative axis ...
        >>> acts[30:, 2] += 3.0                                        # ... and the informative one
        >>> probe_direction(acts, [0] * 30 + [1] * 30).weight[0].abs().argmax().item()
        2
    """
    x = as_acts(acts)
    classes, _ = as_labels(labels, len(x))  # the checks, before the fit
    l2 = as_float(l2, "probe_direction l2", low=0, error=FeaturizerError, hint="; try l2=1e-3")
    if len(classes) - 1 > x.shape[1]:
        raise FeaturizerError(f"probe_direction: {len(classes)} classes give more directions than width {x.shape[1]}")
    result = probe_acts(x, labels, test_fraction=0, l2=l2, steps=steps, scale="global")
    return _span(result.direction, "probe_direction", "the probe's class weights are collinear")


def ledoit_wolf(X: torch.Tensor) -> float:
    """The Ledoit-Wolf shrinkage intensity in [0, 1] for the covariance of centred rows ``X`` (n, d): how far to
    pull ``X^T X / n`` toward ``tr/d * I`` to minimise the expected squared error (Ledoit & Wolf 2004).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> spread = torch.tensor([1.0, 2.0, 3.0, 4.0])                  # a covariance far from a multiple of I
        >>> few, many = torch.randn(5, 4, generator=g) * spread, torch.randn(5000, 4, generator=g) * spread
        >>> round(ledoit_wolf(few), 2), round(ledoit_wolf(many), 3)        # few rows: shrink a lot; many: hardly
        (0.74, 0.002)
    """
    n, d = X.shape
    X = X.double()
    cov = X.T @ X / n
    mu = float(cov.diagonal().sum()) / d
    delta = float(((cov - mu * torch.eye(d, dtype=X.dtype)) ** 2).sum()) / d
    X2 = X**2
    beta = float(((X2.T @ X2) / n - cov**2).sum()) / (d * n)
    return 0.0 if delta <= 0 else max(0.0, min(beta, delta) / delta)


def lda(acts: torch.Tensor, labels: Sequence, *, k: int | None = None, shrinkage: float | str = "auto") -> Fixed:
    """Fisher's linear discriminant: the ``k`` directions (default and at most ``c - 1`` for ``c`` classes)
    that maximise between-class over within-class variance. The within-class covariance ``S`` is shrunk toward a
    multiple of the identity, ``(1 - shrinkage) S + shrinkage * tr(S)/d * I``, by the Ledoit-Wolf intensity
    (``"auto"``, :func:`ledoit_wolf`) or a given number in [0, 1]: with fewer rows than dimensions (96 prompts
    at Gemma's width 640) ``S`` alone is mostly noise.

    Example:
        >>> acts = torch.randn(80, 6) * torch.tensor([5.0, 1, 1, 1, 1, 1])   # large noise on axis 0
        >>> acts[40:, :2] += torch.tensor([3.0, 0.5])                        # shift mostly along the noise
        >>> lda(acts, [0] * 40 + [1] * 40).weight[0].abs().argmax().item()   # LDA picks the clean axis 1
        1
    """
    x = as_acts(acts)
    classes, y = as_labels(labels, len(x))
    c, d = len(classes), x.shape[1]
    most = min(c - 1, d)
    k = most if k is None else count(k, "lda k", high=most, why=f"{c} classes give at most {most} directions")
    if shrinkage != "auto":
        shrinkage = as_float(shrinkage, "lda shrinkage", low=0, high=1, error=FeaturizerError, hint=" or 'auto'")
    x = x.double()
    means = _class_means(x, y, c)
    within = x - means[y]  # (N, d)
    S = within.T @ within / len(x)
    shrinkage = ledoit_wolf(within) if shrinkage == "auto" else shrinkage
    S = (1 - shrinkage) * S + shrinkage * (S.diagonal().sum() / d + 1e-12) * torch.eye(d, dtype=x.dtype)
    centred = (means - x.mean(0)) * torch.bincount(y, minlength=c).double().sqrt()[:, None] / len(x) ** 0.5
    L = torch.linalg.cholesky(S)  # S = L L^T; maximise u^T L^-1 Sb L^-T u over unit u, then w = L^-T u
    M = torch.linalg.solve_triangular(L, centred.T, upper=False)  # (d, c) = L^-1 B^T with Sb = B^T B
    u, sv, _ = torch.linalg.svd(M, full_matrices=False)  # left singular vectors: eigenvectors of L^-1 Sb L^-T
    W = torch.linalg.solve_triangular(L.T, u[:, :k], upper=True).T  # (k, d), largest ratio first
    if bool((sv[:k] <= sv[0] * 1e-6).any()):
        raise FeaturizerError(f"lda: the class means differ along fewer than k={k} directions; ask for fewer")
    for i in range(k):  # point from the first class toward the others
        if float((means[1:] - means[:1]).sum(0) @ W[i]) < 0:
            W[i] = -W[i]
    return Fixed(W.to(torch.float32 if acts.dtype != torch.float64 else torch.float64))


def pca(acts: torch.Tensor, k: int) -> Fixed:
    """The top ``k`` principal axes of the (centred) activations, largest variance first; each row's sign makes
    its largest entry positive.

    Example:
        >>> acts = torch.randn(50, 4) * torch.tensor([1.0, 10.0, 1.0, 0.1])
        >>> pca(acts, 1).weight.abs().argmax().item()
        1
    """
    x = as_acts(acts)
    k = count(k, "pca k", high=min(x.shape), why=f"at most min(N, d) = {min(x.shape)} for activations {tuple(x.shape)}")
    _, _, vh = torch.linalg.svd((x - x.mean(0)).double(), full_matrices=False)  # rows: principal axes
    V = vh[:k]
    V = V * torch.sign(V.gather(1, V.abs().argmax(1, keepdim=True)))  # a deterministic sign
    return Fixed(V.to(x.dtype))


def kmeans(acts: torch.Tensor, k: int, *, seed: int = 0, iters: int = 100) -> Fixed:
    """k-means (k-means++ start, Lloyd's iterations) into ``k`` clusters; the ``k - 1`` differences of the
    centroids from the largest cluster's, orthonormalised. ``kmeans(acts, 2)`` is one direction.

    Example:
        >>> acts = torch.randn(60, 5) * 0.1; acts[30:, 4] += 3.0       # two clusters apart along axis 4
        >>> kmeans(acts, 2).weight[0].abs().argmax().item()
        4
    """
    x = as_acts(acts)
    n, d = x.shape
    k = count(k, "kmeans k", high=min(n, d + 1), why=f"between 2 and min(N, d + 1) = {min(n, d + 1)} clusters")
    if k < 2:
        raise FeaturizerError("kmeans k must be at least 2: the directions are differences between the clusters")
    iters = as_int(iters, "kmeans iters", low=1, error=FeaturizerError)
    g = torch.Generator().manual_seed(int(seed))
    x = x.double()
    centres = x[torch.randint(n, (1,), generator=g)]
    for _ in range(k - 1):  # k-means++: next centre drawn with probability ~ squared distance to the nearest
        d2 = torch.cdist(x, centres).min(1).values ** 2
        if float(d2.sum()) == 0:
            raise FeaturizerError(f"kmeans: the activations have fewer than k={k} distinct rows")
        centres = torch.cat([centres, x[torch.multinomial(d2 / d2.sum(), 1, generator=g)]])
    for _ in range(iters):
        assign = torch.cdist(x, centres).argmin(1)
        sizes = torch.bincount(assign, minlength=k)
        new = torch.zeros_like(centres).index_add_(0, assign, x) / sizes.clamp(min=1)[:, None].double()
        new[sizes == 0] = centres[sizes == 0]  # an emptied cluster keeps its centre
        if torch.allclose(new, centres):
            break
        centres = new
    sizes = torch.bincount(torch.cdist(x, centres).argmin(1), minlength=k)
    order = torch.argsort(-sizes, stable=True)  # largest cluster first
    centres = centres[order]
    return _span((centres[1:] - centres[:1]).to(torch.float32 if acts.dtype != torch.float64 else torch.float64),
                 "kmeans", "clusters whose centroids are collinear")  # fmt: skip


def svd(weight: torch.Tensor, k: int, *, side: str = "input") -> Fixed:
    """The top ``k`` singular directions of a weight matrix (out, in), as ``nn.Linear`` stores it: ``side="input"``
    the right singular vectors (directions the layer reads, width ``in``), ``"output"`` the left ones (directions it
    writes, width ``out``). A fixed basis for DBM over a weight's SVD: ``Mask(svd(W, 16))``.

    Example:
        >>> W = torch.diag(torch.tensor([1.0, 5.0, 2.0]))                # reads axis 1 the most
        >>> svd(W, 1).weight.abs().argmax().item(), svd(torch.ones(4, 3), 1, side="output").d_model
        (1, 4)
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or not weight.is_floating_point():
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise FeaturizerError(f"svd takes a float weight matrix (out, in); got {shape}")
    if side not in ("input", "output"):
        raise FeaturizerError(f"svd side must be 'input' (rows it reads) or 'output' (rows it writes); got {side!r}")
    W = as_acts(weight.detach().float(), "svd weight", least=1).double()
    k = count(k, "svd k", high=min(W.shape), why=f"at most min{tuple(W.shape)} singular directions")
    U, _, Vh = torch.linalg.svd(W, full_matrices=False)
    rows = Vh[:k] if side == "input" else U[:, :k].T
    rows = rows * torch.sign(rows.gather(1, rows.abs().argmax(1, keepdim=True)))  # a deterministic sign
    return Fixed(rows.float())


def random_basis(d: int, k: int, *, seed: int = 0) -> Fixed:
    """``k`` random orthonormal directions in width ``d`` (Gaussian rows, orthonormalised): the control.

    Example:
        >>> R = random_basis(640, 4, seed=1)
        >>> R.weight.shape, torch.allclose(R.weight @ R.weight.T, torch.eye(4), atol=1e-5)
        (torch.Size([4, 640]), True)
    """
    d = as_int(d, "random_basis d", low=1, error=FeaturizerError)
    k = count(k, "random_basis k", high=d, why=f"at most d={d} directions")
    g = torch.Generator().manual_seed(int(seed))
    return Fixed(torch.randn(k, d, generator=g))


__all__ = ["diff_means", "probe_direction", "lda", "pca", "kmeans", "svd", "random_basis", "ledoit_wolf"]
