"""Scores of interchange interventions: IIA, the DAS loss, and the unintervened model's task accuracy.

Example:
    >>> iia(lm, test, at=das.site, via=das.intervention)       # learned subspace
    0.6
    >>> iia(lm, test, at=site)                                 # via=None: whole-vector activation patching
    0.6
    >>> task_accuracy(lm, test.base, test.base_labels, candidates=test.candidates)   # does it solve the task?
    0.4

IIA (Geiger et al. 2023) is the fraction of pairs whose argmax next token under the interchange (over the
vocabulary, or over ``pairs.candidates``) is the causal model's counterfactual label; the DAS loss is the
cross-entropy of those labels, differentiable in the intervention's weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch.nn import functional as F

from .batches import check_pairs, chunks, collect_sources, rows
from .causal import Pairs
from .dii import intervene, run
from .inputs import InputError, token_ids
from .interventions import Intervention, as_intervention
from .replay import PrefixCache
from .sites import Site
from .subspace import Basis


def label_ids(lm, labels: Sequence) -> torch.Tensor:
    """Token ids (N,) of answer words (each must be one token) or ids; errors name the offending label."""
    labels = list(labels)
    if labels and isinstance(labels[0], str):
        return token_ids(lm, labels)
    ids = torch.as_tensor([int(x) for x in labels], dtype=torch.long)
    vocab = lm.spec.vocab_size
    bad = [int(i) for i in ids if not 0 <= i < vocab]
    if bad:
        raise InputError(f"label ids {bad[:5]} are outside the vocabulary [0, {vocab}); pass words or valid ids")
    return ids.to(lm.device)


def das_logits(lm, base, sources: torch.Tensor, *, at: Site, via: Intervention, grad: bool = False) -> torch.Tensor:
    """Logits (B, V) at the last token of ``base`` with the ``via`` interchange from cached ``sources``."""
    return intervene(lm, base, at=at, via=via, sources=[sources], grad=grad).logits


def das_loss(lm, base, sources: torch.Tensor, labels: torch.Tensor, *, at: Site, via: Intervention) -> torch.Tensor:
    """Cross-entropy of the counterfactual labels under the interchange; differentiable in ``via``'s weights.

    Example:
        >>> from interp.das import Alignment
        >>> (src_cache,) = collect_sources(lm, train, [site])          # (N, k, w): source vectors, once
        >>> labels, idx = label_ids(lm, train.labels), [0, 1, 2, 3]
        >>> batch, R = rows(lm, [train.base[i] for i in idx]), LowRankRotation(lm.d_model, 1)
        >>> loss = das_loss(lm, batch, src_cache[idx], labels[idx], at=site, via=Alignment(R)); loss.backward()
        >>> all(p.grad is not None for p in R.parameters())            # gradients reach the basis only
        True
    """
    logits = das_logits(lm, base, sources, at=at, via=via, grad=True)
    return F.cross_entropy(logits.float(), labels)


def replaying(prefix: PrefixCache | None, lm, idx, batch):
    """The context that replays ``prefix`` for rows ``idx`` of ``batch`` (a shared-prefix cache), or nothing.

    Example:
        >>> with replaying(None, lm, [0, 1], rows(lm, base[:2])):   # no prefix cache: a plain forward inside
        ...     logits = run(lm, base[:2]).logits
        >>> logits.shape
        torch.Size([2, 97])
    """
    return prefix.replay(lm, idx, batch) if prefix is not None else contextlib.nullcontext()


def predict(logits: torch.Tensor, candidates: torch.Tensor | None) -> torch.Tensor:
    """The argmax token of each row of ``logits`` (B, V), over the vocabulary or only over ``candidates`` ids.

    Example:
        >>> logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
        >>> predict(logits, None).tolist(), predict(logits, torch.tensor([2, 3])).tolist()
        ([1], [3])
    """
    if candidates is None:
        return logits.argmax(-1)
    return candidates[logits[:, candidates].argmax(-1)]


def _candidate_ids(lm, pairs: Pairs) -> torch.Tensor | None:
    return label_ids(lm, pairs.candidates) if pairs.candidates else None


def _check_candidates(ids: torch.Tensor, cand: torch.Tensor | None, given: Sequence, candidates, what: str) -> None:
    """InputError naming the first label outside ``candidates``: predictions over candidates never hit it."""
    if cand is None:
        return
    outside = torch.nonzero(~torch.isin(ids, cand.to(ids.device))).flatten().tolist()
    if outside:
        i = outside[0]
        raise InputError(
            f"{what} {i} is {given[i]!r}, which is not among the candidates {list(candidates)} ({len(outside)} "
            f"{what}s are outside them); predictions are restricted to the candidates, so these could never "
            "score: add the answer to candidates, or drop candidates to score over the whole vocabulary"
        )


@torch.no_grad()
def iia(
    lm,
    pairs: Pairs,
    *,
    at: Site,
    via: Basis | Intervention | None = None,
    sources: torch.Tensor | None = None,
    prefix: PrefixCache | None = None,
    batch_size: int = 128,
) -> float:
    """Interchange intervention accuracy: the fraction of pairs whose intervened prediction is the label.

    Example:
        >>> iia(lm, test, at=das.site, via=das.intervention)
        0.6

    ``via`` is None for the whole vector (activation patching), a Basis for an interchange along it, or an
    Intervention (``das.intervention`` for several variables). Predictions are the argmax over the whole
    vocabulary, or over ``pairs.candidates`` when set. ``sources`` and ``prefix``
    (:class:`interp.replay.PrefixCache` of ``pairs.base``) reuse cached activations.
    """
    pairs = check_pairs(pairs)
    iv = as_intervention(via)
    if len(pairs.variables) > 1 and not isinstance(via, Intervention):
        raise InputError(f"pairs align {len(pairs.variables)} variables; pass via=das.intervention or an Alignment")
    labels = label_ids(lm, pairs.labels)
    cand = _candidate_ids(lm, pairs)
    _check_candidates(labels, cand, pairs.labels, pairs.candidates, "label")
    if sources is None:
        sources = collect_sources(lm, pairs, [at], batch_size=batch_size)[0]
    hits = 0
    for sl in chunks(len(pairs), batch_size):
        batch = rows(lm, pairs.base[sl])
        with replaying(prefix, lm, range(sl.start, sl.stop), batch):
            logits = das_logits(lm, batch, sources[sl], at=at, via=iv)
        hits += int((predict(logits, cand) == labels[sl]).sum())
    return hits / len(pairs)


@torch.no_grad()
def task_accuracy(lm, inputs: Sequence, answers: Sequence, *, candidates=None, batch_size: int = 128) -> float:
    """Fraction of ``inputs`` on which the unintervened model predicts ``answers`` (argmax, or over candidates)."""
    if len(inputs) == 0 or len(inputs) != len(answers):
        raise InputError(f"got {len(inputs)} inputs and {len(answers)} answers; expected equally many, at least one")
    want = label_ids(lm, answers)
    cand = label_ids(lm, candidates) if candidates is not None and len(candidates) else None
    _check_candidates(want, cand, list(answers), candidates, "answer")
    hits = 0
    for sl in chunks(len(inputs), batch_size):
        batch = rows(lm, inputs[sl])
        hits += int((predict(run(lm, batch).logits, cand) == want[sl]).sum())
    return hits / len(inputs)


__all__ = ["iia", "task_accuracy", "label_ids", "das_logits", "das_loss"]
