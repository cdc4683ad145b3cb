"""Featurizers: the bases an interchange runs in, beyond DAS's trained rotation.

Each gives a basis used by the same edit as DAS (:mod:`interp.subspace`), so IIA, Cause/Isolate and every plot
apply alike: directions from activations and labels (:func:`diff_means`, :func:`probe_direction`, :func:`lda`,
:func:`pca`, :func:`kmeans`, :func:`random_basis`, each a :class:`interp.Fixed`), a weight's singular
directions (:func:`svd`); a sparse autoencoder's features (:class:`SAE`); and DBM, a learned mask over any of
them or over the neurons (:class:`Mask`).

Example:
    >>> site = Site("resid_post", 1, last())
    >>> acts = collect(lm, prompts, at=site)                            # (8, 1, 32), collected once
    >>> interchange(lm, base, source, at=site, via=pca(acts, 2)).logits.shape
    torch.Size([4, 97])
    >>> das = fit_das(lm, train, at=site, via=Mask(pca(acts, 4)), steps=2, progress=False)   # DBM over PCA
    >>> das.basis.rank
    4
"""

from ..subspace import Fixed
from .directions import diff_means, kmeans, lda, pca, probe_direction, random_basis, svd
from .mask import Mask
from .sae import SAE

__all__ = ["Fixed", "diff_means", "probe_direction", "lda", "pca", "kmeans", "svd", "random_basis", "SAE", "Mask"]
