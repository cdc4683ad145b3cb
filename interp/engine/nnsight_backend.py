"""The nnsight backend: a plan's ops inside one ``lm.model.trace`` (the default for analysis; raw nnsight mixes in).

Example:
    >>> with lm.model.trace(base):                       # the envoy of a module by its dotted path
    ...     out = envoy_at(lm, "model.layers.1.mlp").output.save()
    >>> out.shape                                        # (B, T, d_model)
    torch.Size([4, 6, 32])
    >>> with lm.model.trace(base):                       # the raw nnsight envoy behind a site (interp.sites.envoy)
    ...     same = interp.sites.envoy(lm, Site("mlp_out", 1)).output.save()
    >>> torch.equal(same, out)
    True

The ops are visited in the model's execution order (nnsight requires it), each group at its module's envoy, with
the same edit code as the hooks backend (:func:`interp.engine.apply_ops`), and counted the same way: a module the
forward never reached (nnsight reports it as out of order) becomes ``EditNotAppliedError`` naming the op.
nnsight specifics (trace, save, order of access) stay in this module (see ``NNSIGHT_NOTES.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .plan import Op, apply_ops, group_ops
from .probe import execution_order
from .tally import Tally

_RESERVED = ("input", "inputs", "output", "source")  # names nnsight serves itself; it renames such modules E_<name>


def envoy_at(lm, path: str):
    """The nnsight envoy of the module at a dotted ``path`` of ``lm.hf`` (use inside ``lm.model.trace``)."""
    env = lm.model
    for part in path.split("."):
        if part in _RESERVED:
            part = "E_" + part
        env = env[int(part)] if part.isdigit() else getattr(env, part)
    return env


def _save(t):
    return t.save()  # nnsight exports only saved values from a trace


def _missed(e: BaseException) -> bool:
    """nnsight's report that a value was asked of a module the forward never reached (or had run past)."""
    return type(e).__name__ == "OutOfOrderError" and type(e).__module__.startswith("nnsight")


def run_nnsight(lm, ops: Sequence[Op], kwargs: dict, *, stop: bool, own: bool):
    """One traced forward with ``ops``: (reads in the order of the ops, the model's logits when ``own``)."""
    groups = group_ops(ops, lambda: execution_order(lm))
    tally = Tally(ops)
    logits = None
    reads: dict[int, torch.Tensor] = {}
    try:
        with lm.model.trace(**kwargs) as tracer:
            for (path, io), group in groups:
                env = envoy_at(lm, path)
                value = env.input if io == "input" else env.output
                packed = isinstance(value, tuple)
                new = apply_ops(value[0] if packed else value, group, reads, keep=_save, tally=tally)
                if new is not None:
                    new = (new, *value[1:]) if packed else new
                    if io == "input":
                        env.input = new
                    else:
                        env.output = new
            if own:
                logits = lm.model.output.logits.save()
            elif stop:
                tracer.stop()
    except Exception as e:
        unfired = [i for _, group in groups for i, _ in group if tally.fired[i] == 0]  # in execution order
        if _missed(e) and unfired:
            raise tally.error(unfired[0]) from e
        raise
    tally.check()
    return [reads.get(i) for i in range(len(ops))], logits


__all__ = ["envoy_at", "run_nnsight"]
