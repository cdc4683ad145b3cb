"""Generate with ReFT interventions on prompt positions (and, with decode-time positions, on each new token).

Example:
    >>> generate(rlm, "Who are you?", max_new_tokens=32)         # text needs a tokenizer  # doctest: +SKIP
    ' Arr, a humble parrot of the seas ...'
    >>> g = generate_ids(rlm, base, max_new_tokens=5)            # token ids in, token ids out
    >>> g.ids.shape, g.prompt_length, g.new_ids.shape
    (torch.Size([4, 11]), 6, torch.Size([4, 5]))
    >>> rlm_b = attach(lm, {Site("resid_post", 0, last()): LoReFT(lm.d_model, rank=4)})
    >>> g = generate_ids(rlm, base[:3], serve=[rlm, None, rlm_b], max_new_tokens=5)   # a different one per row
    >>> torch.equal(g.new_ids[1], generate_ids(lm, base[1:2], max_new_tokens=5).new_ids[0])   # row 1: no edit
    True

The interventions are engine ops on the hooks backend. The prompt-position edits fire on the first forward of
``generate`` (the prompt pass), and their hooks are removed when it ends, so for prompt-only models each decoded
token is a plain cached step that pays nothing. Because the edited prompt states live in the KV cache, this equals
recomputing the full sequence with the edit at the prompt positions every step.

A model with decode-time positions (``generated()``, ``recent(k)``, e.g. ``"f1+l1+g"``) also edits each new
token's vector at every cached decoding step, on the rows it serves only (rows served None or by a prompt-only
model are untouched); a token's edited state then enters the cache, so this too equals a full recomputation of
the sequence with the edit at the prompt positions and at every generated token:

    >>> rlm_g = attach(lm, {Site("resid_post", 1, first(1) + last(1) + generated()): LoReFT(lm.d_model, rank=4)})
    >>> generate_ids(rlm_g, base[:3], serve=[rlm_g, None, rlm], max_new_tokens=4).new_ids.shape
    torch.Size([3, 4])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn.utils import parametrize

from interp.engine import Op, generating
from interp.inputs import encode

from .interventions import ReftError
from .model import ReftModel, check_served, serve_ops, served_rows


@dataclass
class Generation:
    """Token ids ``(B, T + new)`` of prompts (left-padded to ``prompt_length`` T) and their continuations."""

    ids: torch.Tensor
    prompt_length: int

    @property
    def new_ids(self) -> torch.Tensor:
        """The generated tokens alone, (B, new)."""
        return self.ids[:, self.prompt_length :]


def generate_ids(
    model,
    prompts,
    *,
    serve: Sequence[ReftModel | None] | None = None,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    **generate_kwargs,
) -> Generation:
    """A :class:`Generation` from ``lm.hf.generate`` with the interventions on the prompt pass, and those with
    decode-time positions on each new token (greedy or sampled; one token per step, with the KV cache)."""
    lm = model.lm if isinstance(model, ReftModel) else model
    single = isinstance(prompts, str)
    batch = encode(lm, [prompts] if single else prompts, padding_side="left")
    B, T = batch.input_ids.shape
    if int(batch.attention_mask.sum(1).min()) == 0:
        raise ReftError("an empty prompt cannot be intervened on; give at least one token per prompt")
    if serve is None:
        serve = [model if isinstance(model, ReftModel) else None] * B
    serve = list(serve)
    if len(serve) != B:
        raise ReftError(f"serve= has {len(serve)} entries for {B} prompts; give one ReftModel or None per prompt")
    check_served(lm, serve)  # another model's interventions would meet vectors of another width mid-generation
    pad = lm.tokenizer.pad_token_id if lm.tokenizer is not None else 0
    steps = serve_step_ops(serve, device=batch.input_ids.device)
    # The weights are fixed while generating: an orthogonal basis (LoReFT's R) is computed once, not at every
    # step (cached() cuts a decode-time LoReFT's per-step edit on Gemma-3-270M from 1.2 ms to 0.17 ms).
    with torch.no_grad(), parametrize.cached(), edits_while_generating(lm, serve_ops(serve, batch), steps):
        out = lm.hf.generate(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            pad_token_id=pad,
            **generate_kwargs,
        )
    return Generation(out, T)


def serve_step_ops(serve: Sequence[ReftModel | None], *, device=None) -> list[Op]:
    """Ops for one cached decoding step of a batch served by ``serve``: each row's new token (column 0 of a one-token
    input) gets the decode-time interventions of ``serve[b]``; empty when no served model has decode positions.

    Example:
        >>> serve_step_ops([rlm, None])                           # first(1)+last(1): prompt-only, nothing per step
        []
    """
    groups = served_rows([a if a is not None and a.decodes else None for a in serve], device=device)
    return [op for rlm, rows in groups for op in rlm.step_ops(len(serve), rows, device=device)]


def edits_while_generating(lm, prompt_ops: Sequence[Op], step_ops: Sequence[Op] = ()):
    """While the block runs, the model's first forward (the prompt pass) applies ``prompt_ops``; when it ends
    those hooks are removed, and every later forward (a cached step, one new token per row) applies
    ``step_ops``. With neither, no hook is registered at all; with prompt ops only, decoding runs hook-free. The
    engine runs it (:func:`interp.engine.generating`): each op fires exactly once where planned, or it raises
    ``EditNotAppliedError``; a step that feeds more than one token per row raises :class:`ReftError`.

    Example:
        >>> with edits_while_generating(lm, [], []):              # nothing to do: plain generate
        ...     out = lm.hf.generate(input_ids=base, attention_mask=torch.ones_like(base), max_new_tokens=2)
        >>> out.shape
        torch.Size([4, 8])
    """
    return generating(lm, prompt_ops, step_ops, refuse=ReftError)


def generate(
    model,
    prompts,
    *,
    serve: Sequence[ReftModel | None] | None = None,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    **generate_kwargs,
) -> str | list[str]:
    """Decoded continuations (a string for a string prompt, else a list); see :func:`generate_ids`."""
    lm = model.lm if isinstance(model, ReftModel) else model
    g = generate_ids(model, prompts, serve=serve, max_new_tokens=max_new_tokens, do_sample=do_sample, **generate_kwargs)
    texts = lm.tokenizer.batch_decode(g.new_ids, skip_special_tokens=True)
    return texts[0] if isinstance(prompts, str) else texts
