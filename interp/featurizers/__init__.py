"""Featurizers: the bases an interchange runs in, beyond DAS's trained rotation.

Each returns a basis used by the same edit as DAS (:mod:`interp.subspace`), so IIA, Cause/Isolate and every
plot apply alike: directions from activations and labels (:func:`diff_means`, :func:`probe_direction`,
:func:`lda`, :func:`pca`, :func:`kmeans`, :func:`random_basis`, all :class:`interp.Fixed`).

Example:
    >>> acts = collect(lm, prompts, at=Site("resid_post", 1, last()))          # (8, 1, 32), collected once
    >>> via = pca(acts, 2)
    >>> interchange(lm, base, source, at=Site("resid_post", 1, last()), via=via).logits.shape
    torch.Size([4, 97])
"""

from ..subspace import Fixed
from .directions import diff_means, kmeans, lda, pca, probe_direction, random_basis

__all__ = ["Fixed", "diff_means", "probe_direction", "lda", "pca", "kmeans", "random_basis"]
