"""Generate with ReFT interventions on prompt positions; decoding reuses the KV cache and pays nothing.

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

The interventions are engine ops on the hooks backend that fire on the first forward of ``generate`` (the
prompt pass) only, so each decoded token is a plain cached step. Because the edited prompt states live in
the KV cache, this equals recomputing the full sequence with the edit at the prompt positions every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from interp.engine import hooked
from interp.inputs import encode

from .interventions import ReftError
from .model import ReftModel, serve_ops


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
    """A :class:`Generation` from ``lm.hf.generate`` with the interventions on the prompt pass."""
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
    pad = lm.tokenizer.pad_token_id if lm.tokenizer is not None else 0
    with torch.no_grad(), hooked(lm, serve_ops(serve, batch), once=True):
        out = lm.hf.generate(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            pad_token_id=pad,
            **generate_kwargs,
        )
    return Generation(out, T)


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
