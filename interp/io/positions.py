"""Positions and sites as plain JSON: every kind of :mod:`interp.positions`, structured, and back.

Example:
    >>> position_to_json(token(" Mary", 1) + last())              # every position kind, as plain JSON
    {'kind': 'sum', 'parts': [{'kind': 'token', 'text': ' Mary', 'occurrence': 1}, {'kind': 'last', 'n': 1}]}
    >>> position_from_json({"kind": "at", "i": -2})
    at(-2)
"""

from __future__ import annotations

from .. import positions as _p
from ..errors import FormatError, PositionError
from ..position_text import parse_positions
from ..positions import Position
from ..sites import Site
from .schema import TYPE_NAMES, Config, show_value

_KINDS = {  # kind -> (class, constructor, fields with their JSON types)
    "first": (type(_p.first(1)), _p.first, {"n": int}),
    "last": (type(_p.last(1)), _p.last, {"n": int}),
    "at": (type(_p.at(0)), _p.at, {"i": int}),
    "span": (type(_p.span(0, 1)), _p.span, {"start": int, "stop": int}),
    "token": (type(_p.token("x")), _p.token, {"text": str, "occurrence": int}),
    "generated": (type(_p.generated()), _p.generated, {}),
    "recent": (type(_p.recent(1)), _p.recent, {"k": int}),
    "all_tokens": (type(_p.all_tokens()), _p.all_tokens, {}),
}
KIND_OF = {cls: kind for kind, (cls, _, _) in _KINDS.items()}


def position_to_json(pos: Position) -> dict:
    """A position as plain JSON: ``{"kind": "last", "n": 1}``, ``{"kind": "sum", "parts": [...]}``.

    Refuses a position a file could not restore (a user-defined Position subclass), before anything is written.
    """
    if type(pos) is _p.Concat:
        return {"kind": "sum", "parts": [position_to_json(p) for p in pos.items]}
    kind = KIND_OF.get(type(pos))
    if kind is None:
        raise FormatError(
            f"cannot save position {pos!r}: {type(pos).__qualname__} is not one of interp.positions' kinds "
            f"({', '.join(_KINDS)} and their sums), so a saved file could not restore it; use those kinds"
        )
    return {"kind": kind, **{f: getattr(pos, f) for f in _KINDS[kind][2]}}


def position_from_json(data) -> Position:
    """Inverse of :func:`position_to_json`: ``position_from_json({"kind": "at", "i": -2}) == at(-2)``."""
    if not isinstance(data, dict) or "kind" not in data:
        raise FormatError(f"position {data!r} is not an object with a 'kind'; expected e.g. {{'kind': 'last', 'n': 1}}")
    kind = data["kind"]
    if kind == "sum":
        if set(data) != {"kind", "parts"} or not isinstance(data["parts"], list) or not data["parts"]:
            raise FormatError(f"position {data!r}: a sum has exactly the keys 'kind' and 'parts' (a non-empty list)")
        return _p.Concat(tuple(position_from_json(p) for p in data["parts"]))
    if kind not in _KINDS:
        raise FormatError(f"unknown position kind {kind!r} in {data!r}; known: {', '.join(_KINDS)}, sum")
    _, make, fields = _KINDS[kind]
    unknown, missing = sorted(set(data) - {"kind", *fields}), sorted(set(fields) - set(data))
    if unknown or missing:
        bad = f"unknown field {unknown[0]!r}" if unknown else f"missing field {missing[0]!r}"
        raise FormatError(f"position {data!r}: {bad}; {kind} has the fields {', '.join(fields)}")
    for f, t in fields.items():
        if not isinstance(data[f], t) or isinstance(data[f], bool):
            raise FormatError(f"position {data!r}: {kind}.{f} is {show_value(data[f])}; expected {TYPE_NAMES[t]}")
    return make(*(data[f] for f in fields))


def site_to_json(site: Site) -> dict:
    """A site as JSON (its position structured); refuses one a file could not restore."""
    if type(site) is not Site:
        raise FormatError(f"cannot save site {site!r}: a {type(site).__name__}, not an interp.Site")
    return {
        "component": site.component,
        "layer": site.layer,
        "pos": position_to_json(site.pos),
        "head": site.head,
        "path": site.path,
        "io": site.io,
    }


SITE = {"component": str, "layer": (int, type(None)), "pos": dict, "head": (int, type(None)),
         "path": (str, type(None)), "io": str}  # fmt: skip


def site_from_json(data) -> Site:
    if not isinstance(data, dict) or set(data) != set(SITE):
        raise FormatError(f"site {data!r} must have exactly the keys {sorted(SITE)}")
    for k, t in SITE.items():
        ts = t if isinstance(t, tuple) else (t,)
        if not isinstance(data[k], ts) or isinstance(data[k], bool):
            want = " or ".join(TYPE_NAMES[x] for x in ts)
            raise FormatError(f"site {data!r}: {k} is {show_value(data[k])}; expected {want}")
    pos = position_from_json(data["pos"])
    if data["component"] == "module":
        return Site.module(data["path"], pos, io=data["io"])
    return Site(data["component"], data["layer"], pos, data["head"])


def legacy_position(text: str) -> Position:
    """The position a repr such as ``first(1)+last()`` or ``token(' Mary', occurrence=1)`` stands for (the
    files of the previous layouts stored positions so), read by the one parser (:mod:`interp.position_text`).
    """
    try:
        return parse_positions(str(text))
    except PositionError as e:
        raise FormatError(str(e)) from None


def read_site(cfg: Config, where: str, data) -> Site:
    """The site ``data`` of config ``cfg`` at ``where`` (errors name the file and the key)."""
    return cfg.build(where, site_from_json, data)


__all__ = ["position_to_json", "position_from_json", "site_to_json", "site_from_json", "read_site",
           "legacy_position", "SITE", "KIND_OF"]  # fmt: skip
