"""Patchscopes: decode a hidden state by patching it into a target prompt and letting the model say what it is.

Example:
    >>> scope = patchscope(lm, base, layers=[0, 1], target=[5, 6, 7, 8, 9, 8], placeholder=9)   # ids: no tokenizer
    >>> scope                                              # logits: (n_layers, B, k, vocab), as a LogitLens
    Patchscope(layers=[0, 1], pos=last(), target_layers=[0, 1], placeholder=4, logits=(2, 4, 1, 97))
    >>> scope.rank(5).shape, len(scope.top_k(2))           # (layers, B, k); per layer, prompt 0's top 2
    (torch.Size([2, 4, 1]), 2)
    >>> plain = run(lm, [[5, 6, 7, 8, 9, 8]]).logits[0]                       # the target prompt, unpatched
    >>> own = patchscope(lm, [5, 6, 7, 8, 9, 8], layers=[0], target=[5, 6, 7, 8, 9, 8], placeholder=9, pos=at(4))
    >>> torch.allclose(own.logits[0, 0, 0], plain, atol=1e-5)             # its own state: the same run
    True
    >>> other = patchscope(lm, [5, 6, 7, 8, 3, 8], layers=[0], target=[5, 6, 7, 8, 9, 8], placeholder=9, pos=at(4))
    >>> bool((other.logits[0, 0, 0] - plain).abs().max() > 1e-3)        # token 3's state in 9's place: another one
    True

The patchscope of Ghandeharioun et al. (2024) reads the hidden state ``h`` of each source prompt after layer ``l``
(``resid_post``, as :func:`interp.logit_lens` does) at the positions ``pos``, writes it over the target prompt's
hidden state at the placeholder token after layer ``target_layer`` (the same ``l`` by default), runs the rest of
the target forward, and decodes the target's next token there. With the default few-shot identity prompt
``"cat -> cat; 1135 -> 1135; hello -> hello; ? ->"`` the model is asked to repeat the token ``h`` stands for;
unlike the logit lens, the remaining layers take part in decoding it, so the readout need not be linear in the
model's output basis. Every (layer, prompt, position) is one row of a single batched target forward: the target's
tokens before the placeholder, the same in every row and out of any patch's reach, run once and keep their keys
and values (:class:`interp.fastpatch.CleanRun`); each row then runs only the placeholder and the tokens after it,
with one op per row, and stops after the final norm at the last target token. (A model outside the site table
runs every row in full, one op per target layer.) A patch after the last layer at a placeholder that is not the
target's last token cannot reach its output: decode the last layers with an earlier ``target_layer``.

On Gemma-3-270M the identity patchscope reads which token a state *is* (the IO name from its own token at layers
0-7 of IOI prompts), not what the model predicts there (the logit lens's answer at the last token from layer 12):
docs/analysis.md, notebook 01.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from . import fastpatch
from .checks import as_int
from .dii import collect
from .engine import Batch, Op, execute, generating
from .inputs import InputError, encode
from .lens import LogitLens
from .positions import Position, last
from .sites import Site, resolved

MAX_ROWS = 256  # target rows a forward by default
IDENTITY = "cat -> cat; 1135 -> 1135; hello -> hello; ? ->"


@dataclass(repr=False)
class Patchscope(LogitLens):
    """What the target prompt decodes at its last token with each source state patched in.

    The same reads as :class:`interp.lens.LogitLens` (``probs``, ``prob``, ``rank``, ``top_k``) over ``logits``
    (n_layers, B, k, vocab): the target's next-token logits for the state of source prompt ``b``, position ``j``,
    layer ``layers[i]`` at ``[i, b, j]``.

    Attributes:
        target_layers: the target layer each source layer was patched into (in the order of ``layers``).
        target_ids: (T,) the target prompt's tokens; ``placeholder`` is the column patched.
        tokens: (n_layers, B, k, new_tokens) greedy continuation ids of the patched target (None without
            ``new_tokens``); ``tokens[..., 0]`` is the argmax of ``logits``.
    """

    target_layers: list[int] = field(default_factory=list)
    target_ids: torch.Tensor | None = None
    placeholder: int = -1
    tokens: torch.Tensor | None = None
    k: int = 5

    def __repr__(self) -> str:
        return (
            f"Patchscope(layers={self.layers}, pos={self.pos!r}, target_layers={self.target_layers}, "
            f"placeholder={self.placeholder}, logits={tuple(self.logits.shape)})"
        )

    def top_k(self, k: int | None = None, *, row: int = 0, slot: int = -1) -> list[list[tuple[str | int, float]]]:
        """Per layer, the ``k`` (default: ``patchscope(top_k=)``) most likely next tokens of the patched target,
        with their probabilities, for prompt ``row`` at its ``slot``-th position read."""
        return super().top_k(self.k if k is None else k, row=row, slot=slot)

    def text(self, *, row: int = 0, slot: int = -1) -> list[str]:
        """Per layer, the greedy continuation decoded for prompt ``row`` at its ``slot``-th position read."""
        if self.tokens is None:
            raise InputError("this patchscope decoded no continuation; pass new_tokens=n (e.g. 4) to patchscope()")
        tok = getattr(self.lm, "tokenizer", None)
        seqs = self.tokens[:, row, slot].tolist()
        return [tok.decode(s) if tok is not None else " ".join(map(str, s)) for s in seqs]


def locate_placeholder(lm, target_ids: torch.Tensor, placeholder) -> int:
    """The column of ``placeholder`` (a token id, or a word matched against each token's text, spaces stripped)
    in ``target_ids`` (T,); its last occurrence. Raises InputError naming both when it is missing."""
    ids = target_ids.tolist()
    if isinstance(placeholder, bool) or not isinstance(placeholder, (int, str)):
        raise InputError(f"placeholder={placeholder!r} must be a word (str) or a token id (int), e.g. '?'")
    tok = getattr(lm, "tokenizer", None)
    if isinstance(placeholder, str):
        if tok is None:
            raise InputError(
                f"placeholder={placeholder!r} is a word but this model has no tokenizer; pass its token id"
            )
        hits = [i for i, t in enumerate(ids) if tok.decode([t]).strip() == placeholder.strip()]
        shown = [tok.decode([t]) for t in ids]
    else:
        hits = [i for i, t in enumerate(ids) if t == placeholder]
        shown = ids
    if not hits:
        raise InputError(
            f"the target prompt has no placeholder token {placeholder!r}; its tokens are {shown}. Put the "
            f"placeholder in the target as a token of its own (e.g. {IDENTITY!r}) or pass placeholder= one of them"
        )
    return hits[-1]


def _target(lm, target) -> torch.Tensor:
    """The target prompt as (T,) ids: one string, or one prompt's token ids."""
    if isinstance(target, (list, tuple)) and target and isinstance(target[0], (str, list, tuple)):
        raise InputError(f"target is {target!r}; expected one prompt (a string or one list of ids), not several")
    batch = encode(lm, target)
    if len(batch) != 1:
        raise InputError(f"target has {len(batch)} rows; expected one prompt (a string or one list of token ids)")
    return batch.input_ids[0][batch.attention_mask[0].bool()]


def patchscope(
    model,
    inputs,
    *,
    layers: Iterable[int] | None = None,
    pos: Position | None = None,
    target=IDENTITY,
    placeholder: str | int = "?",
    target_layer: int | None = None,
    top_k: int = 5,
    new_tokens: int = 0,
    batch_size: int | None = None,
) -> Patchscope:
    """Patch each layer's ``resid_post`` of ``inputs`` into ``target`` at ``placeholder`` and decode the target.

    Example:
        >>> scope = patchscope(lm, base, target=[5, 6, 7, 8, 9, 8], placeholder=9, target_layer=0, new_tokens=3)
        >>> scope.target_layers, scope.tokens.shape               # every layer into layer 0; 3 greedy tokens each
        ([0, 0], torch.Size([2, 4, 1, 3]))

    Args:
        inputs: source prompts or token ids (read by ``model``: a ReFT model reads under its edits; the target runs
            on the plain LM).
        layers: source layers (default: all), each read after its block (``resid_post``).
        pos: source positions to decode (default: the last token).
        target: the target prompt (a string, or one prompt's ids); default the few-shot identity prompt
            :data:`IDENTITY`.
        placeholder: the target token overwritten (a word, matched against each token's text without spaces, or
            a token id); its last occurrence.
        target_layer: the layer patched in the target (default: each source layer into the same layer).
        top_k: how many tokens :meth:`Patchscope.top_k` lists by default (checked against the vocabulary there).
        new_tokens: also decode this many greedy tokens of each patched target (``tokens``, ``text()``).
        batch_size: target rows a forward, of the n_layers x B x k (default: 256 on the cached path, where a
            row is the few tokens from the placeholder on; all of them for a model outside the site table).
    """
    lm = model.lm if hasattr(model, "edit_ops") and hasattr(model, "lm") else model
    layers = list(range(lm.n_layers) if layers is None else layers)
    if not layers:
        raise InputError("patchscope(layers=[]) has no layers to read; pass some, or None for all")
    pos = last() if pos is None else pos
    tls = layers if target_layer is None else [target_layer] * len(layers)
    top_k = as_int(top_k, "patchscope(top_k=)", low=1, error=InputError)
    new_tokens = as_int(new_tokens, "patchscope(new_tokens=)", low=0, error=InputError)
    if batch_size is not None:
        batch_size = as_int(batch_size, "patchscope(batch_size=)", low=1, error=InputError)
    batch = encode(lm, inputs)
    sites = [Site("resid_post", layer, pos) for layer in layers]
    targets = {tl: resolved(lm, Site("resid_post", tl, last())) for tl in dict.fromkeys(tls)}  # checks the layers
    for s in sites:
        resolved(lm, s)
    positions = pos.resolve(batch.attention_mask, batch.input_ids, lm.tokenizer)  # (B, k), checked before a run
    ids = _target(lm, target)
    col = locate_placeholder(lm, ids, placeholder)
    with torch.no_grad():
        states = torch.stack(collect(model, batch, at=sites))  # (L, B, k, d): one source run for every layer
    L, B, k, d = states.shape
    src = states.reshape(L * B * k, d)  # row (i, b, j) -> i * B * k + b * k + j
    layer_of = torch.arange(L).repeat_interleave(B * k)  # row r holds a state of layer layers[layer_of[r]]
    whole = Batch(ids[None].to(lm.device), torch.ones(1, len(ids), dtype=torch.long, device=lm.device))
    # The target's tokens before the placeholder are the same in every row and no patch reaches them: one clean
    # run keeps their keys and values, and every row runs only the placeholder and what follows it.
    clean = fastpatch.CleanRun.of(lm, whole, upto=0) if fastpatch.supported(lm, "resid_post") is None else None
    size = (MAX_ROWS if clean is not None else len(src)) if batch_size is None else batch_size
    end = torch.tensor([[len(ids) - 1]], device=lm.device)
    logits, tokens = [], []
    for a in range(0, len(src), size):
        rows = slice(a, min(a + size, len(src)))
        n = rows.stop - rows.start
        part = Batch(whole.input_ids.expand(n, -1).contiguous(), whole.attention_mask.expand(n, -1).contiguous())
        ops = _ops(targets, tls, layer_of[rows], src[rows], col)
        with torch.no_grad():
            if clean is not None:
                cells = [[op] for op in _ops(targets, tls, layer_of[rows], src[rows], col, one=True)]
                logits.append(clean.stacked(lm, cells, skip=0, logits_at=end)[:, 0])
            else:
                logits.append(execute(lm, part, ops, logits_at=end.expand(n, 1)).logits[:, 0])
            if new_tokens:
                tokens.append(_greedy(lm, part, ops, new_tokens))
    out = torch.cat(logits).float().reshape(L, B, k, -1)
    toks = torch.cat(tokens).reshape(L, B, k, new_tokens) if new_tokens else None
    return Patchscope(out, layers, pos, positions, lm, list(tls), ids.cpu(), col, toks, top_k)


def _ops(targets: dict, tls: list[int], layer_of: torch.Tensor, src: torch.Tensor, col: int, *, one=False):
    """One op per target layer: its rows of this part get their source states at the placeholder column; with
    ``one``, one op per row, in row order, on a one-row target (a cell of :meth:`interp.fastpatch.CleanRun.stacked`)."""
    if one:
        return [
            Op(Site("resid_post", tls[i]), targets[tls[i]], torch.tensor([[col]]), fn=_const(src[r][None, None]))
            for r, i in enumerate(layer_of.tolist())
        ]
    ops = []
    for tl, target in targets.items():
        rows = torch.tensor([r for r, i in enumerate(layer_of.tolist()) if tls[i] == tl], dtype=torch.long)
        if len(rows):
            vec = src[rows][:, None]  # (n, 1, d)
            ops.append(
                Op(Site("resid_post", tl, last()), target, torch.full((len(rows), 1), col), fn=_const(vec), rows=rows)
            )
    return ops


def _const(vec: torch.Tensor):
    return lambda h: vec


def _greedy(lm, part: Batch, ops: list[Op], n: int) -> torch.Tensor:
    """(rows, n) greedy tokens of the patched target: the patch is made on the prompt pass, the KV cache keeps it."""
    pad = lm.tokenizer.pad_token_id if getattr(lm, "tokenizer", None) is not None else 0
    with generating(lm, ops):
        out = lm.hf.generate(
            input_ids=part.input_ids,
            attention_mask=part.attention_mask,
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=pad,
        )
    return out[:, part.input_ids.shape[1] :].cpu()


__all__ = ["IDENTITY", "Patchscope", "locate_placeholder", "patchscope"]
