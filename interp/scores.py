"""Per-pair scores of an interchange (:func:`interp.metrics.score`): hits, label-word comparisons, log odds-ratios.

Example:
    >>> s = PairScores(hit=torch.tensor([True, False]), hit_labels=torch.tensor([True, True]),
    ...                contrast=torch.tensor([True, True]), logit_diff=torch.tensor([2.0, 0.5]),
    ...                clean_logit_diff=torch.tensor([-1.0, -1.5]))
    >>> s.iia, s.iia_labels, s.log_odds_ratio.tolist(), s.mean_log_odds_ratio
    (0.5, 1.0, [3.0, 2.0], 2.5)
    >>> s
    PairScores(2 pairs: iia 0.50, iia_labels 1.00, logit_diff +1.25 (clean -1.25), log_odds_ratio +2.50)

Two accuracies, because they answer different questions and disagree when a class has several label words:
``hit`` is the argmax over the vocabulary (or over the pairs' candidates) being the counterfactual label (IIA as
Geiger et al. define it); ``hit_labels`` is the counterfactual label's logit beating the base label's, the
comparison between the two label words that benchmarks such as CausalGym report. The log odds-ratio is
``log(p(cf) / p(base))`` under the interchange minus the same on the clean run: as the softmax's normaliser cancels
in a ratio, it equals ``logit_diff - clean_logit_diff``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from . import display


def _mean(values: torch.Tensor, where: torch.Tensor) -> float:
    return float(values[where].double().mean()) if bool(where.any()) else math.nan


@dataclass
class PairScores:
    """Per-pair tensors (N,) of one interchange over N pairs, and their means.

    Attributes:
        hit: the argmax (over the vocabulary, or over ``pairs.candidates``) is the counterfactual label; None when
            not computed (``score(..., argmax=False)`` without candidates).
        hit_labels: the counterfactual label's logit exceeds the base label's under the interchange (False where
            the two labels are the same token).
        contrast: the counterfactual label differs from the base label: the pairs the label-word metrics average.
        logit_diff: logit(counterfactual label) - logit(base label) under the interchange.
        clean_logit_diff: the same on the clean base run (no intervention).
        log_odds_ratio: ``logit_diff - clean_logit_diff`` (the log odds of cf vs base label after / before).
    """

    hit: torch.Tensor | None
    hit_labels: torch.Tensor
    contrast: torch.Tensor
    logit_diff: torch.Tensor
    clean_logit_diff: torch.Tensor
    log_odds_ratio: torch.Tensor = field(default=None)

    def __post_init__(self):
        if self.log_odds_ratio is None:
            self.log_odds_ratio = self.logit_diff - self.clean_logit_diff

    def __len__(self) -> int:
        return self.logit_diff.shape[0]

    def __repr__(self) -> str:
        return display.scores_repr(self)

    @property
    def iia(self) -> float | None:
        """Fraction of pairs whose argmax is the counterfactual label (None when ``hit`` was not computed)."""
        return None if self.hit is None else float(self.hit.double().mean())

    @property
    def iia_labels(self) -> float:
        """Fraction of contrast pairs whose counterfactual label beats the base label (NaN without contrast pairs)."""
        return _mean(self.hit_labels, self.contrast)

    @property
    def mean_logit_diff(self) -> float:
        """Mean intervened logit difference (cf - base label) over the contrast pairs."""
        return _mean(self.logit_diff, self.contrast)

    @property
    def mean_clean_logit_diff(self) -> float:
        """Mean clean logit difference (cf - base label) over the contrast pairs."""
        return _mean(self.clean_logit_diff, self.contrast)

    @property
    def mean_log_odds_ratio(self) -> float:
        """Mean log odds-ratio over the contrast pairs."""
        return _mean(self.log_odds_ratio, self.contrast)

    @property
    def n_contrast(self) -> int:
        """Pairs whose counterfactual and base labels differ."""
        return int(self.contrast.sum())

    def means(self) -> dict:
        """The means as a JSON-able dict (``iia`` None when not computed; NaN without contrast pairs).

        Example:
            >>> PairScores(None, torch.tensor([True]), torch.tensor([True]), torch.tensor([1.0]),
            ...            torch.tensor([0.0])).means()["iia_labels"]
            1.0
        """
        return {
            "n": len(self),
            "n_contrast": self.n_contrast,
            "iia": self.iia,
            "iia_labels": self.iia_labels,
            "logit_diff": self.mean_logit_diff,
            "clean_logit_diff": self.mean_clean_logit_diff,
            "log_odds_ratio": self.mean_log_odds_ratio,
        }


__all__ = ["PairScores"]
