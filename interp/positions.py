"""Typed token positions with one meaning everywhere (DII, DAS, ReFT), under left or right padding.

Example:
    >>> import torch
    >>> mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])       # 4 and 5 real tokens, left-padded
    >>> last().resolve(mask).tolist()
    [[4], [4]]
    >>> (first(1) + last(1)).resolve(mask).tolist()
    [[1, 4], [0, 4]]
    >>> loc = (first(3) + last(3)).locate(mask)              # the ReFT rule: 4 tokens -> 2 + 2, 5 -> 2 + 3
    >>> loc.index.tolist(), loc.valid.sum(1).tolist()       # row 0's fifth slot is invalid (never written)
    ([[1, 2, 3, 4, 1], [0, 1, 2, 3, 4]], [4, 5])

Positions count real tokens only (BOS included when the tokenizer adds one), never padding. A position is
``last(n)``, ``first(n)``, ``at(i)``, ``span(a, b)``, ``token(text)``, ``all_tokens()``, or a sum of them,
resolved left to right with one rule:

- a sum never repeats a token: a part skips every token an earlier part took;
- a sum with ``first`` and ``last`` parts follows the ReFT paper's rule for the pair (Wu et al. 2024, as in
  pyreft): on a prompt of ``n`` tokens ``first(p)`` takes ``p' = min(p, floor(n/2))`` tokens and ``last(s)``
  takes ``s' = min(s, ceil(n/2))`` (pyreft gives the odd middle token to neither; here it goes to the
  suffix, so a one-token prompt keeps its last token), so prefix and suffix never overlap;
- any single part that asks for a token the prompt does not have is a :class:`PositionError`.

Two kinds count tokens produced while decoding (ReFT generation, and teacher-forced ReFT training, where the
response tokens stand for them): ``generated()``, every generated token, and ``recent(k)``, the last ``k``
prompt tokens plus every generated token. ``recent(k)`` is defined so because under a KV cache a token's
vectors are computed once, when it is new: "the last k tokens of the running sequence", edited step after step,
is the prompt's last ``k`` on the prompt pass and then each new token, and only this definition equals a full
recomputation of the sequence (edited at the same tokens) at every step. They sum with prompt positions
(``first(1) + last(1) + generated()``); in a sum the generated tokens go to the first part that takes them.

``locate`` gives a :class:`Located` ``(index, valid)`` pair of (B, k) tensors: rows with fewer positions than
others carry invalid slots (``valid`` False) that every edit leaves untouched. ``resolve`` is the strict form
that DII and DAS use (base and source slots pair up one to one): every row must have the same number of
positions, and it returns the (B, k) index tensor alone; a decode-time position there is a
:class:`PositionError` (one forward over a fixed prompt has no generated tokens).

Example:
    >>> pos = first(1) + last(1) + generated()
    >>> pos.decodes, pos.decode_part, recent(2).decode_part
    (True, 2, 0)
    >>> generated_cols = torch.tensor([[0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 0, 0]]).bool()  # teacher forcing
    >>> prompt = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0, 0]])
    >>> pos.locate(prompt, generated=generated_cols).index.tolist()
    [[0, 4, 5, 6], [0, 3, 4, 0]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .checks import as_int
from .errors import PositionError  # noqa: F401  (defined in interp.errors, re-exported here)


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
    tokens (a decode-time position) sets ``takes_generated = True``; its ``indices`` are its prompt tokens."""

    takes_generated = False

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
    memo = {} if all(type(p) in (_Last, _First, _At, _Span, _All, _Generated, _Recent) for p in pos.parts) else None
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
        firsts = [p for p in self.items if type(p) is _First]
        lasts = [p for p in self.items if type(p) is _Last]
        cap = {_First: n // 2, _Last: math.ceil(n / 2)} if firsts and lasts else None
        taken: set[int] = set()
        out = []
        for p in self.items:
            if cap is not None and type(p) in cap:
                k = min(p.n, cap[type(p)])
                cap[type(p)] -= k
                local = list(range(k)) if type(p) is _First else list(range(n - k, n))
            else:
                local = _checked(p, p.indices(n, ids, tokenizer), n)
            out.append([i for i in dict.fromkeys(local) if i not in taken])
            taken.update(out[-1])
        return out

    def __repr__(self):
        return "+".join(repr(p) for p in self.items)


@dataclass(frozen=True, repr=False)
class _Last(Position):
    n: int = 1

    def indices(self, n, ids, tokenizer):
        if self.n > n:  # too short a prompt: the first missing token, for _checked to name (never a huge list)
            return [n - self.n]
        return list(range(n - self.n, n))

    def __repr__(self):
        return f"last({self.n})" if self.n != 1 else "last()"


@dataclass(frozen=True, repr=False)
class _First(Position):
    n: int = 1

    def indices(self, n, ids, tokenizer):
        return list(range(min(self.n, n + 1)))  # too short a prompt: up to the first missing token, for _checked

    def __repr__(self):
        return f"first({self.n})"


@dataclass(frozen=True, repr=False)
class _At(Position):
    i: int

    def indices(self, n, ids, tokenizer):
        return [self.i if self.i >= 0 else n + self.i]

    def __repr__(self):
        return f"at({self.i})"


@dataclass(frozen=True, repr=False)
class _Span(Position):
    start: int
    stop: int

    def indices(self, n, ids, tokenizer):
        a = self.start if self.start >= 0 else n + self.start
        b = self.stop if self.stop >= 0 else n + self.stop
        if b <= a:
            raise PositionError(f"{self!r} is empty for a prompt of {n} tokens; expected start < stop")
        if a < 0 or b > n:  # the first missing token, for _checked to name (never a huge list)
            return [a if a < 0 else max(a, n)]
        return list(range(a, b))

    def __repr__(self):
        return f"span({self.start}, {self.stop})"


@dataclass(frozen=True, repr=False)
class _Token(Position):
    text: str
    occurrence: int = 0

    def indices(self, n, ids, tokenizer):
        if ids is None or tokenizer is None:
            raise PositionError(f"{self!r} needs input_ids and a tokenizer to resolve")
        pattern = tokenizer(self.text, add_special_tokens=False)["input_ids"]
        if not pattern:
            raise PositionError(f"{self!r}: {self.text!r} tokenizes to nothing")
        seq = ids.tolist()
        hits = [i for i in range(len(seq) - len(pattern) + 1) if seq[i : i + len(pattern)] == pattern]
        k = self.occurrence if self.occurrence >= 0 else len(hits) + self.occurrence
        if not 0 <= k < len(hits):
            raise PositionError(
                f"{self!r}: found {len(hits)} occurrence(s) of {self.text!r} (token ids {pattern}) in "
                f"{tokenizer.decode(seq)!r}; check the leading space and the occurrence index"
            )
        return [hits[k] + len(pattern) - 1]  # the last token of the match, where the word is complete

    def __repr__(self):
        occ = f", occurrence={self.occurrence}" if self.occurrence else ""
        return f"token({self.text!r}{occ})"


@dataclass(frozen=True, repr=False)
class _All(Position):
    def indices(self, n, ids, tokenizer):
        return list(range(n))

    def __repr__(self):
        return "all_tokens()"


@dataclass(frozen=True, repr=False)
class _Generated(Position):
    takes_generated = True

    def indices(self, n, ids, tokenizer):
        return []

    def __repr__(self):
        return "generated()"


@dataclass(frozen=True, repr=False)
class _Recent(Position):
    takes_generated = True
    k: int = 1

    def indices(self, n, ids, tokenizer):
        return list(range(max(0, n - self.k), n))  # a prompt shorter than k: all of it is recent

    def __repr__(self):
        return f"recent({self.k})"


def last(n: int = 1) -> Position:
    """The last ``n`` real tokens of each prompt."""
    return _Last(_positive(n, "last"))


def first(n: int = 1) -> Position:
    """The first ``n`` real tokens of each prompt (BOS counts when present)."""
    return _First(_positive(n, "first"))


def at(i: int) -> Position:
    """Token ``i`` of each prompt; negative counts from the end (``at(-1) == last()``)."""
    return _At(as_int(i, "at(i): i", error=PositionError))


def span(start: int, stop: int) -> Position:
    """Tokens ``start <= i < stop`` (negative values count from the end)."""
    return _Span(as_int(start, "span start", error=PositionError), as_int(stop, "span stop", error=PositionError))


def token(text: str, occurrence: int = 0) -> Position:
    """Where ``text`` (one or more tokens) occurs, the ``occurrence``-th time (negative: from the last)."""
    if not isinstance(text, str) or not text:
        raise PositionError(f"token(text): expected a non-empty string such as ' Mary'; got {text!r}")
    return _Token(text, as_int(occurrence, "token occurrence", error=PositionError))


def all_tokens() -> Position:
    """Every real token of each prompt (in ReFT, every prompt token); ``all_tokens() + generated()`` adds every
    generated token. Prompts of different lengths give different counts, so DII needs prompts of one length.

    Example:
        >>> all_tokens().locate(torch.tensor([[0, 1, 1], [1, 1, 1]])).index.tolist()
        [[1, 2, 1], [0, 1, 2]]
    """
    return _All()


def generated() -> Position:
    """Every generated token, edited when it is new (in teacher forcing: every response token's column).

    Example:
        >>> generated(), first(1) + last(1) + generated()
        (generated(), first(1)+last()+generated())
    """
    return _Generated()


def recent(k: int) -> Position:
    """The last ``k`` prompt tokens plus every generated token (all the prompt when it is shorter than ``k``).

    With a KV cache a token is edited once, while it is new, so "the last ``k`` tokens of the running sequence"
    over all decoding steps is ``last(k)`` of the prompt plus each new token; this is what equals recomputing the
    whole sequence with the edit at those tokens every step.

    Example:
        >>> recent(4).locate(torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])).index.tolist()   # the prompt part
        [[1, 2, 3, 1], [0, 1, 2, 3]]
    """
    return _Recent(_positive(k, "recent"))


def _positive(n, name):
    return as_int(n, f"{name}(n): n", low=1, error=PositionError)
