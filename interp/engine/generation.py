"""Ops around ``generate``: prompt-pass edits once, then decode-time edits once per cached decoding step.

Example:
    >>> from interp.sites import resolve
    >>> site = Site("resid_post", 1, last())
    >>> ops = [Op(site, resolve(lm, site), torch.tensor([[5], [5], [5], [5]]), fn=lambda h: h * 0)]
    >>> with generating(lm, ops):                      # the prompt pass edits the last prompt token, then no hook
    ...     out = lm.hf.generate(input_ids=base, attention_mask=torch.ones_like(base), max_new_tokens=2)
    >>> out.shape
    torch.Size([4, 8])

Fire-once: the prompt ops must fire exactly once in all (in the prompt pass) and the step ops exactly once in each
decoding step; anything else (a module the step never reached, one called twice) raises ``EditNotAppliedError``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence

from ..errors import InputError
from .hooks import hooked
from .plan import Op


@contextlib.contextmanager
def generating(lm, prompt_ops: Sequence[Op], step_ops: Sequence[Op] = (), *, refuse: type[Exception] = InputError):
    """While the block runs, the model's first forward (the prompt pass) applies ``prompt_ops``; when it ends
    those hooks are removed, and every later forward (a cached step, one new token per row) applies ``step_ops``
    (which address column 0 of that one-token input). A step that feeds more than one token per row raises
    ``refuse``. With neither, no hook is registered at all; with prompt ops only, decoding runs hook-free."""
    if not prompt_ops and not step_ops:
        yield
        return
    model = lm.hf
    prompt, steps = contextlib.ExitStack(), contextlib.ExitStack()
    handle = None

    def one_token(mod, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        if ids is not None and ids.shape[1] != 1:
            raise refuse(
                f"a decode-time position edits one new token per step, but a decoding step fed {ids.shape[1]} "
                "tokens per row; generate with the KV cache (use_cache=True) and one token per step (no "
                "assisted or chunked decoding)"
            )

    def after_prompt(mod, args, output):
        handle.remove()
        prompt.close()  # the prompt pass is done: its hooks go (each op fired once, or this raises)
        if step_ops:
            steps.enter_context(hooked(lm, step_ops, each_forward=True, when="a decoding step"))
            steps.callback(model.register_forward_pre_hook(one_token, with_kwargs=True).remove)

    prompt.enter_context(hooked(lm, prompt_ops, when="the prompt pass of generate"))
    handle = model.register_forward_hook(after_prompt)
    try:
        yield
    except BaseException:
        handle.remove()  # the block failed: remove every hook without counting (the failure is the news)
        prompt.__exit__(*sys.exc_info())
        steps.__exit__(*sys.exc_info())
        raise
    handle.remove()
    prompt.close()  # no forward at all: the prompt ops never fired, which this reports
    steps.close()


__all__ = ["generating"]
