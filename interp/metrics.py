"""Scores of interchange interventions: IIA, per-pair scores, the DAS loss, and the model's task accuracy.

Example:
    >>> iia(lm, test, at=das.site, via=das.intervention)       # learned subspace
    0.6
    >>> iia(lm, test, at=site)                                 # via=None: whole-vector activation patching
    0.6
    >>> score(lm, test, at=das.site, via=das.intervention)     # per pair, with the label-word metrics
    PairScores(10 pairs: iia 0.60, iia_labels 0.60, logit_diff ..., log_odds_ratio ...)
    >>> task_accuracy(lm, test.base, test.base_labels, candidates=test.candidates)   # does it solve the task?
    0.4

IIA (Geiger et al. 2023) is the fraction of pairs whose argmax next token under the interchange (over the
vocabulary, or over ``pairs.candidates``) is the causal model's counterfactual label; the DAS loss is the
cross-entropy of those labels, differentiable in the intervention's weights. :func:`score` gives per-pair values:
the argmax hit, whether the counterfactual label's logit beats the base label's (the comparison between the two
label words that benchmarks report; ``iia(..., against="base")`` is its mean), their logit difference and the
log odds-ratio of the interchange against the clean run (:class:`interp.scores.PairScores`). Every score computes
only the unembedding rows it reads (the labels, the candidates) unless it needs the argmax over the vocabulary.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
from torch.nn import functional as F

from .batches import check_pairs, chunks, collect_sources, rows
from .causal import Pairs
from .checks import as_int
from .dii import intervene, run
from .inputs import InputError, token_ids
from .interventions import Intervention, as_intervention
from .replay import PrefixCache
from .scores import PairScores
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


def _intervention(pairs: Pairs, via):
    if len(pairs.variables) > 1 and not isinstance(via, Intervention):
        raise InputError(f"pairs align {len(pairs.variables)} variables; pass via=das.intervention or an Alignment")
    return as_intervention(via)


def pair_logits(
    lm,
    pairs: Pairs,
    *,
    at: Site | None,
    via=None,
    sources: torch.Tensor | None = None,
    prefix: PrefixCache | None = None,
    batch_size: int = 128,
    vocab: torch.Tensor | None = None,
    keep=None,
) -> torch.Tensor:
    """Logits (N, V) at the last token of every base prompt, under the interchange at ``at`` (None: the clean run),
    over the token ids ``vocab`` (columns in its order) or the whole vocabulary; batches of ``batch_size``.
    ``keep`` maps each batch's float logits (B, V) to what is kept of them (B, ...), so that whole-vocabulary
    logits of many pairs are never held at once.

    Example:
        >>> lg = pair_logits(lm, test, at=site, vocab=torch.tensor([5, 6]))     # only two unembedding rows
        >>> lg.shape
        torch.Size([10, 2])
        >>> pair_logits(lm, test, at=site, keep=lambda lg: lg.argmax(-1)).shape    # the argmax of each pair
        torch.Size([10])
    """
    keep = keep or (lambda lg: lg)
    batch_size = as_int(batch_size, "batch_size", low=1, error=InputError)
    iv = _intervention(pairs, via) if at is not None else None
    if at is not None and sources is None and iv.needs_source:
        sources = collect_sources(lm, pairs, [at], batch_size=batch_size)[0]
    out = []
    for sl in chunks(len(pairs), batch_size):
        batch = rows(lm, pairs.base[sl])
        with replaying(prefix, lm, range(sl.start, sl.stop), batch):
            if at is None:
                lg = run(lm, batch, vocab=vocab).logits
            else:
                src = [sources[sl] if sources is not None else None]
                lg = intervene(lm, batch, at=at, via=iv, sources=src, vocab=vocab).logits
        out.append(keep(lg.float()))
    return torch.cat(out)


@torch.no_grad()
def score(
    lm,
    pairs: Pairs,
    *,
    at: Site,
    via: Basis | Intervention | None = None,
    sources: torch.Tensor | None = None,
    prefix: PrefixCache | None = None,
    batch_size: int = 128,
    argmax: bool = True,
) -> PairScores:
    """Per-pair scores of the interchange at ``at`` along ``via``: argmax hits, label-word comparisons, log odds.

    Example:
        >>> s = score(lm, test, at=das.site, via=das.intervention)
        >>> s.hit.shape, s.logit_diff.shape, s.iia == iia(lm, test, at=das.site, via=das.intervention)
        (torch.Size([10]), torch.Size([10]), True)
        >>> s.iia_labels == iia(lm, test, at=das.site, via=das.intervention, against="base")
        True

    One interchange run and one clean run of the base prompts. Only the label words' rows of the unembedding
    (and the candidates') are computed, except for the argmax over the whole vocabulary (``hit`` when the pairs
    have no candidates): ``argmax=False`` skips that (``hit`` is None) so every run reads a few rows only.
    ``via``, ``sources`` and ``prefix`` as in :func:`iia`. See :class:`interp.scores.PairScores`.
    """
    pairs = check_pairs(pairs)
    iv = _intervention(pairs, via)
    labels, base = label_ids(lm, pairs.labels), label_ids(lm, pairs.base_labels)
    cand = _candidate_ids(lm, pairs)
    _check_candidates(labels, cand, pairs.labels, pairs.candidates, "label")
    words = torch.unique(torch.cat([labels, base] + ([cand] if cand is not None else [])))  # sorted
    kw = dict(prefix=prefix, batch_size=batch_size)
    if argmax and cand is None:  # the whole vocabulary, of which each batch keeps the words' columns and the argmax
        keep = lambda lg: torch.cat([lg[:, words.to(lg.device)], lg.argmax(-1, keepdim=True).float()], -1)  # noqa: E731
        lg = pair_logits(lm, pairs, at=at, via=iv, sources=sources, keep=keep, **kw).cpu()
        lg, top = lg[:, :-1], lg[:, -1].long()
    else:
        lg = pair_logits(lm, pairs, at=at, via=iv, sources=sources, vocab=words, **kw).cpu()
    clean = pair_logits(lm, pairs, at=None, vocab=words, **kw).cpu()
    col = lambda ids: torch.searchsorted(words.cpu(), ids.cpu())  # noqa: E731  (a word's column is its rank)
    n = torch.arange(len(pairs))
    ld = lg[n, col(labels)] - lg[n, col(base)]
    clean_ld = clean[n, col(labels)] - clean[n, col(base)]
    if cand is not None:
        hit = cand.cpu()[lg[:, col(cand)].argmax(-1)] == labels.cpu()
    else:
        hit = top == labels.cpu() if argmax else None
    contrast = labels.cpu() != base.cpu()
    return PairScores(hit, (ld > 0) & contrast, contrast, ld, clean_ld)


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
    against: str | None = None,
) -> float:
    """Interchange intervention accuracy: the fraction of pairs whose intervened prediction is the label.

    Example:
        >>> iia(lm, test, at=das.site, via=das.intervention)
        0.6
        >>> iia(lm, test, at=das.site, via=das.intervention, against="base")   # cf label's logit > base label's
        0.6

    ``via`` is None for the whole vector (activation patching), a Basis for an interchange along it, or an
    Intervention (``das.intervention`` for several variables). Predictions are the argmax over the whole
    vocabulary, or over ``pairs.candidates`` when set (then only the candidates' logits are computed).
    ``against="base"`` scores instead the comparison between the two label words: the fraction of pairs (with
    distinct labels) whose counterfactual label's logit beats the base label's, computing those two rows of the
    unembedding only. ``sources`` and ``prefix`` (:class:`interp.replay.PrefixCache` of ``pairs.base``) reuse
    cached activations. Per-pair values and more metrics: :func:`score`.
    """
    if against not in (None, "base"):
        raise InputError(f"against must be None (the argmax) or 'base' (cf label vs base label); got {against!r}")
    pairs = check_pairs(pairs)
    iv = _intervention(pairs, via)
    labels = label_ids(lm, pairs.labels)
    kw = dict(at=at, via=iv, sources=sources, prefix=prefix, batch_size=batch_size)
    if against == "base":
        base = label_ids(lm, pairs.base_labels)
        contrast = labels != base
        if not bool(contrast.any()):
            return math.nan
        words = torch.unique(torch.cat([labels, base]))  # sorted: a label's column is its rank
        lg = pair_logits(lm, pairs, vocab=words, **kw).to(labels.device)
        n = torch.arange(len(pairs), device=lg.device)
        win = lg[n, torch.searchsorted(words, labels)] > lg[n, torch.searchsorted(words, base)]
        return int(win[contrast].sum()) / int(contrast.sum())
    cand = _candidate_ids(lm, pairs)
    _check_candidates(labels, cand, pairs.labels, pairs.candidates, "label")
    top = pair_logits(lm, pairs, vocab=cand, keep=lambda lg: lg.argmax(-1), **kw)
    pred = top if cand is None else cand[top.to(cand.device)]
    return int((pred.to(labels.device) == labels).sum()) / len(pairs)


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
        hits += int((run(lm, batch, vocab=cand).predictions() == want[sl]).sum())
    return hits / len(inputs)


__all__ = ["iia", "score", "pair_logits", "task_accuracy", "label_ids", "das_logits", "das_loss"]
