"""The one engine: run a plan of ops (read or edit a site at some rows and positions) in one forward pass.

Example:
    >>> from interp.sites import resolve
    >>> lm = interp.LM(tiny_model)                                    # any model in the site table
    >>> batch = encode(lm, torch.tensor([[5, 6, 7], [8, 9, 10]]))
    >>> site = Site("resid_post", 0, last())
    >>> op = Op(site, resolve(lm, site), site.pos.resolve(batch.attention_mask), read=True)
    >>> out = execute(lm, batch, [op], logits_at=last().resolve(batch.attention_mask), backend="hooks")
    >>> out.reads[0].shape, out.logits.shape                          # (B, k, d), (B, k, V)
    (torch.Size([2, 1, 32]), torch.Size([2, 1, 97]))

Every capability (DII, collection, DAS, ReFT training and generation) builds a list of :class:`Op` and calls
:func:`execute` (or :func:`hooked` around ``generate``). Two backends run the same plan with the same edit
code (:func:`_apply`): ``"nnsight"`` (a trace; the default for analysis, and what raw nnsight can be mixed
with) and ``"hooks"`` (plain module hooks; the hot paths). Work that is never read is not done: the forward
stops after the last op, or, when logits are asked for, after the final norm at the positions asked for, and
:func:`readout` applies the architecture's unembedding (and Gemma's final softcapping) there alone, over a
restricted vocabulary when given. ``full=True`` is the reference a plain implementation pays: nothing
stops early and logits are computed at every position. A plan that touches ``attn_pattern`` runs under the eager
attention that exposes the probabilities (:func:`interp.sites.pattern_attention`), and the model's own attention
implementation is restored after. Under a device map (accelerate) each edit runs on the device of its site's module,
whatever dtype and device its intervention has (it casts its input to its own and the result comes back in the
model's dtype, where the activation lives); an offloaded unembedding is loaded for the readout, and logits come
back on the inputs' device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from . import sites as _sites
from .models import onloaded

BACKENDS = ("nnsight", "hooks")


@dataclass
class Batch:
    """Token ids of a padded batch (left or right), with its attention mask and position ids."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    @property
    def position_ids(self) -> torch.Tensor:
        return (self.attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    def __len__(self):
        return self.input_ids.shape[0]

    def forward_kwargs(self) -> dict:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "position_ids": self.position_ids}


@dataclass
class Op:
    """Read and/or edit one site: ``index`` (n, k) columns in batch ``rows`` (n,) (None: every row, in order).

    ``fn`` maps the selected (n, k, w) vectors to new ones; slots where ``valid`` (n, k) is False are never
    written. ``read=True`` returns the selected vectors after the edit.
    """

    site: _sites.Site | None
    target: _sites.Target
    index: torch.Tensor
    fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    read: bool = False
    valid: torch.Tensor | None = None
    rows: torch.Tensor | None = None


@dataclass
class Outcome:
    """What a run returns: ``reads`` in the order of the ops (None where an op only edits), and ``logits``."""

    reads: list[torch.Tensor | None] = field(default_factory=list)
    logits: torch.Tensor | None = None


class _Stop(Exception):
    """Raised by the last hook a run needs: nothing after it is computed."""


def execute(
    lm,
    batch: Batch,
    ops: Sequence[Op] = (),
    *,
    logits_at: torch.Tensor | None = None,
    vocab: torch.Tensor | None = None,
    head: torch.nn.Module | None = None,
    backend: str = "nnsight",
    full: bool = False,
    hf: torch.nn.Module | None = None,
) -> Outcome:
    """One forward of ``batch`` with ``ops``. Logits (B, k, V) only at the (B, k) columns ``logits_at``.

    Args:
        vocab: token ids: logits over these words only (B, k, len(vocab)).
        head: a linear head over the final hidden states instead of the unembedding (B, k, n_labels).
        backend: ``"nnsight"`` or ``"hooks"``.
        full: the unoptimised reference: no early stop, logits at every position, then ``logits_at`` read.
        hf: run this module instead of ``lm.hf`` (same architecture; e.g. a LoRA copy; hooks backend only).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    if hf is not None and backend != "hooks":
        raise ValueError("hf= runs another module and needs backend='hooks'")
    if logits_at is None and not ops:
        raise ValueError("a run with no reads, writes or logits would compute nothing")
    ops = list(ops)
    n_user = len(ops)
    table = lm.spec.architecture in _sites.ARCHITECTURES
    if full and logits_at is None:
        logits_at = torch.zeros(len(batch), 1, dtype=torch.long, device=batch.input_ids.device)
    wants = logits_at is not None
    if wants and table:  # logits from the final norm's output at the columns read, never from lm_head
        T = batch.input_ids.shape[1]
        cols = torch.arange(T, device=batch.input_ids.device).expand(len(batch), T) if full else logits_at
        ops.append(Op(None, final_norm_target(lm), cols, read=True))
    kwargs = batch.forward_kwargs()
    own = wants and not table  # a model outside the table: its own logits, only at the columns read
    if own:
        cols = torch.unique(logits_at)
        kwargs["logits_to_keep"] = cols
    runner = _run_hooks if backend == "hooks" else _run_nnsight
    with _sites.pattern_attention(hf or lm.hf, on=_patterns(ops)):  # attn_pattern needs eager attention
        reads, model_logits = runner(lm, hf or lm.hf, kwargs, ops, stop=not full, own=own)
    _check_patterns(lm, ops, reads)
    logits = None
    if own:
        where = torch.searchsorted(cols, logits_at.to(cols.device)).to(model_logits.device)
        logits = model_logits[torch.arange(len(batch), device=where.device)[:, None], where]
        logits = logits if vocab is None else logits[..., vocab]
    elif wants:
        hidden = reads[-1]
        if full:
            hidden = readout(lm, hidden, vocab, head, hf=hf)  # (B, T, V): every position's logits
            rows = torch.arange(len(batch), device=hidden.device)[:, None]
            logits = hidden[rows, logits_at.to(hidden.device)]
        else:
            logits = readout(lm, hidden, vocab, head, hf=hf)
    if logits is not None:  # on the inputs' device, as the labels a loss compares them with (device maps)
        logits = logits.to(batch.input_ids.device)
    return Outcome(reads[:n_user], logits)


def final_norm_target(lm) -> _sites.Target:
    """Where the final hidden states are read: the output of the architecture's final norm."""
    s = lm.spec
    return _sites.Target(_sites.architecture(lm).final_norm, "output", None, s.n_heads, s.d_model)


def readout(lm, hidden: torch.Tensor, vocab=None, head=None, *, hf=None) -> torch.Tensor:
    """Logits from final-normed hidden states (..., d) -> (..., V): the unembedding, then final softcapping.

    With ``vocab`` only those rows of the unembedding are used; a ``head`` replaces it. The input is made
    contiguous and flattened, so a frozen unembedding takes the plain matrix-multiply path.
    """
    if head is not None:
        return head(hidden.to(head.weight.device, head.weight.dtype))
    model = hf or lm.hf
    unembed = model.get_submodule(_sites.architecture(lm).unembed)
    with onloaded(unembed):  # an offloaded unembedding (accelerate) holds its weights only while in use
        weight, bias = unembed.weight, getattr(unembed, "bias", None)
        if vocab is not None:
            rows = vocab.to(weight.device)
            weight, bias = weight[rows], (bias[rows] if bias is not None else None)
        flat = hidden.reshape(-1, hidden.shape[-1]).contiguous().to(weight.device, weight.dtype)  # (N, d)
        logits = F.linear(flat, weight, bias).reshape(*hidden.shape[:-1], weight.shape[0])  # (N, V) -> (..., V)
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def _patterns(ops: Sequence[Op]) -> bool:
    return any(op.target.pattern for op in ops)


def _check_patterns(lm, ops: Sequence[Op], reads: list) -> None:
    """A model whose attention never called the pattern point gave no probabilities: say so, never return None."""
    for op, got in zip(ops, reads):
        if op.target.pattern and op.read and got is None:
            raise _sites.SiteError(
                f"{op.site!r}: {lm.spec.architecture}'s attention did not pass its probabilities through "
                f"{op.target.path!r}; its attention layer does not dispatch through transformers' AttentionInterface"
            )


# ---- the edit, shared by both backends --------------------------------------------------------------------


def _rows(op: Op, B: int, device) -> torch.Tensor:
    rows = torch.arange(B, device=device) if op.rows is None else op.rows.to(device)
    return rows[:, None].expand(-1, op.index.shape[1])  # (n, k)


def _cols(t: _sites.Target, device) -> torch.Tensor:
    return torch.cat([torch.arange(a, b, device=device) for a, b in t.cols])  # (w,)


def _select(h: torch.Tensor, op: Op) -> torch.Tensor:
    """The (n, k, w) vectors an op addresses in ``h`` (B, T, D); for attention probabilities ``h`` (B, H, T, T)
    the query rows (n, k, H, T), or one head's (n, k, T)."""
    r, idx = _rows(op, h.shape[0], h.device), op.index.to(h.device)
    t = op.target
    if t.pattern:
        return h[r, :, idx] if t.head is None else h[r, t.head, idx]
    if t.cols is not None:
        return h[r, idx][..., _cols(t, h.device)]
    if t.head is None:
        return h[r, idx]
    B, T, D = h.shape
    return h.reshape(B, T, t.n_heads, D // t.n_heads)[r, idx, t.head]


def _edit(h: torch.Tensor, op: Op) -> torch.Tensor:
    """``h`` (B, T, D) with the op's vectors replaced by ``op.fn`` of them, out of place (autograd-safe)."""
    r, idx = _rows(op, h.shape[0], h.device), op.index.to(h.device)
    t = op.target
    old = _select(h, op)
    if t.pattern:
        new = _pattern_edit(op, old)
    else:
        new = op.fn(old).to(h.device, h.dtype)  # (n, k, w), back in the model's dtype, where h lives
    if op.valid is not None:
        keep = op.valid.to(h.device)
        r, idx, new = r[keep], idx[keep], new[keep]
    if t.pattern:
        if t.head is not None:  # (B, H, T, T)[rows, head, query] = (n, k, T)
            return h.index_put((r, torch.full_like(idx, t.head), idx), new)
        return h.transpose(1, 2).index_put((r, idx), new).transpose(1, 2)  # (B, T, H, T)[rows, query] = (n, k, H, T)
    if t.cols is not None:
        cols = _cols(t, h.device)
        return h.index_put((r[..., None], idx[..., None], cols), new)  # broadcast (n, k, 1), (n, k, 1), (w,)
    if t.head is None:
        return h.index_put((r, idx), new)
    B, T, D = h.shape
    h4 = h.reshape(B, T, t.n_heads, D // t.n_heads)
    return h4.index_put((r, idx, torch.full_like(idx, t.head)), new).reshape(B, T, D)


def _pattern_edit(op: Op, old: torch.Tensor) -> torch.Tensor:
    """The edited probabilities; an edit that gives another shape (a source of another length) is refused."""
    T = old.shape[-1]
    hint = (
        f"{op.site!r}: attention patterns are edited over this batch's {T} key columns, and copied key column "
        "by key column, so base and source must be prompts of the same length (and padding)"
    )
    try:
        new = op.fn(old)
    except RuntimeError as e:
        raise _sites.SiteError(f"{hint}; the edit failed on query rows of shape {tuple(old.shape)}: {e}") from None
    if new.shape != old.shape:
        raise _sites.SiteError(f"{hint}; the edit gave shape {tuple(new.shape)}, expected {tuple(old.shape)}")
    return new.to(old.device, old.dtype)


def _apply(h: torch.Tensor, group: list[tuple[int, Op]], reads: dict, keep=lambda t: t):
    """Run a group of ops at one module and io on ``h`` (B, T, D); returns the new ``h`` or None if unedited."""
    edited = False
    for i, op in group:
        if op.fn is not None:
            h, edited = _edit(h, op), True
        if op.read:
            reads[i] = keep(_select(h, op))
    return h if edited else None


def _groups(lm, ops: Sequence[Op]) -> list[tuple[tuple[str, str], list[tuple[int, Op]]]]:
    """Ops grouped by (module path, io), in the model's execution order (ops keep their order in a group)."""
    by_key: dict[tuple[str, str], list[tuple[int, Op]]] = {}
    for i, op in enumerate(ops):
        by_key.setdefault((op.target.path, op.target.io), []).append((i, op))
    if len(by_key) > 1:
        order = execution_order(lm)
        return sorted(by_key.items(), key=lambda kv: order[kv[0]])
    return list(by_key.items())


def execution_order(lm) -> dict[tuple[str, str], int]:
    """Rank of each (module path, 'input'|'output') in one forward pass, found once with hooks."""
    if getattr(lm, "_order", None) is None:
        order: dict = {}
        handles = []
        for name, mod in lm.hf.named_modules():
            handles.append(mod.register_forward_pre_hook(_recorder(order, (name, "input"))))
            handles.append(mod.register_forward_hook(_recorder(order, (name, "output"))))
        try:  # with attn_pattern points attached, under the attention that calls them, so they are ordered too
            with torch.no_grad(), _sites.pattern_attention(lm.hf, on=getattr(lm, "_patterns", False)):
                lm.hf(input_ids=torch.tensor([[1, 2]], device=lm.device))
        finally:
            for h in handles:
                h.remove()
        lm._order = order
    return lm._order


def _recorder(order, key):
    def hook(*_):
        order.setdefault(key, len(order))

    return hook


# ---- backend 1: an nnsight trace --------------------------------------------------------------------------


def _save(t):
    return t.save()  # nnsight exports only saved values from a trace


def _run_nnsight(lm, hf, kwargs, ops, *, stop, own):
    groups = _groups(lm, ops)
    logits = None
    reads: dict[int, torch.Tensor] = {}
    with lm.model.trace(**kwargs) as tracer:
        for (path, io), group in groups:
            env = _sites.envoy_at(lm, path)
            value = env.input if io == "input" else env.output
            packed = isinstance(value, tuple)
            new = _apply(value[0] if packed else value, group, reads, keep=_save)
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
    return [reads.get(i) for i in range(len(ops))], logits


# ---- backend 2: plain module hooks ------------------------------------------------------------------------


@contextlib.contextmanager
def hooked(lm, ops: Sequence[Op], *, once: bool = False, reads: dict | None = None, stop: bool = False, hf=None):
    """While the block runs, every forward of the model applies ``ops`` (with ``once``: the first forward only,
    e.g. the prompt pass of ``generate``). ``reads`` collects what read ops select; with ``stop`` the forward
    ends (raising an internal exception that :func:`execute` catches) after the last op."""
    model = hf or lm.hf
    reads = {} if reads is None else reads
    groups = _groups(lm, ops)
    handles = []
    try:
        for g, ((path, io), group) in enumerate(groups):
            handles.append(_register(model.get_submodule(path), io, group, reads, once, stop and g == len(groups) - 1))
        with _sites.pattern_attention(model, on=_patterns(ops)):  # attn_pattern: eager attention while hooked
            yield reads
    finally:
        for h in handles:
            h.remove()


def _register(module, io, group, reads, once, last):
    armed = [True]

    def run(h):
        if once and not armed[0]:
            return None
        armed[0] = False
        new = _apply(h, group, reads)
        if last:
            raise _Stop
        return new

    if io == "output":

        def hook(mod, args, output):
            packed = isinstance(output, tuple)
            new = run(output[0] if packed else output)
            if new is None:
                return None
            return (new, *output[1:]) if packed else new

        return module.register_forward_hook(hook)

    def pre_hook(mod, args, kwargs):
        key = None if args else ("hidden_states" if "hidden_states" in kwargs else next(iter(kwargs)))
        new = run(args[0] if args else kwargs[key])
        if new is None:
            return None
        return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, key: new})

    return module.register_forward_pre_hook(pre_hook, with_kwargs=True)


def _run_hooks(lm, hf, kwargs, ops, *, stop, own):
    reads: dict[int, torch.Tensor] = {}
    out = None
    with hooked(lm, ops, reads=reads, stop=stop and not own, hf=hf):
        try:
            out = hf(**kwargs, use_cache=False)
        except _Stop:
            pass
    return [reads.get(i) for i in range(len(ops))], (out.logits if own else None)


__all__ = ["Batch", "Op", "Outcome", "execute", "hooked", "readout", "final_norm_target", "BACKENDS"]
