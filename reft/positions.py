"""Where ReFT intervenes: prompt positions ``first(p) + last(s)`` with the paper's rule for short prompts.

Example:
    >>> prompt_indices(first(3) + last(3), n=4)       # p <- min(p, n // 2), s <- min(s, ceil(n / 2))
    [[0, 1], [2, 3]]
    >>> parse_positions("f7+l7"), parse_layers("3;9;15", n_layers=18), parse_layers("all", n_layers=4)
    (first(7)+last(7), [3, 9, 15], [0, 1, 2, 3])

Positions count tokens of the *prompt* only (never the response or padding). For a prompt of ``n`` tokens,
``first(p) + last(s)`` takes ``p' = min(p, floor(n/2))`` leading and ``s' = min(s, ceil(n/2))`` trailing
tokens (Wu et al. 2024, appendix on position choice), so prefix and suffix never overlap. Other typed
positions of :mod:`interp.positions` (``at``, ``span``, ``token``) resolve as they do there. Rows with fewer
positions than others are padded with *no-op slots*: a column the edit leaves unchanged.
"""

from __future__ import annotations

import math
import re

import torch

from interp.positions import Concat, Position, PositionError, _First, _Last, at, first, last, span

from .interventions import ReftError


def parts(pos: Position) -> list[Position]:
    """The parts of a combined position (``first(1)+last(1)`` -> ``[first(1), last()]``)."""
    return list(pos.parts) if isinstance(pos, Concat) else [pos]


def prompt_indices(pos: Position, n: int, ids: torch.Tensor | None = None, tokenizer=None) -> list[list[int]]:
    """Indices among the ``n`` prompt tokens, one list per part of ``pos`` (first/last follow the paper's rule)."""
    if n <= 0:
        raise PositionError(
            f"positions {pos!r} were asked of an empty prompt (0 tokens); every example needs a non-empty prompt"
        )
    ps = parts(pos)
    n_first = sum(p.n for p in ps if isinstance(p, _First))
    n_last = sum(p.n for p in ps if isinstance(p, _Last))
    if n_first and n_last:
        cap_first, cap_last = n // 2, math.ceil(n / 2)
    else:
        cap_first = cap_last = n
    out = []
    for p in ps:
        if isinstance(p, _First):
            k = min(p.n, cap_first)
            cap_first -= k
            out.append(list(range(k)))
        elif isinstance(p, _Last):
            k = min(p.n, cap_last)
            cap_last -= k
            out.append(list(range(n - k, n)))
        else:
            idx = p.indices(n, ids, tokenizer)
            bad = [i for i in idx if not 0 <= i < n]
            if bad:
                raise PositionError(f"position {p!r} asks for token {bad[0]} of a prompt with {n} tokens")
            out.append(idx)
    return out


def resolve(pos: Position, starts, lengths, T: int, ids: torch.Tensor | None = None, tokenizer=None):
    """Per-part index tensors into a padded batch whose prompt ``b`` occupies ``[starts[b], starts[b]+lengths[b])``.

    Returns a list with, per part of ``pos``, ``(index (B, k), valid (B, k))``. Invalid slots point at a
    column that no part of that row selects, so writing the unchanged vector back there is a no-op.
    """
    per_row = []
    for b, (s, n) in enumerate(zip(starts, lengths)):
        row_ids = ids[b, s : s + n] if ids is not None else None
        per_row.append([[s + i for i in part] for part in prompt_indices(pos, int(n), row_ids, tokenizer)])
    out = []
    for j in range(len(parts(pos))):
        k = max(len(r[j]) for r in per_row)  # 0 when no row has this part: nothing to edit
        index = torch.zeros(len(per_row), k, dtype=torch.long)
        valid = torch.zeros(len(per_row), k, dtype=torch.bool)
        for b, r in enumerate(per_row):
            chosen = r[j]
            taken = {i for part in r for i in part}
            spare = (c for c in range(T) if c not in taken)
            for slot in range(k):
                if slot < len(chosen):
                    index[b, slot], valid[b, slot] = chosen[slot], True
                else:
                    c = next(spare, None)
                    if c is None:
                        raise PositionError(
                            f"positions {pos!r}: row {b} selects {len(taken)} of {T} columns and no column is left "
                            "for a no-op slot; group prompts of similar length or use first/last positions"
                        )
                    index[b, slot] = c
                    taken.add(c)
        out.append((index, valid))
    return out


_TOKEN = re.compile(r"^(f|l)(\d+)$")


def parse_positions(text: str) -> Position:
    """The CLI's string form: ``"f7+l7"``, ``"l1"``, ``"f1"``; also the repr form ``"first(7)+last(7)"``.

    Example:
        >>> parse_positions("f1+l1")
        first(1)+last()
    """
    if isinstance(text, Position):
        return text
    out = []
    for piece in str(text).replace(" ", "").split("+"):
        m = _TOKEN.match(piece)
        if m:
            out.append((first if m.group(1) == "f" else last)(int(m.group(2))))
            continue
        m = re.match(r"^(first|last|at|span)\((-?\d*)(?:,(-?\d+))?\)$", piece)
        if not m:
            raise ReftError(
                f"cannot read positions {text!r}: part {piece!r} is not f<n>, l<n>, first(n), last(n), at(i) "
                "or span(a,b); e.g. 'f7+l7' for the first 7 and last 7 prompt tokens"
            )
        name, a, b = m.groups()
        if name == "span":
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
