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

from dataclasses import dataclass

from .checks import as_int
from .errors import PositionError  # noqa: F401  (defined in interp.errors, re-exported here)
from .position_base import Concat, Located, Position  # noqa: F401  (defined in interp.position_base, re-exported)


@dataclass(frozen=True, repr=False)
class _Last(Position):
    mask_only = True
    edge = "last"
    n: int = 1

    def indices(self, n, ids, tokenizer):
        if self.n > n:  # too short a prompt: the first missing token, for _checked to name (never a huge list)
            return [n - self.n]
        return list(range(n - self.n, n))

    def __repr__(self):
        return f"last({self.n})" if self.n != 1 else "last()"


@dataclass(frozen=True, repr=False)
class _First(Position):
    mask_only = True
    edge = "first"
    n: int = 1

    def indices(self, n, ids, tokenizer):
        return list(range(min(self.n, n + 1)))  # too short a prompt: up to the first missing token, for _checked

    def __repr__(self):
        return f"first({self.n})"


@dataclass(frozen=True, repr=False)
class _At(Position):
    mask_only = True
    i: int

    def indices(self, n, ids, tokenizer):
        return [self.i if self.i >= 0 else n + self.i]

    def __repr__(self):
        return f"at({self.i})"


@dataclass(frozen=True, repr=False)
class _Span(Position):
    mask_only = True
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
    mask_only = True

    def indices(self, n, ids, tokenizer):
        return list(range(n))

    def __repr__(self):
        return "all_tokens()"


@dataclass(frozen=True, repr=False)
class _Generated(Position):
    mask_only = True
    takes_generated = True

    def indices(self, n, ids, tokenizer):
        return []

    def __repr__(self):
        return "generated()"


@dataclass(frozen=True, repr=False)
class _Recent(Position):
    mask_only = True
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
