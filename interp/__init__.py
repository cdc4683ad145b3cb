"""interp: find where a language model represents a variable, learn its subspace, and edit it.

Example:
    >>> import interp
    >>> from interp import Site, last, interchange
    >>> lm = interp.load()                                   # Gemma-3-270M, embedded, offline
    >>> out = interchange(lm, base, source, at=Site("resid_post", 12, last()))
"""

from .dii import DIIResult, collect, interchange, intervene
from .inputs import InputError, encode, token_ids
from .interventions import Interchange, Intervention, Mean, Steer, Zero
from .models import LM, ModelSpec, load
from .positions import Position, PositionError, at, first, last, span, token
from .sites import Site, SiteError
from .subspace import Basis, BasisError, Boundless, Coordinate, LowRankRotation, Rotation

__all__ = [
    "LM",
    "ModelSpec",
    "load",
    "Site",
    "SiteError",
    "Position",
    "PositionError",
    "at",
    "first",
    "last",
    "span",
    "token",
    "Basis",
    "BasisError",
    "Coordinate",
    "LowRankRotation",
    "Rotation",
    "Boundless",
    "Intervention",
    "Interchange",
    "Zero",
    "Mean",
    "Steer",
    "interchange",
    "intervene",
    "collect",
    "DIIResult",
    "encode",
    "token_ids",
    "InputError",
]
from .das import CausalModel, DASConfig, DASResult, Pairs, fit_das, iia, sweep_das  # noqa: E402, F401  (issue 3)
