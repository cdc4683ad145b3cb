"""Counterfactual pairs rendered for a model: the one pair type that DAS, patching grids and attribution take.

Example:
    >>> pp = Pairs.of(base, source, base_answer=[5] * 4, source_answer=[6] * 4)   # patching: whole inputs
    >>> len(pp), pp.variables, len(pp[:2]), pp.source is pp.sources[0]
    (4, ('input',), 2, True)

:class:`interp.causal.CounterfactualDataset` renders its examples (values of a causal model) into :class:`Pairs`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch

from .errors import CausalModelError

if TYPE_CHECKING:  # Pairs.data holds the dataset it was rendered from (interp.causal imports this module)
    from .causal import CounterfactualDataset


@dataclass
class Pairs:
    """A counterfactual dataset rendered for a model: prompts or token ids, and answer words or token ids.

    The one pair type: DAS (``fit_das``), exact patching grids (``patch_grid``) and attribution patching
    (``attribution_patch``) all take it.

    Example:
        >>> train, test = pairs.split(0.8, seed=0)
        >>> len(train), len(test)
        (32, 8)
        >>> das = fit_das(lm, train, at=Site("resid_post", 1, last()), rank=1, steps=2)
        >>> das.variables, das.rotation.shape
        (('G',), torch.Size([1, 32]))
        >>> pp = Pairs.of(base, source, base_answer=[5] * 4, source_answer=[6] * 4)   # patching: whole inputs
        >>> pp.source is pp.sources[0], pp.source_answer == pp.labels
        (True, True)

    Attributes:
        variables: interchanged variables; ``sources[j]`` feeds variable ``j``.
        base: prompts (str) or token-id sequences, one per example.
        sources: one list like ``base`` per variable.
        labels: the counterfactual answer per example: a single-token word (``" he"``) or a token id.
        base_labels: the answer on the base alone (for task accuracy).
        candidates: optional answer set; when given, predictions are the argmax over these tokens only.
        data: the :class:`CounterfactualDataset` it was rendered from, if any.
        weights: optional per-example loss weights (non-negative numbers; None: all 1). ``fit_das`` multiplies
            each example's cross-entropy by its weight before taking the batch mean (``fit_mdas`` weighs its
            isolation examples this way); IIA ignores them.

    ``pairs + other`` (or :meth:`Pairs.concat`) joins pair sets of the same variables.
    """

    variables: tuple[str, ...]
    base: list
    sources: list[list]
    labels: list
    base_labels: list
    candidates: list | None = None
    data: CounterfactualDataset | None = field(default=None, repr=False)
    weights: list[float] | None = field(default=None, repr=False)

    def __post_init__(self):
        self.variables = tuple(self.variables)
        if len(self.sources) != len(self.variables):
            raise CausalModelError(
                f"got {len(self.sources)} source lists for {len(self.variables)} variables {self.variables}; "
                "give one list of sources per interchanged variable"
            )
        n = len(self.base)
        lengths = {"labels": len(self.labels), "base_labels": len(self.base_labels)}
        lengths.update({f"sources[{j}]": len(s) for j, s in enumerate(self.sources)})
        if self.weights is not None:
            self.weights = _check_weights(self.weights)
            lengths["weights"] = len(self.weights)
        bad = {k: v for k, v in lengths.items() if v != n}
        if bad:
            raise CausalModelError(f"base has {n} examples but {bad}; every field needs one entry per example")
        if self.candidates is not None:
            self.candidates = list(self.candidates)
            self._check_candidates()

    def _check_candidates(self) -> None:
        """Refuse a label outside ``candidates``: predictions are restricted to them, so it could never score."""
        cands = {_answer_key(c) for c in self.candidates}
        kinds = {type(c) for c in cands}  # words and ids are compared by metrics.label_ids, on token ids
        for name, values in (("labels", self.labels), ("base_labels", self.base_labels)):
            for i, y in enumerate(values):
                k = _answer_key(y)
                if type(k) in kinds and k not in cands:
                    raise CausalModelError(
                        f"{name}[{i}] is {y!r}, which is not among candidates={self.candidates}; predictions are "
                        "the argmax over the candidates, so it could never score: add it to candidates, or pass "
                        "candidates=None to score over the whole vocabulary"
                    )

    @classmethod
    def of(cls, base, source, *, base_answer, source_answer, variable: str = "input") -> Pairs:
        """Pairs whose source replaces the whole input (activation patching): ``source_answer`` is the label."""
        return cls((variable,), base, [source], source_answer, base_answer)

    @property
    def source(self):
        """The one source per example (``sources[0]``), as patching grids read it."""
        if len(self.sources) != 1:
            raise CausalModelError(
                f"these pairs interchange {len(self.variables)} variables {self.variables}, so each example has "
                "one source per variable; patching takes one source per example: select one, e.g. pairs.sources[0]"
            )
        return self.sources[0]

    @property
    def base_answer(self) -> list:
        """The answer on the base alone (``base_labels``)."""
        return self.base_labels

    @property
    def source_answer(self) -> list:
        """The answer under the interchange (``labels``): for a whole-input patch, the source's own answer."""
        return self.labels

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, idx) -> Pairs:
        idx = index_list(idx, len(self))
        return Pairs(
            self.variables,
            [self.base[i] for i in idx],
            [[s[i] for i in idx] for s in self.sources],
            [self.labels[i] for i in idx],
            [self.base_labels[i] for i in idx],
            self.candidates,
            self.data[idx] if self.data is not None else None,
            [self.weights[i] for i in idx] if self.weights is not None else None,
        )

    @classmethod
    def concat(cls, *parts: Pairs) -> Pairs:
        """One pair set holding ``parts`` in order: the same variables and candidates are required.

        Example:
            >>> both = Pairs.concat(train, test)                 # or train + test
            >>> len(both) == len(train) + len(test), both.variables
            (True, ('G',))

        Weights are kept (a part without weights counts 1 per example); ``data`` is dropped (the rendered
        datasets are not joined).
        """
        if not parts:
            raise CausalModelError("Pairs.concat needs at least one Pairs; got none")
        for i, p in enumerate(parts):
            if not isinstance(p, Pairs):
                raise CausalModelError(f"Pairs.concat takes Pairs; argument {i} is {type(p).__name__}")
        first = parts[0]
        for i, p in enumerate(parts[1:], 1):
            if p.variables != first.variables:
                raise CausalModelError(
                    f"Pairs.concat: part {i} interchanges {p.variables} but part 0 {first.variables}; join pairs of "
                    "the same variables (fit_mdas takes a mapping of variable -> Pairs for several)"
                )
            if p.candidates != first.candidates:
                raise CausalModelError(
                    f"Pairs.concat: part {i} has candidates={p.candidates} but part 0 {first.candidates}; give "
                    "every part the same candidates"
                )
        weights = None
        if any(p.weights is not None for p in parts):
            weights = [w for p in parts for w in (p.weights if p.weights is not None else [1.0] * len(p))]
        return cls(
            first.variables,
            [x for p in parts for x in p.base],
            [[x for p in parts for x in p.sources[j]] for j in range(len(first.variables))],
            [x for p in parts for x in p.labels],
            [x for p in parts for x in p.base_labels],
            first.candidates,
            None,
            weights,
        )

    def __add__(self, other: Pairs) -> Pairs:
        if not isinstance(other, Pairs):
            return NotImplemented
        return Pairs.concat(self, other)

    def weighted(self, weight: float) -> Pairs:
        """These pairs with every example's loss weight set to ``weight`` (``fit_das`` multiplies its
        cross-entropy by it).

        Example:
            >>> mix = train + test.weighted(0.5)                  # test's examples count half in a fit
            >>> mix.weights[-1]
            0.5
        """
        return replace(self, weights=[weight] * len(self))

    def split(self, train: float = 0.8, *, seed: int = 0) -> tuple[Pairs, Pairs]:
        """Shuffle and split into (train, test) with ``train`` the training fraction."""
        a, b = split_indices(len(self), train, seed)
        return self[a], self[b]

    def changed(self) -> Pairs:
        """Only the examples whose counterfactual label differs from the base label."""
        return self[[i for i in range(len(self)) if self.labels[i] != self.base_labels[i]]]


def _check_weights(weights) -> list[float]:
    """``weights`` as a list of finite non-negative floats; CausalModelError naming the first bad one."""
    if isinstance(weights, torch.Tensor):
        weights = weights.tolist()
    out = []
    for i, w in enumerate(weights):
        try:
            x = float(w)
        except (TypeError, ValueError):
            x = float("nan")
        if isinstance(w, bool) or not math.isfinite(x) or x < 0:
            raise CausalModelError(
                f"weights[{i}] is {w!r}; loss weights must be finite non-negative numbers (1.0: a plain example)"
            )
        out.append(x)
    return out


def _answer_key(y):
    """An answer as compared with the candidates: a word as is, a token id (any integer type) as an int."""
    if isinstance(y, str):
        return y
    try:
        return int(y)
    except (TypeError, ValueError):
        return y


def index_list(idx, n: int) -> list[int]:
    """``idx`` (a slice, a tensor or a sequence of integers) as a list of ints into ``n`` examples.

    Example:
        >>> index_list(slice(1, None, 2), 5), index_list(torch.tensor([3, 0]), 5)
        ([1, 3], [3, 0])
    """
    if isinstance(idx, slice):
        return list(range(n))[idx]
    if isinstance(idx, torch.Tensor):
        idx = idx.tolist()
    return [int(i) for i in idx]


def split_indices(n: int, train: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded shuffle of ``range(n)`` cut into (train, test) at the fraction ``train``; neither side empty.

    Example:
        >>> a, b = split_indices(10, 0.8, seed=0)
        >>> len(a), len(b), sorted(a + b) == list(range(10))
        (8, 2, True)
    """
    if not 0.0 < train < 1.0:
        raise CausalModelError(f"train fraction must be in (0, 1); got {train}")
    perm = list(range(n))
    random.Random(seed).shuffle(perm)
    k = int(round(train * n))
    if k == 0 or k == n:
        raise CausalModelError(f"splitting {n} examples at {train} leaves one side empty; use more examples")
    return perm[:k], perm[k:]
