"""The command line's forms of ReFT positions and layers, parsed into typed values.

Positions are read by :func:`interp.position_text.parse_positions`, the one parser of position strings (re-exported
here as ``reft.parse_positions``); its error is a :class:`ReftError` as well as a PositionError.

Example:
    >>> parse_positions("f7+l7"), parse_layers("3;9;15", n_layers=18), parse_layers("all", n_layers=4)
    (first(7)+last(7), [3, 9, 15], [0, 1, 2, 3])
    >>> parse_positions("f1+l1+g"), parse_positions("r4")        # decode-time: generated tokens too
    (first(1)+last()+generated(), recent(4))
    >>> parse_positions("all+g"), parse_positions("first(1)+last()")   # every prompt token; the repr form
    (all_tokens()+generated(), first(1)+last())

What a position means (the ReFT paper's rule for ``first(p) + last(s)`` on short prompts included) is
defined once, in :mod:`interp.positions`; ReFT counts the *prompt* tokens of each row (never the response
or padding); ``g`` (``generated()``) and ``r<k>`` (``recent(k)``) also edit each generated token (in training, each
response token), see :mod:`interp.positions`.
"""

from __future__ import annotations

import re

from interp.position_text import parse_positions

from .interventions import ReftError


def parse_layers(text, n_layers: int) -> list[int]:
    """``"3;9;18"``, ``"3,9"``, ``"all"``, an int or a list -> sorted layer indices, checked against the model."""
    if isinstance(text, int):
        layers = [text]
    elif isinstance(text, (list, tuple, range)):
        layers = [int(x) for x in text]
    elif str(text).strip().lower() == "all":
        layers = list(range(n_layers))
    else:
        try:
            layers = [int(x) for x in re.split(r"[;,]", str(text)) if x.strip()]
        except ValueError:
            raise ReftError(f"cannot read layers {text!r}; expected e.g. '9', '3;9;15' or 'all'") from None
    if not layers:
        raise ReftError(f"no layers in {text!r}; expected e.g. '9', '3;9;15' or 'all'")
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad:
        raise ReftError(f"layer {bad[0]} does not exist: the model has {n_layers} layers (0..{n_layers - 1})")
    return sorted(set(layers))


__all__ = ["parse_positions", "parse_layers"]
