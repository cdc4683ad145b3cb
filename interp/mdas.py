"""Multi-task DAS (MDAS, RAVEL: Huang et al. 2024): one subspace per variable, trained to cause its variable and to
leave the others alone.

Example:
    >>> from interp.tasks.two_attributes import HIDDEN_SITE, TwoAttributes, attribute_pairs
    >>> net = TwoAttributes(seed=0)                      # attributes A and B, correlated (interp.tasks.two_attributes)
    >>> toy, pairs = interp.LM(net), lambda seed, **kw: attribute_pairs(net, 100, seed=seed, **kw)
    >>> cause, iso = pairs(1), pairs(3, ask="B")         # interchange A; ask A (source's value) or B (base's value)
    >>> fit = dict(at=HIDDEN_SITE, rank=1, steps=100, eval_every=0, lr=1e-2, progress=False)
    >>> das, mdas = fit_das(toy, cause, **fit), fit_mdas(toy, {"A": cause}, {"A": iso}, **fit)
    >>> heldout = dict(cause={"A": pairs(2)}, isolate={"A": pairs(4, ask="B")})
    >>> cause_isolate(das, **heldout)                    # Cause alone: A moves, and B with it
    {'cause': {'A': 1.0, 'mean': 1.0}, 'isolate': {'A': 0.0, 'mean': 0.0}, 'disentangle': 0.5}
    >>> cause_isolate(mdas, **heldout)                   # with isolation examples: A moves, B stays
    {'cause': {'A': 1.0, 'mean': 1.0}, 'isolate': {'A': 1.0, 'mean': 1.0}, 'disentangle': 1.0}

DAS trained for Cause alone finds a subspace whose interchange moves its variable, but often other attributes
with it (RAVEL on Gemma-2-2B: Cause 0.97, Isolate 0.04). MDAS adds *isolation* examples: the same interchange of
a variable's rows, but the prompt asks about another attribute, so the label is the base's own answer. In RAVEL's
code (``explanare/ravel``, ``scripts/train_intervention.py``) one intervention is trained on the concatenation of
the cause tasks (label: the source's value) and the isolation tasks (label: the base's value), with one
cross-entropy; :func:`fit_mdas` does the same on :func:`interp.das.fit_das` (the one training loop), and with
several variables gives each its own consecutive block of rows (``splits``):

- a cause example for ``A`` interchanges A's rows from its source; the other variables' rows take the base as
  their source (they are left as they are); the label is the cause pairs' ``labels`` (the source's value);
- an isolation example for ``A`` interchanges A's rows and asks about something else; its label is the pairs'
  ``base_labels`` (the base's value); its cross-entropy is multiplied by ``isolate_weight``.

With one variable and isolation pairs this is DAS trained on cause + isolation examples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .causal import Pairs
from .checks import as_float
from .das import DASResult, fit_das
from .errors import DASError


def _one_variable(pairs, role: str, name: str) -> Pairs:
    if not isinstance(pairs, Pairs):
        raise DASError(f"{role}[{name!r}] must be interp.causal.Pairs; got {type(pairs).__name__}")
    if len(pairs.variables) != 1:
        raise DASError(
            f"{role}[{name!r}] interchanges {len(pairs.variables)} variables {pairs.variables}; MDAS takes one "
            "variable's pairs per key (render each variable's counterfactuals on their own)"
        )
    return pairs


def widen(pairs: Pairs, variable: str, variables: Sequence[str], *, isolate: bool = False) -> Pairs:
    """``pairs`` of one variable as pairs over all ``variables``: ``variable``'s source from ``pairs``, every other
    variable's source the base itself (its rows keep the base's coordinates). ``isolate=True`` labels each example
    with its base's answer (``base_labels``).

    Example:
        >>> wide = widen(train, "G", ["G", "H"])
        >>> wide.variables, wide.sources[1] == wide.base
        (('G', 'H'), True)
    """
    variables = tuple(variables)
    if variable not in variables:
        raise DASError(f"variable {variable!r} is not among {variables}")
    sources = [list(pairs.sources[0]) if v == variable else list(pairs.base) for v in variables]
    labels = list(pairs.base_labels if isolate else pairs.labels)
    return Pairs(variables, list(pairs.base), sources, labels, list(pairs.base_labels), pairs.candidates, None,
                 pairs.weights)  # fmt: skip


def mdas_pairs(
    cause: Mapping[str, Pairs],
    isolate: Mapping[str, Pairs] | None = None,
    *,
    variables: Sequence[str] | None = None,
    isolate_weight: float = 1.0,
) -> Pairs:
    """The one training set of MDAS: every variable's cause pairs and isolation pairs, widened to all
    ``variables`` (default: ``cause``'s keys, in order) and joined; isolation examples weigh ``isolate_weight``.

    Example:
        >>> joint = mdas_pairs({"G": train}, {"G": test}, isolate_weight=0.5)   # test as if isolation pairs
        >>> len(joint) == len(train) + len(test), joint.weights[-1], joint.labels[-1] == test.base_labels[-1]
        (True, 0.5, True)
    """
    isolate_weight = as_float(
        isolate_weight, "isolate_weight", low=0, error=DASError, hint="; 1.0 weighs them as cause examples"
    )
    if not isinstance(cause, Mapping) or not cause:
        raise DASError(f"cause must be a non-empty mapping of variable -> Pairs; got {cause!r:.80}")
    isolate = dict(isolate or {})
    if not isinstance(isolate, Mapping):
        raise DASError(f"isolate must be a mapping of variable -> Pairs or None; got {type(isolate).__name__}")
    variables = tuple(variables) if variables is not None else tuple(cause)
    unknown = [v for v in (*cause, *isolate) if v not in variables]
    if unknown:
        raise DASError(
            f"isolation/cause pairs for {unknown}, which are not among the variables {variables}; key each set "
            "by the variable whose rows it interchanges"
        )
    parts = [widen(_one_variable(p, "cause", v), v, variables) for v, p in cause.items()]
    for v, p in isolate.items():
        wide = widen(_one_variable(p, "isolate", v), v, variables, isolate=True)
        if isolate_weight != 1:
            wide.weights = [w * isolate_weight for w in (wide.weights or [1.0] * len(wide))]
        parts.append(wide)
    return Pairs.concat(*parts)


def fit_mdas(
    lm,
    cause: Mapping[str, Pairs],
    isolate: Mapping[str, Pairs] | None = None,
    *,
    at,
    rank: int | None = None,
    splits: Sequence[int] | None = None,
    isolate_weight: float = 1.0,
    held_out: Pairs | Mapping[str, Pairs] | None = None,
    test: Pairs | Mapping[str, Pairs] | None = None,
    **options,
) -> DASResult:
    """Fit one block of rows per variable of ``cause`` with cause and isolation examples (see the module).

    Example:
        >>> from interp.tasks.two_attributes import HIDDEN_SITE, TwoAttributes, attribute_pairs
        >>> net = TwoAttributes(seed=0)
        >>> cause, iso = attribute_pairs(net, 64, seed=1), attribute_pairs(net, 64, seed=3, ask="B")
        >>> mdas = fit_mdas(interp.LM(net), {"A": cause}, {"A": iso}, at=HIDDEN_SITE, rank=1, isolate_weight=2.0,
        ...                 steps=2, progress=False)
        >>> mdas.variables, mdas.rotation.shape
        (('A',), torch.Size([1, 8]))

    Args:
        cause: variable -> its cause pairs (one variable each; labels are the source's values).
        isolate: variable -> its isolation pairs (interchange that variable, ask about another attribute;
            labelled with ``base_labels``), or None (then this is DAS on the cause pairs).
        rank, splits: rows in all, and per variable in the order of ``cause`` (default: divided evenly).
        isolate_weight: multiplies each isolation example's cross-entropy (1: RAVEL's plain concatenation).
        held_out, test: joint Pairs (:func:`mdas_pairs`) or a mapping of cause pairs per variable; held-out IIA
            (over the mixture by default: ``val_fraction`` of the joint pairs) picks the best step.
        options: everything else :func:`interp.das.fit_das` takes (``via``, ``config``, ``cache``, ``steps``, ...).

    Returns:
        A :class:`interp.das.DASResult` over the variables of ``cause`` (its ``iia_train`` on the mixture);
        score Cause and Isolate with :func:`cause_isolate`.
    """
    names = tuple(cause) if isinstance(cause, Mapping) else ()
    joint = mdas_pairs(cause, isolate, isolate_weight=isolate_weight)
    held_out, test = (mdas_pairs(p, variables=names) if isinstance(p, Mapping) else p for p in (held_out, test))
    return fit_das(lm, joint, at=at, rank=rank, splits=splits, held_out=held_out, test=test, **options)


def cause_isolate(
    result: DASResult,
    cause: Mapping[str, Pairs] | None = None,
    isolate: Mapping[str, Pairs] | None = None,
    *,
    batch_size: int = 128,
) -> dict:
    """RAVEL's scores of a fitted alignment: Cause (IIA of each variable's cause pairs), Isolate (IIA of its
    isolation pairs against the base's answers) and Disentangle (their mean).

    Example:
        >>> s = cause_isolate(das, {"G": test}, {"G": test})    # das: a fit over the variable G
        >>> sorted(s["cause"]), 0 <= s["disentangle"] <= 1
        (['G', 'mean'], True)

    Each dict holds a score per variable and their ``mean``; Disentangle is the mean of the two means (or the
    one given). Works for any result over the variables (DAS, MDAS, a Boundless or masked basis).
    """
    names = result.variables
    out: dict = {}
    for role, sets in (("cause", cause), ("isolate", isolate)):
        if not sets:
            continue
        scores = {
            v: result.iia(widen(_one_variable(p, role, v), v, names, isolate=role == "isolate"), batch_size=batch_size)
            for v, p in sets.items()
        }
        out[role] = scores | {"mean": sum(scores.values()) / len(scores)}
    if not out:
        raise DASError("cause_isolate needs cause= or isolate= pairs to score")
    out["disentangle"] = sum(s["mean"] for s in out.values()) / len(out)
    return out


__all__ = ["fit_mdas", "mdas_pairs", "cause_isolate", "widen"]
