"""Turn prompts into padded batches, and answer words into token ids, with clear errors.

Example:
    >>> batch = encode(lm, ["When Mary and John ...", "Hi"])      # left-padded by default  # doctest: +SKIP
    >>> batch = encode(lm, {"input_ids": [[0, 0, 5, 6], [7, 8, 9, 10]], "attention_mask": [[0, 0, 1, 1], [1, 1, 1, 1]]})
    >>> batch.position_ids.tolist()                                 # counted on real tokens only
    [[0, 0, 0, 1], [0, 1, 2, 3]]
    >>> encode(lm, base).input_ids.shape                            # a (B, T) tensor of ids: nothing padded
    torch.Size([4, 6])
    >>> encode(lm, [[5, 6, 7], [8, 9]]).attention_mask.tolist()     # lists of ids: padded (left), with a mask
    [[1, 1, 1], [0, 1, 1]]
    >>> token_ids(lm, [5, 6])                  # answer ids; with a tokenizer, words: token_ids(lm, [" Mary", " John"])
    tensor([5, 6])
    >>> encode(lm, ["Hi"])
    Traceback (most recent call last):
    interp.errors.InputError: this model has no tokenizer; pass input_ids (a tensor or a dict) instead of strings
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import torch

from .engine import Batch
from .errors import InputError, PaddingWarning  # noqa: F401  (defined in interp.errors, re-exported here)


def encode(lm, inputs, *, padding_side: str = "left") -> Batch:
    """A :class:`Batch` from a list of strings, one string, a dict with input_ids/attention_mask, or ids.

    Ids may be a (B, T) or (T,) tensor (nothing padded), or a list of token-id lists (or 1-D tensors) of any
    lengths, padded on ``padding_side`` with a mask. Positions are always counted on real tokens, so left and
    right padding give the same results. Ids without a mask whose rows start or end with the tokenizer's pad id
    raise a :class:`PaddingWarning`: the model would attend to that padding; pass ``attention_mask``.
    """
    if isinstance(inputs, Batch):
        return inputs
    if padding_side not in ("left", "right"):
        raise InputError(f"padding_side must be 'left' or 'right'; got {padding_side!r}")
    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        ids = _id_tensor(inputs, "input_ids")
        ids = ids if ids.dim() == 2 else ids[None]
        _warn_if_padded(lm, ids)
        check_ids(lm, ids)
        return Batch(ids.to(lm.device), torch.ones_like(ids, device=lm.device))
    if isinstance(inputs, dict):
        if "input_ids" not in inputs:
            raise InputError(f"the inputs dict has keys {sorted(inputs)}; expected 'input_ids' (and 'attention_mask')")
        ids = _id_tensor(inputs["input_ids"], "input_ids")
        ids = ids if ids.dim() == 2 else ids[None]
        mask = inputs.get("attention_mask")
        if mask is None:
            _warn_if_padded(lm, ids)
            mask = torch.ones_like(ids)
        mask = torch.as_tensor(mask)
        if mask.dim() == 1:
            mask = mask[None]
        if mask.shape != ids.shape:
            raise InputError(
                f"attention_mask has shape {tuple(mask.shape)} but input_ids {tuple(ids.shape)}; give one mask entry "
                "per token"
            )
        check_ids(lm, ids, mask)
        return Batch(ids.to(lm.device), mask.to(lm.device))
    if isinstance(inputs, str):
        inputs = [inputs]
    inputs = list(inputs)
    if not inputs:
        raise InputError("got an empty list of prompts; expected at least one string")
    if all(isinstance(p, numbers.Integral) for p in inputs):  # one prompt of ids, like a (T,) tensor
        inputs = [inputs]
    if not all(isinstance(p, str) for p in inputs):
        if not any(isinstance(p, str) for p in inputs):
            return pad(lm, inputs, padding_side=padding_side)
        raise InputError(
            f"expected prompts as strings or token-id lists, not a mix; got {[type(p).__name__ for p in inputs][:5]}"
        )
    tok = _tokenizer(lm)
    side = tok.padding_side
    tok.padding_side = padding_side
    try:
        enc = tok(inputs, return_tensors="pt", padding=True)
    finally:
        tok.padding_side = side
    check_ids(lm, enc["input_ids"], enc["attention_mask"])
    return Batch(enc["input_ids"].to(lm.device), enc["attention_mask"].to(lm.device))


def _id_tensor(x, what: str) -> torch.Tensor:
    """``x`` as a long tensor of token ids, (T,) or (B, T); InputError for floats, strings or other ranks."""
    try:
        t = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as e:
        raise InputError(f"{what}: could not read {type(x).__name__} as token ids ({e}); expected integers") from None
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise InputError(f"{what} has dtype {t.dtype}; token ids must be integers (e.g. .long())")
    if t.dim() not in (1, 2):
        raise InputError(f"{what} has shape {tuple(t.shape)}; expected (batch, tokens) or (tokens,)")
    return t.long()


def pad(lm, seqs: list, *, padding_side: str = "left") -> Batch:
    """Token-id sequences of any lengths as one :class:`Batch`: the one padding rule of both packages.

    Rows are padded on ``padding_side`` with the tokenizer's pad id (0 where the model has none) and carry the
    attention mask; :func:`encode` (lists of ids), ``interp.batches.rows`` and ReFT's ``collate`` all pad here.

    Example:
        >>> b = pad(lm, [[5, 6, 7], [8, 9]], padding_side="right")
        >>> b.input_ids.tolist(), b.attention_mask.tolist()
        ([[5, 6, 7], [8, 9, 0]], [[1, 1, 1], [1, 1, 0]])
    """
    if padding_side not in ("left", "right"):
        raise InputError(f"padding_side must be 'left' or 'right'; got {padding_side!r}")
    rows = []
    for i, s in enumerate(seqs):
        if isinstance(s, str) or not hasattr(s, "__len__"):
            raise InputError(f"prompt {i} is a {type(s).__name__}; expected a string or a list of token ids")
        t = _id_tensor(s, f"prompt {i}") if len(s) else torch.zeros(0, dtype=torch.long)
        if t.dim() != 1 or t.numel() == 0:
            raise InputError(f"prompt {i} has shape {tuple(t.shape)}; expected a non-empty list of token ids")
        rows.append(t)
    if not rows:
        raise InputError("got no token-id sequences to pad; expected at least one")
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), _pad_id(lm) or 0, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for b, r in enumerate(rows):
        cols = slice(T - len(r), T) if padding_side == "left" else slice(0, len(r))
        ids[b, cols], mask[b, cols] = r, 1
    check_ids(lm, ids, mask)
    return Batch(ids.to(lm.device), mask.to(lm.device))


def check_ids(lm, ids: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    """Refuse, before any forward, token ids the model cannot embed and rows longer than its context.

    Every id must be one the input embedding has (``0 .. rows - 1``), and no row may hold more real tokens
    (``mask``; default: all) than the config's ``max_position_embeddings`` where it has one. The error names
    the first bad id with its row and column, or the longest row, and the limit. A stand-in model without a
    spec, an input embedding or a config is not checked for what it lacks.

    Example:
        >>> encode(lm, [[5, 6, 97]])
        Traceback (most recent call last):
        interp.errors.InputError: token id 97 at row 0, column 2 is outside the vocabulary of LlamaForCausalLM
        (ids 0..96); ...
        >>> encode(lm, torch.ones(1, 5000, dtype=torch.long))
        Traceback (most recent call last):
        interp.errors.InputError: prompt 0 has 5000 tokens, more than LlamaForCausalLM's context of 2048 ...
    """
    spec = getattr(lm, "spec", None)
    if spec is None or ids.numel() == 0:
        return
    vocab = input_vocab(lm)
    if vocab is None:  # a model without an input embedding reads its ids its own way (e.g. packed features)
        return
    bad = (ids < 0) | (ids >= vocab)
    if bad.any():
        b, t = (int(i) for i in bad.nonzero()[0])
        more = int(bad.sum()) - 1
        raise InputError(
            f"token id {int(ids[b, t])} at row {b}, column {t} is outside the vocabulary of {spec.architecture} "
            f"(ids 0..{vocab - 1}){f'; {more} more such ids' if more else ''}; check that the ids come from this "
            "model's tokenizer"
        )
    config = getattr(getattr(lm, "hf", None), "config", None)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    context = getattr(config, "max_position_embeddings", None)
    if not isinstance(context, int):
        return
    lengths = mask.long().sum(-1) if mask is not None else torch.full(ids.shape[:-1], ids.shape[-1])
    if int(lengths.max()) > context:
        b = int(lengths.argmax())
        raise InputError(
            f"prompt {b} has {int(lengths[b])} tokens, more than {spec.architecture}'s context of {context} "
            f"(max_position_embeddings); shorten it, e.g. keep its last {context} tokens"
        )


def input_vocab(lm) -> int | None:
    """How many token ids the model can embed: its input embedding's rows (None for a model without one).

    Example:
        >>> input_vocab(lm)
        97
    """
    get = getattr(getattr(lm, "hf", None), "get_input_embeddings", None)
    try:
        emb = get() if callable(get) else None
    except (NotImplementedError, AttributeError):
        emb = None
    rows = getattr(emb, "num_embeddings", None)
    return rows if isinstance(rows, int) else None


def _pad_id(lm) -> int | None:
    return getattr(getattr(lm, "tokenizer", None), "pad_token_id", None)


def _warn_if_padded(lm, ids: torch.Tensor) -> None:
    """PaddingWarning when a row of unmasked ids starts or ends with the tokenizer's pad id.

    Padding sits at the ends of rows, so only the ends are looked at. Where the pad id doubles as BOS (or EOS),
    one such token at the start (or end) is the real one; a run of two or more is padding. With no tokenizer
    (or no pad id) nothing is known, so nothing is said. Gemma's pad id 0 (``<pad>``) is never produced by
    tokenizing text, so there it always means padding.
    """
    pad = _pad_id(lm)
    if pad is None or ids.numel() == 0:
        return
    tok = lm.tokenizer
    spare = {  # tokens at that end that may be real: the pad id doubling as BOS or EOS
        "start": int(getattr(tok, "bos_token_id", None) == pad),
        "end": int(getattr(tok, "eos_token_id", None) == pad),
    }
    for b, row in enumerate(ids.tolist()):
        for end, seq in (("start", row), ("end", row[::-1])):
            run = next((i for i, t in enumerate(seq) if t != pad), len(seq))
            if run > spare[end]:
                warnings.warn(
                    f"input_ids row {b} {end}s with {run} pad token(s) (pad id {pad}) but no attention_mask was "
                    "given, so the model attends to that padding; pass {'input_ids': ..., 'attention_mask': ...}, "
                    "or prompts as strings, or a list of unpadded token-id lists",
                    PaddingWarning,
                    stacklevel=3,
                )
                return


def token_ids(lm, words, n: int | None = None) -> torch.Tensor:
    """Single-token ids of ``words`` (a string for every row, a list per row, or ids); shape (n,).

    Ids may be Python or numpy integers, integer tensors or arrays; one id (or one word) is used for every row.
    Raises InputError naming the word when it is not exactly one token, or the id when it is outside the vocabulary.
    """
    if isinstance(words, np.ndarray) and words.dtype.kind in "USO":  # an array of words
        words = words.tolist()
    if isinstance(words, (torch.Tensor, np.ndarray)):
        ids = _answer_tensor(words)
        if ids.numel() == 1 and n is not None:
            ids = ids.expand(n)
    else:
        if isinstance(words, str) or _is_id(words):
            words = [words] * (n or 1)
        if not hasattr(words, "__iter__"):
            raise InputError(f"answer {words!r} is a {type(words).__name__}; expected a word (str) or a token id (int)")
        ids = torch.tensor([int(w) if _is_id(w) else _single_token(lm, w) for w in words], dtype=torch.long)
    if n is not None and ids.numel() != n:
        raise InputError(f"got {ids.numel()} answer tokens for a batch of {n}; give one per example or one string")
    vocab = getattr(getattr(lm, "spec", None), "vocab_size", None)
    bad = ids[(ids < 0) | (ids >= vocab)] if vocab else ids[ids < 0]
    if bad.numel():
        raise InputError(
            f"answer ids {bad.unique()[:5].tolist()} are outside the vocabulary [0, {vocab}); pass words or valid ids"
        )
    return ids.to(lm.device) if lm is not None else ids


def _is_id(w) -> bool:
    """A Python or numpy integer, or a one-element integer tensor: one token id."""
    if isinstance(w, torch.Tensor):
        return w.numel() == 1 and not (w.is_floating_point() or w.is_complex() or w.dtype == torch.bool)
    return isinstance(w, numbers.Integral) and not isinstance(w, bool)


def _answer_tensor(x) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise InputError(f"answer ids have dtype {t.dtype}; expected integer token ids (or words)")
    return t.flatten().long()


def _single_token(lm, word) -> int:
    if not isinstance(word, str):
        raise InputError(f"answer {word!r} is a {type(word).__name__}; expected a word (str) or a token id (int)")
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
