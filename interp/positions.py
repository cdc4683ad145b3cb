"""Typed token positions that resolve per example, correctly under left or right padding.

Example:
    >>> last()                       # the last real token of each prompt
    >>> first(2) + last(1)           # combine: the first two and the last token
    >>> at(-3), span(1, 4)           # index from the start (negative: from the end) / a half-open range
    >>> token(" Mary", occurrence=1) # where the token " Mary" occurs the second time

Positions count real tokens only (BOS included when the tokenizer adds one), never padding. ``resolve``
turns a position into a ``(B, k)`` LongTensor of indices into the padded batch; every example must have
the same number ``k`` of positions, and a position beyond a prompt's length is an error raised before any
forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class PositionError(ValueError):
    """A position that does not exist in some prompt of the batch."""


class Position:
    """Base class: ``indices(n, ids)`` gives the positions among the ``n`` real tokens ``ids`` of one row."""

    def indices(self, n: int, ids: torch.Tensor, tokenizer) -> list[int]:
        raise NotImplementedError

    def __add__(self, other: Position) -> Position:
        if not isinstance(other, Position):
            return NotImplemented
        return Concat(_parts(self) + _parts(other))

    def resolve(self, attention_mask: torch.Tensor, input_ids: torch.Tensor | None = None, tokenizer=None):
        """Index tensor ``(B, k)`` into the padded sequence axis, one row per example.

        Example:
            >>> last().resolve(torch.tensor([[0, 1, 1], [1, 1, 1]]))
            tensor([[2], [2]])
        """
        mask = attention_mask.bool()
        rows = []
        # Positions that ignore token ids give the same indices for rows with the same mask: resolve each
        # distinct mask once (large batches of short or equal-length prompts are the common case).
        memo = {} if _id_free(self) else None
        mask_np = mask.cpu().numpy() if memo is not None else None
        for b in range(mask.shape[0]):
            key = mask_np[b].tobytes() if memo is not None else None
            if key is not None and key in memo:
                rows.append(memo[key])
                continue
            real = mask[b].nonzero().flatten()  # padded indices of the real tokens, left or right padding alike
            ids = input_ids[b, real] if input_ids is not None else None
            local = self.indices(len(real), ids, tokenizer)
            for i in local:
                if not 0 <= i < len(real):
                    raise PositionError(
                        f"position {self!r} asks for token {i} but prompt {b} has only {len(real)} tokens; "
                        "use positions that exist in every prompt (e.g. last(), or at(-k) counted from the end)"
                    )
            rows.append([int(real[i]) for i in local])
            if key is not None:
                memo[key] = rows[-1]
        k = {len(r) for r in rows}
        if len(k) > 1:
            raise PositionError(
                f"position {self!r} gives different numbers of tokens per prompt ({sorted(k)}); a batch needs "
                "the same count in every row: use fixed-size positions or group prompts by length"
            )
        return torch.tensor(rows, dtype=torch.long, device=attention_mask.device).reshape(mask.shape[0], -1)


def _id_free(p: Position) -> bool:
    """True for the built-in positions that depend only on the prompt length (not on its tokens)."""
    return all(type(q) in (_Last, _First, _At, _Span) for q in _parts(p))


def _parts(p: Position) -> list[Position]:
    return list(p.parts) if isinstance(p, Concat) else [p]


@dataclass(frozen=True, repr=False)
class Concat(Position):
    parts: tuple | list

    def __post_init__(self):
        object.__setattr__(self, "parts", tuple(self.parts))

    def indices(self, n, ids, tokenizer):
        return [i for p in self.parts for i in p.indices(n, ids, tokenizer)]

    def __repr__(self):
        return "+".join(repr(p) for p in self.parts)


@dataclass(frozen=True, repr=False)
class _Last(Position):
    n: int = 1

    def indices(self, n, ids, tokenizer):
        return list(range(n - self.n, n))  # too short a prompt gives negatives, caught by resolve

    def __repr__(self):
        return f"last({self.n})" if self.n != 1 else "last()"


@dataclass(frozen=True, repr=False)
class _First(Position):
    n: int = 1

    def indices(self, n, ids, tokenizer):
        return list(range(self.n))

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


def last(n: int = 1) -> Position:
    """The last ``n`` real tokens of each prompt."""
    return _Last(_positive(n, "last"))


def first(n: int = 1) -> Position:
    """The first ``n`` real tokens of each prompt (BOS counts when present)."""
    return _First(_positive(n, "first"))


def at(i: int) -> Position:
    """Token ``i`` of each prompt; negative counts from the end (``at(-1) == last()``)."""
    return _At(int(i))


def span(start: int, stop: int) -> Position:
    """Tokens ``start <= i < stop`` (negative values count from the end)."""
    return _Span(int(start), int(stop))


def token(text: str, occurrence: int = 0) -> Position:
    """Where ``text`` (one or more tokens) occurs, the ``occurrence``-th time (negative: from the last)."""
    return _Token(text, int(occurrence))


def _positive(n, name):
    if int(n) < 1:
        raise PositionError(f"{name}({n}): expected a count of at least 1")
    return int(n)
