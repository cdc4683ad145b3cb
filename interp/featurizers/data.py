"""What every featurizer checks first: activations as an (N, d) float matrix, labels as class indices, counts.

Example:
    >>> as_acts(torch.zeros(5, 1, 8)).shape           # (N, 1, d) from collect() at one position: squeezed
    torch.Size([5, 8])
    >>> as_acts(torch.zeros(5, 2, 8))
    Traceback (most recent call last):
    interp.errors.FeaturizerError: activations must be (N, d) or (N, 1, d); got shape (5, 2, 8): ...
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..checks import as_int, finite
from ..errors import FeaturizerError
from ..probe import classes_of


def as_acts(acts, what: str = "activations", *, least: int = 2) -> torch.Tensor:
    """``acts`` as a finite float (N, d) tensor (float64 stays float64), with at least ``least`` rows."""
    if not isinstance(acts, torch.Tensor):
        raise FeaturizerError(
            f"{what} must be a torch.Tensor (N, d), e.g. interp.collect(lm, prompts, at=site); "
            f"got {type(acts).__name__}"
        )
    if acts.dim() == 3 and acts.shape[1] == 1:
        acts = acts[:, 0]
    if acts.dim() != 2:
        raise FeaturizerError(
            f"{what} must be (N, d) or (N, 1, d); got shape {tuple(acts.shape)}: select one position, or flatten "
            "with acts.reshape(len(acts), -1) (or average with acts.mean(1))"
        )
    if not acts.is_floating_point():
        raise FeaturizerError(f"{what} must be floating point; got a {acts.dtype} tensor of shape {tuple(acts.shape)}")
    if acts.is_meta:
        raise FeaturizerError(f"{what} is on the meta device (a shape with no values); collect real activations")
    if acts.shape[0] < least or acts.shape[1] < 1:
        raise FeaturizerError(f"{what} need at least {least} rows of width >= 1; got shape {tuple(acts.shape)}")
    acts = acts.detach().to(torch.float64 if acts.dtype == torch.float64 else torch.float32)
    return finite(acts, f"{what} of shape {tuple(acts.shape)}", error=FeaturizerError)


def as_labels(labels: Sequence, n: int) -> tuple[list, torch.Tensor]:
    """The sorted classes and each row's class index; one label per activation row, two classes at least."""
    if isinstance(labels, (str, bytes)) or not hasattr(labels, "__len__"):
        raise FeaturizerError(f"labels must be a sequence with one label per row; got {type(labels).__name__}")
    if isinstance(labels, torch.Tensor) and labels.dim() != 1:
        raise FeaturizerError(
            f"labels must be one per row (a 1-D sequence); got a tensor of shape {tuple(labels.shape)}"
        )
    if len(labels) != n:
        raise FeaturizerError(f"got {n} activation rows and {len(labels)} labels; expected one label per row")
    return classes_of(labels)


def count(k, what: str, *, high: int, why: str) -> int:
    """An integer number of directions or clusters in [1, high]; ``why`` says what bounds it."""
    return as_int(k, what, low=1, high=high, error=FeaturizerError, hint=f" ({why})")


__all__ = ["as_acts", "as_labels", "count"]
