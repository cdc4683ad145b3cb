"""Positions written as text, read by one parser: the command lines' short forms and every position's repr.

Example:
    >>> parse_positions("f1+l1+g"), parse_positions("r4"), parse_positions("all+g")
    (first(1)+last()+generated(), recent(4), all_tokens()+generated())
    >>> parse_positions("f7 + l7") == first(7) + last(7)
    True
    >>> pos = token(" Mary", occurrence=1) + at(-2) + span(0, 3)
    >>> parse_positions(repr(pos)) == pos                        # every repr reads back
    True
    >>> parse_positions("x7")
    Traceback (most recent call last):
    interp.errors.PositionParseError: cannot read positions 'x7': part 'x7' is not a position; expected parts
    joined by '+', each f<n>, l<n>, r<k>, g, all, or a constructor: first(n), last(n), at(i), ...

Short forms: ``f<n>`` is ``first(n)``, ``l<n>`` ``last(n)``, ``r<k>`` ``recent(k)``, ``g`` ``generated()``,
``all`` ``all_tokens()``; ``last``, ``first`` and ``generated`` may drop their parentheses. A part may also be
any constructor of :mod:`interp.positions` called with literal arguments (the repr form), and parts join with
``+``. The text is read as a Python expression tree (never evaluated): only those names, literals and ``+``.
The error (:class:`~interp.errors.PositionParseError`) is a PositionError and a ReftError, so both packages'
callers catch it as before.
"""

from __future__ import annotations

import ast
import re

from .errors import PositionError, PositionParseError
from .positions import Position, all_tokens, at, first, generated, last, recent, span, token

CONSTRUCTORS = {
    "first": first,
    "last": last,
    "at": at,
    "span": span,
    "token": token,
    "generated": generated,
    "recent": recent,
    "all_tokens": all_tokens,
}
NAMES = {"g": generated, "all": all_tokens, "last": last, "first": first, "generated": generated,
         "all_tokens": all_tokens}  # fmt: skip
SHORT = re.compile(r"(f|l|r)(\d+)")
SHORT_KINDS = {"f": first, "l": last, "r": recent}
FORMS = (
    "f<n>, l<n>, r<k>, g, all, or a constructor: first(n), last(n), at(i), span(a, b), token(text, occurrence), "
    "generated(), recent(k), all_tokens()"
)


class _Unreadable(Exception):
    """A part of the text that is not a position (the message names it)."""


def parse_positions(text) -> Position:
    """The position ``text`` stands for (a :class:`~interp.positions.Position` is returned as is).

    Example:
        >>> parse_positions("first(1)+last()"), parse_positions("last"), parse_positions("recent(2)+generated()")
        (first(1)+last(), last(), recent(2)+generated())
    """
    if isinstance(text, Position):
        return text
    try:
        return _value(ast.parse(str(text).strip(), mode="eval").body)
    except SyntaxError:
        why = "it is not a sum of positions"
    except _Unreadable as e:
        why = str(e)
    except (PositionError, TypeError, ValueError) as e:  # a constructor refused its arguments
        why = str(e)
    raise PositionParseError(
        f"cannot read positions {text!r}: {why}; expected parts joined by '+', each {FORMS}; e.g. 'f7+l7' (the "
        "first 7 and last 7 prompt tokens), 'f1+l1+g' (and every generated token)"
    )


def _value(node: ast.AST) -> Position:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _value(node.left) + _value(node.right)
    if isinstance(node, ast.Name):
        m = SHORT.fullmatch(node.id)
        if m:
            return SHORT_KINDS[m.group(1)](int(m.group(2)))
        if node.id in NAMES:
            return NAMES[node.id]()
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in CONSTRUCTORS:
        if any(k.arg is None for k in node.keywords):
            raise _Unreadable(f"part {ast.unparse(node)!r} passes **keywords")
        args = [_literal(a, node) for a in node.args]
        kwargs = {k.arg: _literal(k.value, node) for k in node.keywords}
        return CONSTRUCTORS[node.func.id](*args, **kwargs)
    raise _Unreadable(f"part {ast.unparse(node)!r} is not a position")


def _literal(arg: ast.AST, call: ast.Call):
    try:
        return ast.literal_eval(arg)
    except ValueError:
        raise _Unreadable(f"part {ast.unparse(call)!r} has an argument that is not a literal") from None


__all__ = ["parse_positions", "FORMS"]
