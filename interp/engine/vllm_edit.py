"""Edits inside vLLM's forward: each request's served edit, at its own tokens of vLLM's flattened batch.

Example:
    >>> from interp.arch import Target
    >>> vllm_point("Gemma3ForCausalLM", "resid_post", Target("model.layers.3", "output", None, 4, 640))
    Point(path='model.layers.3', kind='stream_out')
    >>> vllm_point("LlamaForCausalLM", "mlp_out", Target("model.layers.1.mlp", "output", None, 4, 32))
    Point(path='model.layers.1.mlp', kind='out')
    >>> vllm_point("GPT2LMHeadModel", "resid_post", Target("transformer.h.0", "output", None, 4, 32))
    Traceback (most recent call last):
    interp.errors.ServeError: cannot serve edits on a GPT2LMHeadModel in vLLM: supported architectures are ...
    >>> token_spans(computed=[2, 9], query_start_loc=[0, 5, 6])  # a 5-token prefill chunk, then one decoding token
    [(2, 7, -2), (9, 10, -4)]

vLLM's V1 engine runs one forward per scheduler step over a flat batch of tokens, ``(num_tokens, d_model)``: the
prefill chunks of some requests and the new token of every decoding request, back to back, without padding. The
model runner knows, for that step, the requests in batch order (``input_batch.req_ids``), where each one's tokens
start in the flat batch (``query_start_loc``) and how many of its tokens were computed before the step
(``input_batch.num_computed_tokens_cpu``): so flat token ``t`` of request ``i`` is its token number
``computed[i] + t - start[i]``. A token number below the prompt length is a prompt position, above it a generated
token. :class:`VllmEditor` reads this once per step (a pre-hook on the model), looks up each request's served edit
by the name in its sampling parameters (``extra_args["reft"]``), and at each edited module applies the edit's
function (a ReFT intervention, a steering vector: the objects themselves, :mod:`interp.subspace`'s edit) to the rows
it selects. Token numbers, not steps, decide: a prompt split over several steps (chunked prefill) is edited at the
positions each chunk holds, a preempted request recomputed from scratch is edited again the same way, and a
prompt-only edit costs a decoding step nothing but the look-up that finds nothing to do.

Where the edit goes (:func:`vllm_point`): vLLM's decoder layers return ``(hidden, residual)`` and add them inside
the next layer's norm, so the residual stream is their sum. An edit of ``resid_post`` (a layer's output) or
``resid_pre`` (a layer's input) computes the sum at the edited rows, edits it, and hands on ``(edited, 0)`` there:
the next add gives the edited vector exactly. ``resid_mid`` is, as in interp, the input of the norm before the MLP
(Hugging Face adds the residual before that norm and a hook there edits what the MLP reads, not the stream): the
fused add-norm's output is re-normalised at the edited rows and its residual left as it is. ``attn_out`` and
``mlp_out`` are plain outputs. Heads, q/k/v, attention patterns, MLP neurons and modules by path
are refused (:class:`interp.errors.ServeError`), as is any architecture but those in :data:`SUPPORTED`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..arch import Target, submodule
from ..errors import EditNotAppliedError, ServeError
from ..position_base import Position

SUPPORTED = ("Gemma3ForCausalLM", "LlamaForCausalLM")  # vLLM classes whose layer tree and residual flow are mapped
PRUNE_AT = 4096  # remembered requests before those that left the engine are forgotten
KINDS = {"resid_post": "stream_out", "resid_pre": "layer_in", "resid_mid": "norm_in", "attn_out": "out",
         "mlp_out": "out"}  # fmt: skip


@dataclass(frozen=True)
class Point:
    """Where an edit happens in vLLM's module tree: a module path and how its vectors are read there
    (``stream_out``: a layer's ``(hidden, residual)`` output; ``layer_in``: the same pair as a layer's input;
    ``norm_in``: the input of a fused add-norm, read from its ``(normed, sum)`` output; ``out``: a plain output)."""

    path: str
    kind: str


@dataclass
class ServedOp:
    """One edit of a served intervention: at ``point``, on the tokens of ``pos`` (part ``part`` of it, or all of
    it when None), ``fn`` maps the selected ``(1, k, d)`` vectors to new ones."""

    point: Point
    pos: Position
    part: int | None
    fn: Callable[[torch.Tensor], torch.Tensor]

    @property
    def decodes(self) -> bool:
        """True when this op also edits every generated token."""
        j = self.pos.decode_part
        return j is not None and self.part in (None, j)


def check_architecture(architecture: str) -> None:
    """Refuse an architecture whose vLLM module tree and residual flow are not mapped here."""
    if architecture not in SUPPORTED:
        raise ServeError(
            f"cannot serve edits on a {architecture} in vLLM: supported architectures are {', '.join(SUPPORTED)} "
            "(their decoder layers and residual flow are mapped in interp.engine.vllm_edit); serve this model "
            "with reft.generate on Hugging Face instead"
        )


def vllm_point(architecture: str, component: str, target: Target) -> Point:
    """Where a site resolved on the Hugging Face model (``target``) lives in vLLM's module tree."""
    check_architecture(architecture)
    kind = KINDS.get(component)
    if kind is None or target.head is not None or target.cols is not None or target.pattern:
        raise ServeError(
            f"cannot serve an edit at component {component!r} in vLLM: served components are "
            f"{', '.join(KINDS)} (whole vectors of the residual stream and the blocks' outputs); heads, q/k/v, "
            "attention patterns, MLP neurons and modules by path run with reft.generate on Hugging Face"
        )
    return Point(target.path, kind)


@dataclass
class RequestPlan:
    """What one request's edit does to its tokens: per op, the sorted prompt positions it edits, and whether it
    also edits generated tokens (those at positions >= ``n_prompt``)."""

    name: str
    n_prompt: int
    prompt_at: list[np.ndarray]
    decodes: list[bool]
    prompt_end: int = field(init=False)  # one past the last edited prompt position

    def __post_init__(self):
        self.prompt_end = max((int(a[-1]) + 1 for a in self.prompt_at if len(a)), default=0)
        self.any_decodes = any(self.decodes)


def plan_request(name: str, ops: Sequence[ServedOp], prompt_ids: Sequence[int], tokenizer=None) -> RequestPlan:
    """The positions ``ops`` edit in one prompt (:meth:`Position.split`, the rule every other path uses).

    Example:
        >>> from interp.positions import first, last, generated
        >>> op = ServedOp(Point("model.layers.0", "stream_out"), first(1) + last(1) + generated(), None, None)
        >>> p = plan_request("a", [op], [2, 10, 11, 12])
        >>> [a.tolist() for a in p.prompt_at], p.decodes, p.prompt_end
        ([[0, 3]], [True], 4)
    """
    n = len(prompt_ids)
    ids = torch.tensor(list(prompt_ids))
    split: dict[int, list[list[int]]] = {}
    prompt_at = []
    for op in ops:
        key = id(op.pos)
        if key not in split:
            split[key] = op.pos.split(n, ids, tokenizer)
        parts = split[key]
        chosen = [i for part in parts for i in part] if op.part is None else parts[op.part]
        prompt_at.append(np.array(sorted(set(chosen)), dtype=np.int64))
    return RequestPlan(name, n, prompt_at, [op.decodes for op in ops])


def token_spans(computed: Sequence[int], query_start_loc: Sequence[int]) -> list[tuple[int, int, int]]:
    """``(first, end, shift)`` per request of a step: it computes its token numbers ``first <= p < end``, token
    number ``p`` sitting at row ``p + shift`` of the flat batch; from the tokens each request had computed before
    the step and where its tokens start in the flat batch (``query_start_loc``, one more entry than requests)."""
    qsl = list(query_start_loc)
    return [(int(c), int(c) + int(b - a), int(a) - int(c)) for c, a, b in zip(computed, qsl[:-1], qsl[1:])]


class VllmEditor:
    """Served edits on a vLLM model: ``edits`` ({name: [ServedOp]}) applied per request, the name read from the
    request's ``sampling_params.extra_args[key]``; :meth:`install` registers the hooks, :meth:`remove` takes them
    off. ``tally[req_id]`` counts the (op, token) edits applied to prompt and generated tokens of each request,
    counted by the edited module's hook when it runs (planned edits whose hook never fires are not counted);
    ``forwards`` the forwards that carried requests and those that edited any token (a batch of prompt-only edits
    edits in its prefill steps only)."""

    def __init__(self, model: torch.nn.Module, runner, edits: dict[str, list[ServedOp]], *, tokenizer=None,
                 key: str = "reft"):  # fmt: skip
        self.model, self.runner, self.edits, self.tokenizer, self.key = model, runner, edits, tokenizer, key
        self.plans: dict[str, RequestPlan | None] = {}  # by vLLM's internal request id
        self.tally: dict[str, list[int]] = {}
        self.tags: dict[str, str] = {}  # the caller's tag (extra_args[key + "_id"]) -> internal request id
        self.step: dict[Point, list[tuple[Callable, torch.Tensor]]] = {}
        self.pending: dict[Point, list[tuple[str, int, int]]] = {}  # this step's (request, prompt, generated) counts
        self.handles: list = []
        self.forwards = [0, 0]  # forwards seen with requests, and those that edited something
        self.modules = {}
        for ops in edits.values():
            for op in ops:
                if op.point not in self.modules:
                    self.modules[op.point] = _module(model, op.point)

    def install(self) -> VllmEditor:
        """Hook the model: once per forward, the step's plan; at each edited module, its edits."""
        self.handles.append(self.model.register_forward_pre_hook(self._begin, with_kwargs=True))
        for point, module in self.modules.items():
            if point.kind != "layer_in":
                self.handles.append(module.register_forward_hook(self._output_hook(point)))
            else:
                self.handles.append(module.register_forward_pre_hook(self._input_hook(point), with_kwargs=True))
        return self

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    # ---- per step: which rows of the flat batch each op edits

    def _plan(self, req_id: str) -> RequestPlan | None:
        if req_id in self.plans:
            return self.plans[req_id]
        state = self.runner.requests[req_id]
        extra = getattr(state.sampling_params, "extra_args", None) or {}
        name = extra.get(self.key)
        tag = extra.get(self.key + "_id")
        if tag is not None:
            self.tags[tag] = req_id
        plan = None
        if name is not None:
            if name not in self.edits:
                raise ServeError(f"request {req_id} asks for edit {name!r}; served edits: {sorted(self.edits)}")
            if state.prompt_token_ids is None:
                raise ServeError(f"request {req_id}: an edit needs the prompt's token ids (prompt embeddings given)")
            plan = plan_request(name, self.edits[name], state.prompt_token_ids, self.tokenizer)
            self.tally[req_id] = [0, 0]
        self.plans[req_id] = plan
        return plan

    def _begin(self, module, args, kwargs):
        self.step, self.pending = {}, {}
        batch = self.runner.input_batch
        n = batch.num_reqs
        if not n:
            return
        self.forwards[0] += 1
        req_ids = batch.req_ids[:n]
        if len(self.plans) > PRUNE_AT:  # requests nobody checks (reft serve): forget those that left the engine
            keep = set(self.runner.requests) | set(self.tags.values())  # tagged: a Server checks them when it returns
            self.plans = {r: p for r, p in self.plans.items() if r in keep}
            self.tally = {r: c for r, c in self.tally.items() if r in keep}
        plans = [self._plan(r) for r in req_ids]
        if all(p is None for p in plans):
            return
        qsl = self.runner.query_start_loc.cpu[: n + 1].tolist()
        computed = batch.num_computed_tokens_cpu[:n].tolist()
        rows: dict[tuple[str, int], list[np.ndarray]] = {}
        for i, (first, end, shift) in enumerate(token_spans(computed, qsl)):
            plan = plans[i]
            if plan is None or (first >= plan.prompt_end and not plan.any_decodes):
                continue  # no edit, or a prompt-only edit past its last edited token: nothing to do
            for j, at in enumerate(plan.prompt_at):
                sel = at[np.searchsorted(at, first) : np.searchsorted(at, end)]
                n_gen = 0
                if plan.decodes[j] and end > plan.n_prompt:
                    gen = np.arange(max(first, plan.n_prompt), end)
                    n_gen, sel = len(gen), np.concatenate([sel, gen])
                if len(sel):
                    rows.setdefault((plan.name, j), []).append(sel + shift)
                    point = self.edits[plan.name][j].point
                    self.pending.setdefault(point, []).append((req_ids[i], len(sel) - n_gen, n_gen))
        for (name, j), parts in rows.items():
            op = self.edits[name][j]
            self.step.setdefault(op.point, []).append((op.fn, torch.from_numpy(np.concatenate(parts))))
        self.forwards[1] += bool(self.step)

    # ---- at each edited module

    def _apply(self, point: Point, hidden: torch.Tensor, residual: torch.Tensor | None):
        for fn, idx in self.step[point]:
            idx = idx.to(hidden.device)
            old = hidden[idx] if residual is None else hidden[idx] + residual[idx]
            new = fn(old[None])[0].to(hidden.dtype)  # (1, k, d), as the engine's ops see a batch
            hidden = hidden.index_put((idx,), new)
            if residual is not None:
                residual = residual.index_put((idx,), torch.zeros_like(new))
        self._applied(point)
        return hidden, residual

    def _applied(self, point: Point) -> None:
        """Count the edits made at ``point`` this step into each request's tally (what :meth:`check` reads)."""
        for req_id, n_prompt, n_gen in self.pending.pop(point, ()):
            count = self.tally[req_id]
            count[0] += n_prompt
            count[1] += n_gen

    def _output_hook(self, point: Point):
        def hook(module, args, output):
            if point not in self.step:
                return None
            if point.kind == "out":
                return self._apply(point, output, None)[0]
            if point.kind == "norm_in":
                return self._renormed(point, module, *output)
            hidden, residual = output
            return self._apply(point, hidden, residual)

        return hook

    def _renormed(self, point: Point, norm: torch.nn.Module, normed: torch.Tensor, stream: torch.Tensor):
        """A fused add-norm's ``(norm(x + r), x + r)`` with the edit on its input at the edited rows, as a hook on
        the Hugging Face norm's input does: the norm (and the MLP after it) reads the edited vector, the residual
        stream carries on unedited."""
        for fn, idx in self.step[point]:
            idx = idx.to(stream.device)
            new = fn(stream[idx][None])[0].to(stream.dtype)
            normed = normed.index_put((idx,), norm.forward(new).to(normed.dtype))  # forward: no hooks re-entered
        self._applied(point)
        return normed, stream

    def _input_hook(self, point: Point):
        def hook(module, args, kwargs):  # a decoder layer's (positions, hidden, residual)
            if point not in self.step:
                return None
            args = list(args)
            if len(args) > 2:
                args[1], args[2] = self._apply(point, args[1], args[2])
            else:
                residual = kwargs.get("residual")
                args[1], residual = self._apply(point, args[1], residual)
                if "residual" in kwargs:
                    kwargs = {**kwargs, "residual": residual}
            return tuple(args), kwargs

        return hook

    # ---- after a request: were its edits applied?

    def check(self, tag: str, name: str | None, n_cached: int, n_generated: int) -> None:
        """Refuse a finished request served ``name`` whose edit was not applied where planned: every prompt position
        at or after its ``n_cached`` prefix-cached tokens, and (decode-time) every generated token fed back
        (``n_generated - 1``), at least once. ``tag`` is the request's ``extra_args[key + "_id"]`` (vLLM renames
        requests inside the engine). Forgets the request."""
        req_id = self.tags.pop(tag, None)
        if name is not None and req_id not in self.plans:
            raise EditNotAppliedError(
                f"request {tag} (edit {name!r}) never reached vLLM's forward under the hooks: no edit was applied"
            )
        plan = self.plans.pop(req_id, None)
        count = self.tally.pop(req_id, None)
        if plan is None:
            return
        want_prompt = sum(int((at >= n_cached).sum()) for at in plan.prompt_at)
        want_gen = sum(max(n_generated - 1, 0) for d in plan.decodes if d)
        if count[0] < want_prompt or count[1] < want_gen:
            raise EditNotAppliedError(
                f"request {req_id} (edit {plan.name!r}): {count[0]} of {want_prompt} prompt-token edits and "
                f"{count[1]} of {want_gen} generated-token edits were applied inside vLLM's forward; the hooks "
                "did not fire (a compiled or CUDA-graph forward, or another model runner)"
            )


def _module(model: torch.nn.Module, point: Point) -> torch.nn.Module:
    try:
        return submodule(model, point.path)
    except Exception:
        raise ServeError(
            f"vLLM's {type(model).__name__} has no module {point.path!r} for this edit; its layers look like "
            f"{next((n for n, _ in model.named_modules() if n.count('.') == 2), '?')!r}"
        ) from None


__all__ = [
    "KINDS",
    "SUPPORTED",
    "Point",
    "RequestPlan",
    "ServedOp",
    "VllmEditor",
    "check_architecture",
    "plan_request",
    "token_spans",
    "vllm_point",
]
