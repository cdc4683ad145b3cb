"""Checks of numbers given to constructors: whole numbers, finite reals and finite tensors, with clear errors.

Example:
    >>> import numpy as np
    >>> as_int(np.int64(3), "rank", low=1)          # numpy integers are integers
    3
    >>> as_int(2.7, "rank", low=1)
    Traceback (most recent call last):
    ValueError: rank must be a positive integer; got 2.7
    >>> as_float(0, "temperature", low=0, open_low=True, hint="; anneal toward 0, never to it")
    Traceback (most recent call last):
    ValueError: temperature must be a positive number; got 0; anneal toward 0, never to it

Every constructor that takes a count, an index, a rate or a tensor of numbers checks it here, before anything
runs: a bool is not an integer (``layer=True`` is not layer 1), a float is not an integer even when whole
(``rank=3.0`` is refused rather than silently truncated, as ``2.7`` would be), and NaN or infinity is a number
no caller means.
"""

from __future__ import annotations

import math
import numbers
import operator

import numpy as np
import torch


def _show(value) -> str:
    if isinstance(value, torch.Tensor) and value.numel() != 1:
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, torch.Tensor):
        return repr(value.item())
    return repr(value)


def _interval(low, high, open_low=False, open_high=False) -> str:
    return f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"


def is_int(value) -> bool:
    """True for ints and integral numpy or 0-d integer torch values; False for bools, floats and the rest."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def as_int(value, what: str, *, low: int | None = None, high: int | None = None, error=ValueError, hint="") -> int:
    """``value`` as a plain int, or ``error`` naming it: ``what`` must be an integer (in ``[low, high]``)."""
    if low == 1 and high is None:
        expected = "a positive integer"
    elif low == 0 and high is None:
        expected = "a non-negative integer"
    elif low is not None and high is not None:
        expected = f"an integer in {_interval(low, high)}"
    elif low is not None:
        expected = f"an integer >= {low}"
    elif high is not None:
        expected = f"an integer <= {high}"
    else:
        expected = "an integer"
    if not is_int(value):
        kind = "a bool" if isinstance(value, (bool, np.bool_)) else None
        got = f"{_show(value)} ({kind})" if kind else _show(value)
        raise error(f"{what} must be {expected}; got {got}{hint}")
    n = operator.index(value)
    if (low is not None and n < low) or (high is not None and n > high):
        raise error(f"{what} must be {expected}; got {n}{hint}")
    return n


def as_float(
    value,
    what: str,
    *,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
    error=ValueError,
    hint="",
) -> float:
    """``value`` as a finite float, or ``error`` naming it; ``open_low``/``open_high`` exclude the bounds."""
    if low == 0 and open_low and high is None:
        expected = "a positive number"
    elif low == 0 and high is None:
        expected = "a non-negative number"
    elif low is not None and high is not None:
        expected = f"a number in {_interval(low, high, open_low, open_high)}"
    elif low is not None:
        expected = f"a number {'>' if open_low else '>='} {low}"
    elif high is not None:
        expected = f"a number {'<' if open_high else '<='} {high}"
    else:
        expected = "a finite number"
    real = isinstance(value, numbers.Real) or (isinstance(value, torch.Tensor) and value.numel() == 1)
    if (
        not real
        or isinstance(value, (bool, np.bool_))
        or (isinstance(value, torch.Tensor) and value.dtype == torch.bool)
    ):
        raise error(f"{what} must be {expected}; got {_show(value)}{hint}")
    x = float(value)
    if not math.isfinite(x):
        raise error(f"{what} must be {expected}; got {x}{hint}")
    too_low = low is not None and (x <= low if open_low else x < low)
    too_high = high is not None and (x >= high if open_high else x > high)
    if too_low or too_high:
        raise error(f"{what} must be {expected}; got {_show(value)}{hint}")
    return x


def finite(t: torch.Tensor, what: str, *, error=ValueError, hint="") -> torch.Tensor:
    """``t`` if every entry is finite, else ``error`` saying how many are NaN or infinite."""
    if not isinstance(t, torch.Tensor):
        raise error(f"{what} must be a torch.Tensor; got {type(t).__name__}{hint}")
    if t.is_floating_point() or t.is_complex():
        bad = ~torch.isfinite(t.detach())
        if bad.any():
            n_nan = int(torch.isnan(t.detach()).sum())
            n_inf = int(bad.sum()) - n_nan
            raise error(f"{what} must be finite; got {_show(t)} with {n_nan} NaN and {n_inf} infinite entries{hint}")
    return t


__all__ = ["as_int", "as_float", "finite", "is_int"]
