"""What a run returns: logits where they were read (over the whole vocabulary or a few words), and metrics on them.

Example:
    >>> res = run(lm, base)                                  # the whole vocabulary: (B, V)
    >>> res.logits.shape, res.logit_diff(5, 6).shape
    (torch.Size([4, 97]), torch.Size([4]))
    >>> few = run(lm, base, vocab=[6, 5])                    # only two rows of the unembedding: (B, 2)
    >>> few.logits.shape, few.vocab.tolist()                 # column j holds the logit of token vocab[j]
    (torch.Size([4, 2]), [6, 5])
    >>> torch.allclose(few.logit_diff(5, 6), res.logit_diff(5, 6), atol=1e-5)   # metrics map ids to columns
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import display
from .inputs import InputError, token_ids


def vocab_ids(lm, vocab) -> torch.Tensor | None:
    """Token ids (V',) of a restricted vocabulary: words (each one token), ids, or a tensor of ids; None stays None.

    Example:
        >>> vocab_ids(lm, [7, 3]).tolist(), vocab_ids(lm, None)
        ([7, 3], None)
    """
    if vocab is None:
        return None
    try:
        ids = token_ids(lm, vocab)
    except InputError as e:
        raise InputError(f"vocab={vocab!r}: {e}") from None
    if ids.numel() == 0:
        raise InputError("vocab= is empty; give the token ids or words whose logits to compute, or None for all")
    return ids


def columns(vocab: torch.Tensor | None, ids: torch.Tensor) -> torch.Tensor:
    """The columns of logits over ``vocab`` that hold tokens ``ids`` (the ids themselves when vocab is None).

    Example:
        >>> columns(torch.tensor([9, 4, 7]), torch.tensor([7, 9])).tolist()
        [2, 0]
    """
    if vocab is None:
        return ids
    vocab = vocab.to(ids.device)
    eq = ids.reshape(-1, 1) == vocab.reshape(1, -1)  # (n, V')
    missing = ~eq.any(-1)
    if missing.any():
        raise InputError(
            f"token ids {ids[missing].unique()[:5].tolist()} are not in this result's vocab={vocab.tolist()[:8]}; "
            "its logits cover those words only: add them to vocab=, or run without vocab="
        )
    return eq.int().argmax(-1).reshape(ids.shape)  # the first column holding each id


@dataclass
class DIIResult:
    """Logits of an intervened run at the positions read; metrics take answer words or token ids.

    Attributes:
        logits: (B, V) at ``last()`` (or (B, k, V) when several positions were asked for); with ``vocab`` the last
            dimension has one column per word of ``vocab``, in its order.
        vocab: the token ids (V',) whose logits were computed (``vocab=`` of the run), or None for all of them.
    """

    logits: torch.Tensor
    lm: object = None
    vocab: torch.Tensor | None = None

    def __repr__(self) -> str:
        return display.dii_repr(self)

    def _repr_html_(self) -> str:
        return display.dii_html(self)

    def _last(self):
        return self.logits if self.logits.dim() == 2 else self.logits[:, -1]

    def _cols(self, target, n: int) -> torch.Tensor:
        return columns(self.vocab, token_ids(self.lm, target, n).to(self.logits.device))

    def logit(self, target) -> torch.Tensor:
        """logit(target) per example, shape (B,). ``target``: a word, one word per example, or ids."""
        lg = self._last()
        return lg[torch.arange(lg.shape[0], device=lg.device), self._cols(target, lg.shape[0])]

    def logit_diff(self, a, b) -> torch.Tensor:
        """logit(a) - logit(b) per example, shape (B,). ``a``/``b``: a word, one word per example, or ids."""
        return self.logit(a) - self.logit(b)

    def prob(self, target) -> torch.Tensor:
        """Probability of the target token(s) per example, shape (B,); needs the whole vocabulary."""
        if self.vocab is not None:
            raise InputError(
                f"this result has logits for {self.vocab.numel()} words only (vocab=), and a probability needs the "
                "whole vocabulary: run without vocab=, or compare words with logit_diff (a log odds)"
            )
        lg = self._last()
        return lg.float().softmax(-1)[torch.arange(lg.shape[0], device=lg.device), self._cols(target, lg.shape[0])]

    def predictions(self) -> torch.Tensor:
        """Argmax token id per example, shape (B,) (over the ``vocab`` words when the run was restricted)."""
        top = self._last().argmax(-1)
        return top if self.vocab is None else self.vocab.to(top.device)[top]

    def accuracy(self, target) -> float:
        """Fraction of examples whose top prediction is ``target``."""
        ids = token_ids(self.lm, target, self._last().shape[0]).to(self.logits.device)
        return (self.predictions() == ids).float().mean().item()

    def top_k(self, k: int = 5) -> list[list[tuple[str | int, float]]]:
        """The k most likely next tokens per example, as (token, probability), most likely first.

        The token is the decoded string, or the token id (int) when the model has no tokenizer. For a run
        restricted to ``vocab``, tokens and probabilities are among those words.

        Example:
            >>> token, p = run(lm, base).top_k(3)[0][0]        # no tokenizer here, so the token is its id
            >>> type(token).__name__, 0 < p < 1
            ('int', True)
        """
        lg = self._last()
        if not 1 <= k <= lg.shape[-1]:
            raise InputError(f"top_k(k={k!r}): k must be between 1 and the vocabulary size {lg.shape[-1]}")
        p, i = lg.float().softmax(-1).topk(k, dim=-1)
        if self.vocab is not None:
            i = self.vocab.to(i.device)[i]
        tok = getattr(self.lm, "tokenizer", None)
        name = (lambda t: tok.decode([t])) if tok is not None else (lambda t: t)
        return [[(name(int(t)), float(q)) for t, q in zip(ti, pi)] for ti, pi in zip(i, p)]


__all__ = ["DIIResult", "columns", "vocab_ids"]
