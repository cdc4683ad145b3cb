"""The interchange a DAS alignment performs: consecutive row blocks of one basis, each fed by its own variable's
source (:class:`Alignment`), and the no-rotation baseline on raw neurons (:func:`neuron_aligned`).

Example:
    >>> iv = neuron_aligned(16, (8, 8))                  # WX -> neurons 0..7, YZ -> neurons 8..15
    >>> iv.splits, iv.via.rank
    ((8, 8), 16)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .checks import as_int
from .errors import DASError
from .inputs import InputError
from .interventions import Intervention
from .subspace import Basis, BasisError, Boundless, Coordinate, edit


@dataclass(eq=False)
class Alignment(Intervention):
    """Interchange along ``via`` with consecutive row blocks fed by different sources (one per variable).

    ``source`` holds the variables' source vectors side by side: (B, k, w * n_variables). Rows of ``via``
    beyond ``sum(splits)`` keep the base's coordinates. With one variable this is ``Interchange(via)``.
    A featurizer whose edit is not linear (``via.linear`` False: a mask over SAE features) aligns one variable
    and does the interchange itself, ``via.interchange(h, source)``.

    Example:
        >>> iv = Alignment(Rotation(16), splits=(8, 8))   # WX -> rows 0..7, YZ -> rows 8..15
        >>> h, s_wx, s_yz = torch.randn(3, 2, 1, 16)       # (B, k, w) base and one source per variable
        >>> iv(h, torch.cat([s_wx, s_yz], -1)).shape      # sources side by side: (B, k, w * 2)
        torch.Size([2, 1, 16])
    """

    via: Basis
    splits: tuple[int, ...] = ()
    needs_source = True

    def __post_init__(self):
        if not isinstance(self.via, Basis):
            raise DASError(f"Alignment(via=...) must be a Basis (LowRankRotation, Rotation, ...); got {self.via!r}")
        self.splits = tuple(as_int(s, f"splits {self.splits!r}: each", low=1, error=DASError) for s in self.splits)
        if not getattr(self.via, "linear", True):
            if len(self.splits) > 1:
                raise DASError(
                    f"{type(self.via).__name__} is not a linear edit (it does its own interchange), so it aligns "
                    f"one variable; got splits={self.splits}: fit one per variable"
                )
            self.splits = self.splits or (self.via.rank,)
            return
        self.splits = self.splits or (self.via.rank,)
        if min(self.splits) < 1 or sum(self.splits) > self.via.rank:
            raise DASError(f"splits {self.splits} must be positive and sum to at most the basis rank {self.via.rank}")
        if isinstance(self.via, Boundless) and len(self.splits) > 1:
            raise DASError("a Boundless basis aligns one variable; use Rotation or LowRankRotation with splits=")

    def __call__(self, h, source=None):
        if source is None:
            raise InputError("Alignment needs source activations")
        if not getattr(self.via, "linear", True):  # e.g. SAE features: encode, swap the masked ones, decode
            if source.shape[-1] != h.shape[-1]:
                raise InputError(f"source vectors have width {source.shape[-1]}; expected {h.shape[-1]}")
            return self.via.interchange(h, source.to(h.device, h.dtype))
        R = self.via.weight  # (r, w), in the basis's dtype and on its device: the edit runs there, in float32
        w = h.shape[-1]
        if source.shape[-1] != w * len(self.splits):
            raise InputError(
                f"source vectors have width {source.shape[-1]}; expected {w} x {len(self.splits)} variables"
            )
        x = h.to(R.device, R.dtype)
        targets, start = [], 0
        for s, r in zip(source.split(w, dim=-1), self.splits):
            targets.append(s.to(x) @ R[start : start + r].T)  # (B, k, w) -> (B, k, r_j)
            start += r
        if start < R.shape[0]:
            targets.append(x @ R[start:].T)  # unaligned rows keep the base's coordinates
        return edit(x, R, torch.cat(targets, -1), self.via.mask()).to(h.device, h.dtype)

    def check(self, width: int) -> None:
        self.via.check_width(width, "site's vectors")


def neuron_aligned(width: int, splits: Sequence[int]) -> Alignment:
    """The no-rotation baseline: variable ``j`` gets the next ``splits[j]`` coordinate axes (neurons).

    Example:
        >>> from interp.tasks.hierarchical_equality import FIRST_HIDDEN, EqualityMLP, equality_pairs
        >>> mlp, test = interp.LM(EqualityMLP(seed=0)), equality_pairs(n=64, seed=1)
        >>> iia(mlp, test, at=FIRST_HIDDEN, via=neuron_aligned(16, (8, 8)))   # WX: neurons 0..7, YZ: 8..15
        0.59375
    """
    if sum(splits) > width:
        raise BasisError(f"splits {tuple(splits)} need {sum(splits)} neurons but the site has {width}")
    return Alignment(Coordinate(width, range(sum(splits))), tuple(splits))


__all__ = ["Alignment", "neuron_aligned"]
