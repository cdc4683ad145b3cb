"""Generate with ReFT interventions on prompt positions only; decoding reuses the KV cache and pays nothing.

Example:
    >>> generate(rlm, "Who are you?", max_new_tokens=32)
    ' Arr, a humble parrot of the seas ...'
    >>> generate(rlm_a, ["Hi", "Hello", "Hey"], serve=[rlm_a, None, rlm_b])   # a different one per row

The interventions sit in forward hooks that fire on the first forward of ``generate`` (the prompt pass) and
are then disarmed, so each decoded token is a plain cached step. Because the edited prompt states live in
the KV cache, this equals recomputing the full sequence with the edit at the prompt positions every step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from interp.inputs import encode

from .interventions import ReftError
from .model import ReftModel, applied


def generate_ids(
    model,
    prompts,
    *,
    serve: Sequence[ReftModel | None] | None = None,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    **generate_kwargs,
) -> tuple[torch.Tensor, int]:
    """Token ids ``(B, T + new)`` from ``lm.hf.generate`` with the interventions on the prompt pass, and T."""
    lm = model.lm if isinstance(model, ReftModel) else model
    single = isinstance(prompts, str)
    batch = encode(lm, [prompts] if single else prompts, padding_side="left")
    B, T = batch.input_ids.shape
    lengths = batch.attention_mask.sum(1).tolist()
    if min(lengths) == 0:
        raise ReftError("an empty prompt cannot be intervened on; give at least one token per prompt")
    starts = [T - n for n in lengths]
    if serve is None:
        serve = [model if isinstance(model, ReftModel) else None] * B
    serve = list(serve)
    if len(serve) != B:
        raise ReftError(f"serve= has {len(serve)} entries for {B} prompts; give one ReftModel or None per prompt")
    pad = lm.tokenizer.pad_token_id if lm.tokenizer is not None else 0
    with torch.no_grad(), applied(serve, batch, starts, lengths, once=True):
        out = lm.hf.generate(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            pad_token_id=pad,
            **generate_kwargs,
        )
    return out, T


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
    out, T = generate_ids(
        model, prompts, serve=serve, max_new_tokens=max_new_tokens, do_sample=do_sample, **generate_kwargs
    )
    texts = lm.tokenizer.batch_decode(out[:, T:], skip_special_tokens=True)
    return texts[0] if isinstance(prompts, str) else texts
