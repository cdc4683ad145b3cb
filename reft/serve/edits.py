"""What a server serves: each named edit (a saved ReFT folder, a ReftModel, a Steering) as vLLM-side ops, and the
cache salt that keeps prefix caching from sharing a prefix between requests with different edits.

Example:
    >>> ops = served_ops(rlm, "LlamaForCausalLM")                  # a ReftModel: one op per placement
    >>> [(op.point.path, op.point.kind, op.pos) for op in ops]
    [('model.layers.1', 'stream_out', first(1)+last())]
    >>> cache_salt("style", ops, [2, 10, 11, 12]) == cache_salt("style", ops, [2, 30, 31, 32])   # same positions
    True
    >>> cache_salt("style", ops, [2, 10, 11, 12]) == cache_salt("style", ops, [2, 10, 11, 12, 13])  # last() moved
    False
    >>> cache_salt(None, [], [2, 10]) is None                      # no edit: shares the cache with every unedited
    True

An edit is given as a ReftModel (:func:`reft.attach`, :func:`reft.load`), a :class:`reft.steering.Steering`
(:func:`reft.steering.steer`), a ``(Site, vector)`` or ``(Site, vector, scale)`` steering pair, or the path of a
saved ReFT folder (loaded with :func:`reft.load` on the Hugging Face copy of the served model). Each placement
becomes a :class:`interp.engine.vllm_edit.ServedOp` whose function is the intervention object itself.

Prefix caching: vLLM reuses the KV cache of a prompt's leading blocks between requests. A cached block holds the
keys and values computed *with* the edit of the request that filled it, so two requests may share it only when
their edits agree on every token up to there. :func:`cache_salt` names the edit and every prompt position it edits
(and, for decode-time edits, where the prompt ends): requests with the same salt compute the same vectors on their
common prefix; any difference (another edit, none, an edited position elsewhere) gives another salt, and vLLM
never shares their blocks.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import torch

from interp.engine.vllm_edit import ServedOp, plan_request, vllm_point
from interp.errors import ServeError
from interp.sites import Site

from ..io import load
from ..model import ReftModel
from ..steering import Steering, steer


def as_edit(name: str, edit, lm_for_folders):
    """``edit`` as a ReftModel or a Steering; ``lm_for_folders()`` gives the Hugging Face model folders load on."""
    if isinstance(edit, (ReftModel, Steering)):
        return edit
    if isinstance(edit, (str, os.PathLike)):
        return load(edit, lm_for_folders())
    if isinstance(edit, tuple) and len(edit) in (2, 3) and isinstance(edit[0], Site):
        return steer(lm_for_folders(), edit[0], torch.as_tensor(edit[1]), *edit[2:])
    raise ServeError(
        f"edit {name!r} is a {type(edit).__name__}; expected a saved ReFT folder, a ReftModel (reft.attach, "
        "reft.load), a Steering (reft.steering.steer) or a (Site, vector[, scale]) pair"
    )


def served_ops(edit, architecture: str) -> list[ServedOp]:
    """The vLLM-side ops of a ReftModel or a Steering on a model of ``architecture`` (its vLLM class name)."""
    if isinstance(edit, Steering):
        point = vllm_point(architecture, edit.site.component, edit.target)
        return [ServedOp(point, edit.site.pos, None, edit.steer)]
    if getattr(edit, "head", None) is not None:
        raise ServeError("this ReftModel has a classifier head; a server generates text: serve one without a head")
    return [
        ServedOp(vllm_point(architecture, pl.site.component, pl.target), pl.site.pos, pl.part, pl.intervention)
        for pl in edit.placements
    ]


def check_model(name: str, edit, config) -> None:
    """Refuse an edit built for another model than the served one (``config``: its Hugging Face config)."""
    spec = edit.lm.spec
    arch = (config.architectures or ["?"])[0]
    have = (arch, config.hidden_size, config.num_hidden_layers)
    want = (spec.architecture, spec.d_model, spec.n_layers)
    if have != want:
        raise ServeError(
            f"edit {name!r} was built for a {want[0]} (d_model {want[1]}, {want[2]} layers), but the served model is "
            f"a {have[0]} (d_model {have[1]}, {have[2]} layers); load or build it on the served model"
        )


def cache_salt(name: str | None, ops: Sequence[ServedOp], prompt_ids: Sequence[int], tokenizer=None) -> str | None:
    """vLLM's ``cache_salt`` for a request served ``name`` (None: no edit, no salt): a hash of the name, every
    prompt position each op edits and, when an op edits generated tokens, the prompt's length."""
    if name is None:
        return None
    plan = plan_request(name, ops, prompt_ids, tokenizer)
    h = hashlib.sha256(f"reft:{name}".encode())
    for at, dec in zip(plan.prompt_at, plan.decodes):
        h.update(at.tobytes())
        h.update(b"|g%d;" % plan.n_prompt if dec else b"|;")
    return h.hexdigest()[:32]


__all__ = ["as_edit", "cache_salt", "check_model", "served_ops"]
