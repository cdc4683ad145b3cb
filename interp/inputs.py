"""Turn prompts into padded batches, and answer words into token ids, with clear errors.

Example:
    >>> batch = encode(lm, ["When Mary and John ...", "Hi"])      # left-padded by default  # doctest: +SKIP
    >>> batch = encode(lm, {"input_ids": [[0, 0, 5, 6], [7, 8, 9, 10]], "attention_mask": [[0, 0, 1, 1], [1, 1, 1, 1]]})
    >>> batch.position_ids.tolist()                                 # counted on real tokens only
    [[0, 0, 0, 1], [0, 1, 2, 3]]
    >>> encode(lm, base).input_ids.shape                            # a (B, T) tensor of ids: nothing padded
    torch.Size([4, 6])
    >>> token_ids(lm, [5, 6])                  # answer ids; with a tokenizer, words: token_ids(lm, [" Mary", " John"])
    tensor([5, 6])
    >>> encode(lm, ["Hi"])
    Traceback (most recent call last):
    interp.inputs.InputError: this model has no tokenizer; pass input_ids (a tensor or a dict) instead of strings
"""

from __future__ import annotations

import torch

from .engine import Batch


class InputError(ValueError):
    """Inputs that cannot be run as asked."""


def encode(lm, inputs, *, padding_side: str = "left") -> Batch:
    """A :class:`Batch` from a list of strings, one string, a dict with input_ids/attention_mask, or ids.

    Positions are always counted on real tokens, so left and right padding give the same results.
    """
    if isinstance(inputs, Batch):
        return inputs
    if isinstance(inputs, torch.Tensor):
        ids = inputs if inputs.dim() == 2 else inputs[None]
        return Batch(ids.to(lm.device), torch.ones_like(ids, device=lm.device))
    if isinstance(inputs, dict):
        ids = torch.as_tensor(inputs["input_ids"])
        mask = torch.as_tensor(inputs.get("attention_mask", torch.ones_like(ids)))
        return Batch(ids.to(lm.device), mask.to(lm.device))
    if isinstance(inputs, str):
        inputs = [inputs]
    inputs = list(inputs)
    if not inputs:
        raise InputError("got an empty list of prompts; expected at least one string")
    if not all(isinstance(p, str) for p in inputs):
        raise InputError(f"expected prompts as strings; got {[type(p).__name__ for p in inputs][:5]}")
    tok = _tokenizer(lm)
    if padding_side not in ("left", "right"):
        raise InputError(f"padding_side must be 'left' or 'right'; got {padding_side!r}")
    side = tok.padding_side
    tok.padding_side = padding_side
    try:
        enc = tok(inputs, return_tensors="pt", padding=True)
    finally:
        tok.padding_side = side
    return Batch(enc["input_ids"].to(lm.device), enc["attention_mask"].to(lm.device))


def token_ids(lm, words, n: int | None = None) -> torch.Tensor:
    """Single-token ids of ``words`` (a string for every row, a list per row, or ids); shape (n,).

    Raises InputError naming the word when it is not exactly one token.
    """
    if isinstance(words, torch.Tensor):
        ids = words.flatten().long()
    else:
        if isinstance(words, (str, int)):
            words = [words] * (n or 1)
        ids = torch.tensor([w if isinstance(w, int) else _single_token(lm, w) for w in words])
    if n is not None and ids.numel() != n:
        raise InputError(f"got {ids.numel()} answer tokens for a batch of {n}; give one per example or one string")
    return ids.to(lm.device)


def _single_token(lm, word: str) -> int:
    ids = _tokenizer(lm)(word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = _tokenizer(lm).convert_ids_to_tokens(ids)
        raise InputError(
            f"{word!r} is {len(ids)} tokens {pieces}, expected exactly one; check the leading space "
            "(' Paris' vs 'Paris') or pick a word the tokenizer keeps whole"
        )
    return ids[0]


def _tokenizer(lm):
    if lm.tokenizer is None:
        raise InputError("this model has no tokenizer; pass input_ids (a tensor or a dict) instead of strings")
    return lm.tokenizer
