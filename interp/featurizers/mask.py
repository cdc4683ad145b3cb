"""DBM: a learned, annealed binary mask over the coordinates of a fixed featurizer (neurons, given rows, SAE).

Example:
    >>> M = Mask(Fixed(torch.eye(8)[:3]), temperature=1.0)     # a mask over 3 fixed directions
    >>> M.mask()                                               # sigmoid(logits / temperature): 0.5 at the start
    tensor([0.5000, 0.5000, 0.5000], grad_fn=<SigmoidBackward0>)
    >>> h, s = torch.zeros(2, 8), torch.ones(2, 8)
    >>> M.interchange(h, s)[0]                                 # half of each kept direction's source value
    tensor([0.5000, 0.5000, 0.5000, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000], grad_fn=<SelectBackward0>)
    >>> Mask(16).rank, Mask(SAE.random(16, 64)).linear         # all 16 neurons; SAE features: not a linear edit
    (16, False)

Train it like any basis, ``fit_das(lm, pairs, at=site, via=Mask(...))``: the trainer anneals ``temperature``
(soft at first, near binary at the end) and adds :meth:`Mask.penalty` (the sparsity term) to the loss, so the
mask keeps only the coordinates the interchange needs. Over linear features (rows ``R``) the edit is the one
of every basis, ``h + R^T (m * (R s - R h))``; over an SAE's features it is ``h + decode(m * enc(s)) -
decode(m * enc(h))``, which keeps the part of ``h`` the SAE does not reconstruct.
"""

from __future__ import annotations

import torch
from torch import nn

from ..checks import as_float, as_int
from ..errors import BasisError, FeaturizerError
from ..subspace import Annealed, Basis, Fixed, edit
from .sae import SAE


class Mask(Annealed, Basis):
    """A learned soft mask ``sigmoid(logits / temperature)`` over a fixed featurizer's coordinates.

    Args:
        features: a :class:`interp.Fixed` (or any basis: its rows are frozen), an integer width ``d`` or
            ``"neurons"`` with ``d_model=`` (the d coordinate axes), or an :class:`SAE` (its features).
        temperature: the mask's temperature (> 0), annealed by the trainer (``DASConfig.temperature``).
        sparsity: the weight of :meth:`penalty`, the sum of the mask's values.
        init: the logits' starting value (0: every mask value 0.5).

    Example:
        >>> M = Mask("neurons", d_model=4, sparsity=0.1)
        >>> round(M.penalty().item(), 4)              # 0.1 * (4 x 0.5)
        0.2
        >>> M.kept()                                  # coordinates whose mask is above 0.5: none yet
        []
    """

    def __init__(self, features, *, temperature: float = 1.0, sparsity: float = 1e-2, init: float = 0.0,
                 d_model: int | None = None):  # fmt: skip
        super().__init__()
        if isinstance(features, str):
            if features != "neurons" or d_model is None:
                raise FeaturizerError(
                    f"Mask features {features!r}: a string must be 'neurons', with d_model= (the site's width); "
                    "or give a Fixed basis, an SAE, or the width as an integer"
                )
            features = as_int(d_model, "Mask d_model", low=1, error=FeaturizerError)
        elif d_model is not None:
            raise FeaturizerError("Mask(d_model=...) goes with features='neurons' only; the features give the width")
        if isinstance(features, SAE):
            self.sae, self.linear = features, False
            self.d_model, self.rank = features.d_model, features.n_features
        elif isinstance(features, Basis) or (isinstance(features, int) and not isinstance(features, bool)):
            if isinstance(features, Basis) and not getattr(features, "linear", True):
                raise FeaturizerError(f"Mask features must be rows, neurons or an SAE; got a {type(features).__name__}")
            rows = torch.eye(as_int(features, "Mask width", low=1, error=FeaturizerError)) if isinstance(
                features, int) else features.weight.detach().clone()  # fmt: skip
            self.sae = None
            self.d_model, self.rank = rows.shape[1], rows.shape[0]
            self.register_buffer("rows", rows)
        else:
            raise FeaturizerError(
                f"Mask features must be a Fixed basis (e.g. pca(acts, 16)), an SAE, 'neurons' with d_model=, or a "
                f"width; got {type(features).__name__}"
            )
        self.sparsity = as_float(sparsity, "Mask sparsity", low=0, error=FeaturizerError, hint="; try 1e-2")
        init = as_float(init, "Mask init", error=FeaturizerError, hint="; the logits' start, e.g. 0.0")
        self.logits = nn.Parameter(torch.full((self.rank,), init))
        self.temperature = temperature

    linear = True  # over rows or neurons; an instance over an SAE sets False

    @property
    def weight(self) -> torch.Tensor:
        if self.sae is not None:
            raise BasisError(
                "a Mask over SAE features has no rows (the edit goes through the SAE's encoder and decoder); "
                "use mask.interchange(h, source), or via=mask in interchange/iia/fit_das"
            )
        return self.rows

    def mask(self) -> torch.Tensor:
        return torch.sigmoid(self.logits / self.temperature)

    def penalty(self) -> torch.Tensor:
        """``sparsity * sum(mask)``: the term the trainer adds so that unneeded coordinates close."""
        return self.sparsity * self.mask().sum()

    def kept(self, threshold: float = 0.5) -> list[int]:
        """The coordinates whose mask value is above ``threshold``."""
        return torch.nonzero(self.mask().detach() > threshold).flatten().tolist()

    def effective_rank(self) -> int:
        return len(self.kept())

    def features(self) -> Fixed | SAE:
        """The featurizer under the mask: the frozen rows as a :class:`Fixed`, or the SAE."""
        return self.sae if self.sae is not None else Fixed(self.rows)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        if self.sae is None:
            return super().project(h)
        self.check_width(h.shape[-1])
        return self.sae.encode(h).to(h.device)

    def edit(self, h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.sae is None:
            return super().edit(h, target)
        self.check_width(h.shape[-1])
        m = self.mask()
        delta = (target.to(m.device, m.dtype) - self.sae.encode(h)) * m  # (..., n_features)
        return (h.to(m.device, m.dtype) + delta @ self.sae.W_dec).to(h.device, h.dtype)

    def interchange(self, h: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        if self.sae is None:
            self.check_width(h.shape[-1])
            R = self.rows
            return edit(h, R, source.to(R.device, R.dtype) @ R.T, self.mask())
        return self.edit(h, self.sae.encode(source))

    def extra_repr(self) -> str:
        what = "sae" if self.sae is not None else "rows"
        return f"{what}, d_model={self.d_model}, rank={self.rank}, temperature={self.temperature:g}"


__all__ = ["Mask"]
