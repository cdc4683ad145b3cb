"""What every typed position shares: the :class:`Position` base class, sums of positions (:class:`Concat`), and
locating them in a padded batch (:class:`Located`). The kinds themselves and their rules are in
:mod:`interp.positions`, which re-exports these names.

Example:
    >>> loc = (first(1) + last(1)).locate(torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]))   # left padding
    >>> type(loc).__name__, loc.index.tolist(), loc.complete
    ('Located', [[1, 3], [0, 3]], True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import PositionError


@dataclass
class Located:
    """Resolved positions: ``index`` (B, k) columns of the padded batch, ``valid`` (B, k) real slots."""

    index: torch.Tensor
    valid: torch.Tensor

    @property
    def complete(self) -> bool:
        """True when no row has an invalid slot."""
        return bool(self.valid.all())


class Position:
    """Base class. A new kind of position implements ``indices(n, ids, tokenizer) -> list[int]``: the chosen
    tokens among the ``n`` real tokens ``ids`` (a 1-D tensor) of one prompt. A kind that also takes the generated
    tokens (a decode-time position) sets ``takes_generated = True``; its ``indices`` are its prompt tokens.

    Example:
        >>> class Second(Position):                     # the second real token of each prompt
        ...     def indices(self, n, ids, tokenizer):
        ...         return [1]
        >>> Second().resolve(torch.tensor([[0, 1, 1], [1, 1, 1]])).tolist()
        [[2], [1]]
    """

    takes_generated = False
    mask_only = False  # True when indices depend on the token count alone (not ids): equal masks share them
    edge: str | None = None  # "first" / "last" for first(n) / last(n): a sum of both follows the ReFT rule

    def indices(self, n: int, ids: torch.Tensor | None, tokenizer) -> list[int]:
        raise NotImplementedError

    @property
    def parts(self) -> tuple[Position, ...]:
        """The parts of a sum (``first(1)+last(1)`` -> ``(first(1), last())``); ``(self,)`` otherwise."""
        return (self,)

    def split(self, n: int, ids: torch.Tensor | None = None, tokenizer=None) -> list[list[int]]:
        """Token indices per part on one prompt of ``n`` tokens, by the rule in the module docstring."""
        return [_checked(self, self.indices(n, ids, tokenizer), n)]

    @property
    def decodes(self) -> bool:
        """True when some part edits generated tokens (``generated()``, ``recent(k)``)."""
        return self.decode_part is not None

    @property
    def decode_part(self) -> int | None:
        """The index of the part that takes the generated tokens (the first that decodes), or None."""
        return next((j for j, p in enumerate(self.parts) if p.takes_generated), None)

    def __add__(self, other: Position) -> Position:
        if not isinstance(other, Position):
            return NotImplemented
        return Concat(self.parts + other.parts)

    def locate(self, mask: torch.Tensor, input_ids=None, tokenizer=None, *, by_part: bool = False, generated=None):
        """``Located`` (B, k) positions in the padded batch (a list with one per part when ``by_part``).

        ``mask`` (B, T) marks the tokens positions count over: the attention mask, or a ReFT prompt's columns.
        ``generated`` (B, T) marks the columns of generated tokens (in teacher forcing: the response tokens);
        a decode-time part takes all of them after its prompt tokens. Without it only prompt tokens are located.
        """
        per_row = _per_row(self, mask, input_ids, tokenizer)  # [row][part] -> padded column indices
        j = self.decode_part
        if generated is not None and j is not None:
            g = generated.bool()
            per_row = [
                [part + g[b].nonzero().flatten().tolist() if i == j else part for i, part in enumerate(r)]
                for b, r in enumerate(per_row)
            ]
        n_parts = len(per_row[0]) if per_row else 0
        if by_part:
            return [_pack([r[j] for r in per_row], mask) for j in range(n_parts)]
        return _pack([[i for part in r for i in part] for r in per_row], mask)

    def resolve(self, attention_mask: torch.Tensor, input_ids=None, tokenizer=None) -> torch.Tensor:
        """Index tensor ``(B, k)``; every row must have the same number ``k`` of positions.

        Example:
            >>> last().resolve(torch.tensor([[0, 1, 1], [1, 1, 1]])).tolist()
            [[2], [2]]
        """
        if self.decodes:
            raise PositionError(
                f"position {self!r} edits generated tokens, which exist only while decoding (reft.generate) or "
                "in teacher-forced ReFT training; one forward over a fixed prompt (DII, DAS, collect, lens) "
                "has none: use prompt positions such as last() or at(-k)"
            )
        loc = self.locate(attention_mask, input_ids, tokenizer)
        if not loc.complete:
            counts = sorted(set(loc.valid.sum(1).tolist()))
            raise PositionError(
                f"position {self!r} gives different numbers of tokens per prompt ({counts}); a batch needs "
                "the same count in every row: use fixed-size positions or group prompts by length"
            )
        return loc.index


def _checked(pos: Position, local: list[int], n: int, row: int | None = None) -> list[int]:
    for i in local:
        if not 0 <= i < n:
            where = f"prompt {row}" if row is not None else "the prompt"
            raise PositionError(
                f"position {pos!r} asks for token {i} but {where} has only {n} tokens; use positions that "
                "exist in every prompt (e.g. last(), or at(-k) counted from the end)"
            )
    return local


def _per_row(pos: Position, mask, input_ids, tokenizer) -> list[list[list[int]]]:
    m = mask.bool()
    # Positions that ignore token ids give the same indices for rows with the same mask: resolve each
    # distinct mask once (large batches of equal-length prompts are the common case).
    memo = {} if all(p.mask_only for p in pos.parts) else None
    m_np = m.cpu().numpy()
    out = []
    for b in range(m.shape[0]):
        key = m_np[b].tobytes()
        if memo is not None and key in memo:
            out.append(memo[key])
            continue
        real = m[b].nonzero().flatten().tolist()  # padded columns of the counted tokens
        ids = input_ids[b, real] if input_ids is not None else None
        try:
            parts = pos.split(len(real), ids, tokenizer)
        except PositionError as e:
            raise PositionError(str(e).replace("the prompt has", f"prompt {b} has")) from None
        out.append([[real[i] for i in part] for part in parts])
        if memo is not None:
            memo[key] = out[-1]
    return out


def _pack(rows: list[list[int]], mask: torch.Tensor) -> Located:
    k = max((len(r) for r in rows), default=0)
    index = torch.zeros(len(rows), k, dtype=torch.long)
    valid = torch.zeros(len(rows), k, dtype=torch.bool)
    for b, r in enumerate(rows):
        if r:
            index[b, : len(r)] = torch.tensor(r)
            index[b, len(r) :] = r[0]  # an invalid slot points at a real column; edits never write it
            valid[b, : len(r)] = True
    return Located(index.to(mask.device), valid.to(mask.device))


@dataclass(frozen=True, repr=False)
class Concat(Position):
    """A sum of positions (see the module docstring for its one rule)."""

    items: tuple

    def __post_init__(self):
        object.__setattr__(self, "items", tuple(self.items))

    @property
    def parts(self):
        return self.items

    def indices(self, n, ids, tokenizer):
        return [i for part in self.split(n, ids, tokenizer) for i in part]

    def split(self, n, ids=None, tokenizer=None):
        edges = {p.edge for p in self.items}
        cap = {"first": n // 2, "last": math.ceil(n / 2)} if {"first", "last"} <= edges else None
        taken: set[int] = set()
        out = []
        for p in self.items:
            if cap is not None and p.edge in cap:
                k = min(p.n, cap[p.edge])
                cap[p.edge] -= k
                local = list(range(k)) if p.edge == "first" else list(range(n - k, n))
            else:
                local = _checked(p, p.indices(n, ids, tokenizer), n)
            out.append([i for i in dict.fromkeys(local) if i not in taken])
            taken.update(out[-1])
        return out

    def __repr__(self):
        return "+".join(repr(p) for p in self.items)
