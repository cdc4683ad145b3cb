"""High-level causal models and the counterfactual datasets that DAS trains and scores on.

Example:
    >>> eq = CausalModel(
    ...     {"W": None, "X": None, "Y": None, "Z": None,
    ...      "WX": (("W", "X"), lambda w, x: w == x),
    ...      "YZ": (("Y", "Z"), lambda y, z: y == z),
    ...      "O": (("WX", "YZ"), lambda a, b: a == b)})
    >>> eq.run({"W": 1, "X": 1, "Y": 2, "Z": 3})["O"]
    False
    >>> base, source = {"W": 1, "X": 1, "Y": 2, "Z": 3}, {"W": 1, "X": 2, "Y": 0, "Z": 0}
    >>> eq.interchange(base, {"WX": source})["O"]     # WX computed on source (False), the rest on base
    True
    >>> sample = lambda rng: {v: rng.randrange(3) for v in "WXYZ"}   # draws one input setting
    >>> data = eq.counterfactuals(sample, variables=["WX"], n=1000, seed=0)
    >>> len(data), data.variables
    (1000, ('WX',))

A causal model is a DAG of variables; input variables have no parents, every other variable has a mechanism
of its parents. An *interchange* ``M(base | V <- source)`` runs ``base`` with ``V`` set to the value it takes on
``source`` (Geiger et al. 2021, 2023). A counterfactual dataset pairs a base with one source per interchanged
variable and labels each pair with the model's output under that interchange: the label a neural model must
produce when its aligned subspace is interchanged the same way. Interchange intervention accuracy (IIA) is the
fraction of pairs on which it does.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .errors import CausalModelError  # noqa: F401  (defined in interp.errors, re-exported here)
from .pairs import Pairs, index_list, split_indices  # Pairs: defined in interp.pairs, re-exported here


class CausalModel:
    """Variables, their parents and mechanisms, run in topological order.

    Example:
        >>> m = CausalModel({"a": None, "b": None, "s": (("a", "b"), lambda a, b: a + b)})
        >>> m.run({"a": 1, "b": 2})
        {'a': 1, 'b': 2, 's': 3}
        >>> m.run({"a": 1, "b": 2}, set={"s": 10})["s"]
        10

    Args:
        mechanisms: ``{name: None}`` for an input variable, ``{name: (parents, fn)}`` otherwise, where ``fn``
            takes the parents' values positionally.
        output: the variable whose value is the label (default: the last one given).
    """

    def __init__(self, mechanisms: Mapping[str, tuple[Sequence[str], Callable] | None], *, output: str | None = None):
        if not mechanisms:
            raise CausalModelError("a causal model needs at least one variable")
        self.parents: dict[str, tuple[str, ...]] = {}
        self.mechanisms: dict[str, Callable] = {}
        for name, spec in mechanisms.items():
            if spec is None:
                self.parents[name] = ()
                continue
            if not (isinstance(spec, tuple) and len(spec) == 2 and callable(spec[1])):
                raise CausalModelError(f"variable {name!r}: expected None (an input) or (parents, fn); got {spec!r}")
            self.parents[name] = tuple(spec[0])
            self.mechanisms[name] = spec[1]
        for name, ps in self.parents.items():
            unknown = [p for p in ps if p not in self.parents]
            if unknown:
                raise CausalModelError(f"variable {name!r} has unknown parents {unknown}; known: {self.variables}")
        self.order = self._topological_order()
        self.inputs = tuple(v for v in self.order if not self.parents[v])
        self.output = output or list(mechanisms)[-1]
        self._check_variable(self.output)

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(self.parents)

    def _topological_order(self) -> tuple[str, ...]:
        order: list[str] = []
        state: dict[str, int] = {}

        def visit(v, path):
            if state.get(v) == 2:
                return
            if state.get(v) == 1:
                raise CausalModelError(f"the graph has a cycle through {' -> '.join([*path, v])}")
            state[v] = 1
            for p in self.parents[v]:
                visit(p, [*path, v])
            state[v] = 2
            order.append(v)

        for v in self.parents:
            visit(v, [])
        return tuple(order)

    def _check_variable(self, name: str) -> None:
        if name not in self.parents:
            raise CausalModelError(f"unknown variable {name!r}; this causal model has {list(self.variables)}")

    def run(self, inputs: Mapping, *, set: Mapping | None = None) -> dict:
        """Values of all variables on ``inputs``, with the variables in ``set`` fixed (an intervention)."""
        fixed = dict(set or {})
        for name in fixed:
            self._check_variable(name)
        missing = [v for v in self.inputs if v not in inputs and v not in fixed]
        if missing:
            raise CausalModelError(f"missing input values for {missing}; this model's inputs are {list(self.inputs)}")
        values: dict = {}
        for v in self.order:
            if v in fixed:
                values[v] = fixed[v]
            elif not self.parents[v]:
                values[v] = inputs[v]
            else:
                values[v] = self.mechanisms[v](*(values[p] for p in self.parents[v]))
        return values

    def interchange(self, base: Mapping, sources: Mapping[str, Mapping]) -> dict:
        """Run ``base`` with each variable in ``sources`` set to its value on that source's inputs.

        Example:
            >>> m = CausalModel({"a": None, "b": None, "s": (("a", "b"), lambda a, b: a + b)})
            >>> m.interchange({"a": 1, "b": 2}, {"a": {"a": 5, "b": 0}})["s"]
            7
        """
        fixed = {}
        for name, src in sources.items():
            self._check_variable(name)
            fixed[name] = self.run(src)[name]
        return self.run(base, set=fixed)

    def counterfactuals(
        self,
        sample: Callable[[random.Random], dict],
        *,
        variables: Sequence[str] | str,
        n: int,
        seed: int = 0,
        subsets: Sequence[Sequence[str]] | None = None,
        changed_only: bool = False,
        max_tries: int = 100,
    ) -> CounterfactualDataset:
        """``n`` counterfactual examples: base, one source per variable, and the label under the interchange.

        Example:
            >>> m = CausalModel({"a": None, "b": None, "s": (("a", "b"), lambda a, b: a + b)})
            >>> sample = lambda rng: {"a": rng.randrange(10), "b": rng.randrange(10)}
            >>> data = m.counterfactuals(sample, variables=["a", "b"], n=100, seed=0)
            >>> len(data), data.variables
            (100, ('a', 'b'))
            >>> data.label[0] == m.interchange(data.base[0], dict(zip(data.variables, data.sources_of(0))))["s"]
            True

        Args:
            sample: draws one input setting from a ``random.Random``.
            variables: the variables aligned (each gets its own source input).
            subsets: which of ``variables`` each example interchanges, drawn uniformly per example (default: all
                of them). A variable not interchanged in an example gets the base as its source, which is a no-op.
            changed_only: keep only examples whose counterfactual label differs from the base label (the
                informative ones); draws again up to ``max_tries`` times per example.
        """
        variables = [variables] if isinstance(variables, str) else list(variables)
        if not variables:
            raise CausalModelError("variables is empty; name at least one variable to interchange")
        for v in variables:
            self._check_variable(v)
        if n < 1:
            raise CausalModelError(f"n must be at least 1; got {n}")
        subsets = [tuple(s) for s in (subsets or [variables])]
        for s in subsets:
            bad = [v for v in s if v not in variables]
            if bad:
                raise CausalModelError(f"subset {s} names {bad}, which are not among variables={variables}")
        rng = random.Random(seed)
        base, sources, label, base_label = [], [[] for _ in variables], [], []
        for _ in range(n):
            for _try in range(max_tries):
                b = sample(rng)
                chosen = rng.choice(subsets)
                srcs = [sample(rng) if v in chosen else b for v in variables]
                y = self.interchange(b, {v: s for v, s in zip(variables, srcs) if v in chosen})[self.output]
                y0 = self.run(b)[self.output]
                if not changed_only or y != y0:
                    break
            else:
                raise CausalModelError(
                    f"no example with a changed label in {max_tries} draws; the variables {variables} may not "
                    "affect the output, or sample() rarely varies them; try changed_only=False"
                )
            base.append(b)
            for j, s in enumerate(srcs):
                sources[j].append(s)
            label.append(y)
            base_label.append(y0)
        return CounterfactualDataset(tuple(variables), base, sources, label, base_label)


@dataclass
class CounterfactualDataset:
    """Counterfactual examples in the causal model's terms (values, not prompts).

    Attributes:
        variables: the interchanged variables, one source per variable.
        base: base input settings (dicts).
        sources: ``sources[j][i]`` is the source of ``variables[j]`` for example ``i``.
        label: the causal model's output under the interchange (the counterfactual label).
        base_label: its output on the base alone.
    """

    variables: tuple[str, ...]
    base: list
    sources: list[list]
    label: list
    base_label: list

    def __len__(self) -> int:
        return len(self.base)

    def sources_of(self, i: int) -> list:
        return [s[i] for s in self.sources]

    def __getitem__(self, idx) -> CounterfactualDataset:
        idx = index_list(idx, len(self))
        return CounterfactualDataset(
            self.variables,
            [self.base[i] for i in idx],
            [[s[i] for i in idx] for s in self.sources],
            [self.label[i] for i in idx],
            [self.base_label[i] for i in idx],
        )

    def split(self, train: float = 0.8, *, seed: int = 0) -> tuple[CounterfactualDataset, CounterfactualDataset]:
        """Shuffle and split into (train, test) with ``train`` the training fraction."""
        a, b = split_indices(len(self), train, seed)
        return self[a], self[b]

    def render(
        self,
        prompt: Callable[[dict], object],
        answer: Callable[[object], object],
        *,
        candidates: Sequence | None = None,
    ) -> Pairs:
        """Model inputs: ``prompt(setting)`` gives a prompt (str) or token ids, ``answer(label)`` a word or id.

        Example:
            >>> pairs = data.render(lambda s: [1, s["a"], 7], int)   # data varies G = (a >= 50); answers 5 or 6
            >>> pairs.base[0], pairs.sources[0][0], pairs.labels[0]  # token ids for a model without a tokenizer
            ([1, 59, 7], [1, 15, 7], 6)

        With a tokenizer, prompts and answers are text, e.g.
        ``data.render(lambda s: f"{s['name']} walked because", lambda g: " he" if g else " she")``.
        """
        return Pairs(
            variables=self.variables,
            base=[prompt(b) for b in self.base],
            sources=[[prompt(s) for s in src] for src in self.sources],
            labels=[answer(y) for y in self.label],
            base_labels=[answer(y) for y in self.base_label],
            candidates=list(candidates) if candidates is not None else None,
            data=self,
        )
