"""Fire-once accounting: every op of a plan fires exactly as often as planned, or the run fails naming it.

Example:
    >>> from interp.sites import resolve
    >>> site = Site("mlp_out", 1, last())
    >>> op = Op(site, resolve(lm, site), torch.tensor([[5], [5]]), fn=lambda h: h * 0)
    >>> tally = Tally([op])
    >>> tally.hit(0, 2, 1)                          # what the hook or trace does each time the op runs
    >>> tally.check()                               # fired once, as planned
    >>> tally.reset(); tally.check()
    Traceback (most recent call last):
    interp.errors.EditNotAppliedError: edit op 0 at Site('mlp_out', 1, last()) (model.layers.1.mlp output) fired 0 times
    in the forward; planned 1: the forward never reached model.layers.1.mlp ...

A hook counts in Python each time it runs (no device sync); the count is compared once the forward is over. Zero
firings mean the edit silently never applied (a module the forward never reached, a site the architecture routes
around, a stand-in layer that replaced it); more mean it applied twice (a module that ran twice in one forward, a
generation step that applied it again).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import EditNotAppliedError
from .plan import Op


class Tally:
    """How often each op of a plan fired, and the rows x columns it touched at its last firing."""

    def __init__(self, ops: Sequence[Op]):
        self.ops = list(ops)
        self.fired = [0] * len(self.ops)
        self.touched = [(0, 0)] * len(self.ops)  # (rows, columns) of the last firing

    def hit(self, i: int, rows: int, cols: int) -> None:
        """Op ``i`` fired, on ``rows`` rows x ``cols`` columns."""
        self.fired[i] += 1
        self.touched[i] = (rows, cols)

    def reset(self) -> None:
        """Start counting a new forward."""
        self.fired = [0] * len(self.ops)

    def check(self, planned: int = 1, *, when: str = "the forward") -> None:
        """Raise :class:`EditNotAppliedError` for the first op that fired other than ``planned`` times."""
        for i, n in enumerate(self.fired):
            if n != planned:
                raise self.error(i, planned=planned, when=when)

    def error(self, i: int, *, planned: int = 1, when: str = "the forward", why: str | None = None):
        """The error for op ``i``: what it is, where, how often it fired against the plan, and the likely cause."""
        op, n = self.ops[i], self.fired[i]
        where = f"{op.target.path} {op.target.io}"
        msg = f"{describe(op, i)} ({where}) fired {n} times in {when}; planned {planned}"
        if n:
            rows, cols = self.touched[i]
            msg += f" (each time {rows} rows x {cols} columns)"
        if why is None and n == 0 and op.target.pattern:
            why = (
                f"the attention did not pass its probabilities through {op.target.path!r}: its attention layer "
                "does not dispatch through transformers' AttentionInterface"
            )
        elif why is None and n == 0:
            why = (
                f"the forward never reached {op.target.path} (the architecture routes around it, it sits in a "
                "layer that did not run, or the run stopped before it)"
            )
        elif why is None:
            why = (
                f"{op.target.path} ran {n} times in one forward (a module called twice, or the op hooked twice), "
                f"so the {'edit' if op.fn is not None else 'read'} would apply {n} times"
            )
        return EditNotAppliedError(f"{msg}: {why}")


def describe(op: Op, i: int) -> str:
    """``edit op 3 at Site('resid_post', 1, last())``: what an error names."""
    kind = "edit" if op.fn is not None else "read"
    at = repr(op.site) if op.site is not None else "the final hidden states"
    return f"{kind} op {i} at {at}"


__all__ = ["Tally", "describe"]
