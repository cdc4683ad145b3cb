"""The command line's forms of ReFT positions and layers, parsed into typed values.

Example:
    >>> parse_positions("f7+l7"), parse_layers("3;9;15", n_layers=18), parse_layers("all", n_layers=4)
    (first(7)+last(7), [3, 9, 15], [0, 1, 2, 3])
    >>> parse_positions("f1+l1+g"), parse_positions("r4")        # decode-time: generated tokens too
    (first(1)+last()+generated(), recent(4))

What a position means (the ReFT paper's rule for ``first(p) + last(s)`` on short prompts included) is
defined once, in :mod:`interp.positions`; ReFT counts the *prompt* tokens of each row (never the response
or padding); ``g`` (``generated()``) and ``r<k>`` (``recent(k)``) also edit each generated token (in training, each
response token), see :mod:`interp.positions`.
"""

from __future__ import annotations

import re

from interp.positions import Position, at, first, generated, last, recent, span

from .interventions import ReftError

_TOKEN = re.compile(r"^(f|l|r)(\d+)$")
_SHORT = {"f": first, "l": last, "r": recent}


def parse_positions(text: str) -> Position:
    """The CLI's string form: ``"f7+l7"``, ``"l1"``, ``"f1"``, ``"g"`` (generated), ``"r4"`` (recent(4)); also
    the repr form ``"first(7)+last(7)+generated()"``, so ``parse_positions(repr(p)) == p``.

    Example:
        >>> parse_positions("f1+l1"), parse_positions("recent(2)+generated()")
        (first(1)+last(), recent(2)+generated())
    """
    if isinstance(text, Position):
        return text
    out = []
    for piece in str(text).replace(" ", "").split("+"):
        m = _TOKEN.match(piece)
        if m:
            out.append(_SHORT[m.group(1)](int(m.group(2))))
            continue
        if piece in ("g", "generated()"):
            out.append(generated())
            continue
        m = re.match(r"^(first|last|at|span|recent)\((-?\d*)(?:,(-?\d+))?\)$", piece)
        if not m or (m.group(1) in ("at", "recent") and not m.group(2)) or ((m.group(1) == "span") != bool(m.group(3))):
            raise ReftError(
                f"cannot read positions {text!r}: part {piece!r} is not f<n>, l<n>, g, r<k>, first(n), last(n), "
                "at(i), span(a,b), generated() or recent(k); e.g. 'f7+l7' for the first 7 and last 7 prompt "
                "tokens, 'f1+l1+g' to also edit every generated token"
            )
        name, a, b = m.groups()
        if name == "recent":
            out.append(recent(int(a)))
        elif name == "span":
            out.append(span(int(a), int(b)))
        elif name == "at":
            out.append(at(int(a)))
        else:
            out.append((first if name == "first" else last)(int(a) if a else 1))
    pos = out[0]
    for p in out[1:]:
        pos = pos + p
    return pos


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
