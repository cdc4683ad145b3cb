"""The one engine: the only code that touches a model's internals (hooks, traces, module stand-ins).

Example:
    >>> from interp.sites import resolve
    >>> batch = encode(lm, torch.tensor([[5, 6, 7], [8, 9, 10]]))
    >>> site = Site("mlp_out", 1, last())
    >>> op = Op(site, resolve(lm, site), site.pos.resolve(batch.attention_mask), fn=lambda h: h * 0)
    >>> execute(lm, batch, [op], logits_at=last().resolve(batch.attention_mask)).logits.shape   # (B, k, V)
    torch.Size([2, 1, 97])

Every capability (DII, collection, DAS, patching grids, ReFT training and generation) builds a *plan*, a list of
:class:`Op` (read or edit a site at some rows and positions), and calls :func:`execute` (or :func:`hooked` and
:func:`generating` around ``generate``). Two backends run the same plan with the same edit code
(:func:`apply_ops`): ``"nnsight"`` (a trace; the default for analysis, and what raw nnsight can be mixed with) and
``"hooks"`` (plain module hooks; the hot paths), chosen for a block of calls with ``with options(backend="hooks"):``
(:mod:`~interp.engine.options`; :func:`configure` sets the process-wide default). Work that is never read is not
done: the forward stops after the last op, or, when logits are asked for, after the final norm at the positions
asked for, and :func:`readout`
applies the architecture's unembedding (and Gemma's final softcapping) there alone, over a restricted vocabulary
when given. ``options(full=True)`` is the reference a plain implementation pays: nothing stops early and logits are
computed at every position. A plan that touches ``attn_pattern`` runs under the eager attention that exposes the
probabilities (:func:`pattern_attention`), and the model's own attention implementation is restored after. Under a
device map (accelerate) each edit runs on the device of its site's module, whatever dtype and device its
intervention has (it casts its input to its own and the result comes back in the model's dtype, where the
activation lives); an offloaded unembedding is loaded for the readout, and logits come back on the inputs' device.

Every edit fires exactly once, or the run fails: each op is counted as it fires (:class:`Tally`), and an op that
fired zero times (a module the forward never reached, a site the architecture routes around, a stand-in layer that
replaced it) or more often than planned (a module run twice, an op hooked twice, a generation step that applied
it again) raises :class:`interp.errors.EditNotAppliedError` naming the op and its site.

Modules: :mod:`~interp.engine.plan` (Batch, Op, the edit), :mod:`~interp.engine.tally` (fire-once accounting),
:mod:`~interp.engine.runner` (:func:`execute`), :mod:`~interp.engine.hooks` and
:mod:`~interp.engine.nnsight_backend` (the two backends), :mod:`~interp.engine.generation` (ops around
``generate``), :mod:`~interp.engine.standin` (stand-in modules: prefix replay, cached patching cells, the last
MLP narrowed), :mod:`~interp.engine.attention` (attention patterns), :mod:`~interp.engine.probe` (one recorded
forward: module shapes and execution order), :mod:`~interp.engine.unembed` (logits from final hidden states),
:mod:`~interp.engine.edges` and :mod:`~interp.engine.edge_mix` (the edge-patched forward of :mod:`interp.circuits`),
:mod:`~interp.engine.vllm_edit` (the same edits inside vLLM's forward, for :mod:`reft.serve`; imports vLLM lazily).
"""

from __future__ import annotations

from .attention import (
    PATTERN,
    PATTERN_ATTENTION,
    QUERY,
    PatternPoint,
    QueryPoint,
    attach_patterns,
    attach_queries,
    pattern_attention,
    query_target,
    uses_patterns,
)
from .generation import generating
from .hooks import contiguous_unembedding, forward, hooked, refuse_unfireable
from .nnsight_backend import envoy_at, run_nnsight
from .options import Options, configure, current, legacy, options
from .plan import Batch, Op, Outcome, Stop, apply_ops, edit, group_ops, select
from .probe import PROBE, Recording, execution_order, module_shapes, recorded, recording
from .runner import BACKENDS, execute
from .standin import Narrowed, StandIn, blocked, is_swapped, layer_stand_ins, narrowed_mlp, swapped
from .tally import Tally, describe
from .unembed import final_norm_target, onloaded, readout

__all__ = [
    "BACKENDS",
    "Batch",
    "Narrowed",
    "Op",
    "Options",
    "Outcome",
    "PATTERN",
    "PATTERN_ATTENTION",
    "PROBE",
    "PatternPoint",
    "QUERY",
    "QueryPoint",
    "Recording",
    "StandIn",
    "Stop",
    "Tally",
    "apply_ops",
    "attach_patterns",
    "attach_queries",
    "blocked",
    "configure",
    "contiguous_unembedding",
    "current",
    "describe",
    "edit",
    "envoy_at",
    "execute",
    "execution_order",
    "final_norm_target",
    "forward",
    "generating",
    "group_ops",
    "hooked",
    "is_swapped",
    "layer_stand_ins",
    "legacy",
    "module_shapes",
    "narrowed_mlp",
    "onloaded",
    "options",
    "pattern_attention",
    "query_target",
    "readout",
    "recorded",
    "recording",
    "refuse_unfireable",
    "run_nnsight",
    "select",
    "swapped",
    "uses_patterns",
]
