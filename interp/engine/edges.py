"""The edge-patched forward: every receiver reads its own mix of clean and corrupted sender outputs, in one pass.

Example:
    >>> layout = EdgeLayout(lm.spec.n_layers, lm.spec.n_heads)
    >>> clean, corrupt = capture(lm, encode(lm, base)), capture(lm, encode(lm, source))
    >>> c = edge_forward(lm, corrupt, layout)               # plain run: (S, B, T, d) sender outputs, logits (B, V)
    >>> c.outputs.shape, c.logits.shape
    (torch.Size([11, 4, 6, 32]), torch.Size([4, 97]))
    >>> none = torch.zeros(layout.n_receivers, layout.n_senders)          # no edge kept: the corrupted run
    >>> torch.allclose(edge_forward(lm, clean, layout, keep=none, corrupt=c.outputs).logits, c.logits, atol=1e-5)
    True

Senders write into the residual stream: ``input`` (the embeddings as layer 0 reads them), each head (its share of
the output projection, ``W_O[:, head] z_head``; the projection's bias is a constant of the block) and each MLP.
Receivers read it: each head's query, key and value input, each MLP's input, and the logits (through the final
norm). Orders (those of :class:`interp.circuits.graph.Graph`): senders ``input``, then per layer its heads and its
MLP; receivers per layer ``h0<q>, h0<k>, h0<v>, h1<q>, ...``, the MLP, then the logits.

Given the corrupted run's sender outputs ``c`` and ``keep`` (R, S), receiver ``r`` reads

    corrupted residual + sum over blocks b of [post_b(c_b + sum_{s in b} keep[r, s] (a_s - c_s)) - post_b(c_b)]

where ``a_s`` is the sender's output in this run, ``c_b`` the sum of block b's corrupted outputs and ``post_b`` what
the block applies before the residual add: the output bias (GPT-2, GPT-NeoX), nothing (Llama, Qwen2), or on Gemma
2/3 a norm (``post_attention_layernorm``, ``post_feedforward_layernorm``). Where ``post_b`` is affine this is
``corrupted input + sum_s keep[r, s] (a_s - c_s)``; on Gemma it is the true model computation with the norm taken of
the mixed sum that receiver sees. ``keep`` all ones is the model itself, all zeros the corrupted run, up to float
rounding; fractional values interpolate (EAP-IG on activations). A head's output is computed from its own q, k and
v inputs: the layer's attention module runs once per head on a batch stacked by head (``H * B`` rows), with the
key and value projections fed their own inputs, and the head's slice of the projection's input kept. Under
grouped-query attention a query head's key/value head is thus computed from that query head's inputs.

``keep`` may be (G, R, S): G circuits at once over the batch tiled G times (rows ``g * B + b``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from ..arch import architecture, submodule
from ..errors import InputError
from .edge_mix import Mixer
from .plan import Batch, Stop
from .unembed import readout

ATTN_NORM = {"GPT2LMHeadModel": "ln_1"}  # the norm before attention, where it is not "input_layernorm"
_BATCHED = ("attention_mask", "position_ids", "position_embeddings")  # attention kwargs with a batch dimension
_DROPPED = ("cache", "past_key_values", "layer_past", "use_cache", "output_attentions")


@dataclass(frozen=True)
class EdgeLayout:
    """Shape of the graph the engine runs: ``n_layers`` of ``n_heads`` heads; ``parallel``: MLPs read their
    layer's input (GPT-NeoX's parallel residual)."""

    n_layers: int
    n_heads: int
    parallel: bool = False

    @property
    def n_senders(self) -> int:
        return 1 + self.n_layers * (self.n_heads + 1)

    @property
    def n_receivers(self) -> int:
        return self.n_layers * (3 * self.n_heads + 1) + 1

    def head(self, layer: int, h: int) -> int:
        return 1 + layer * (self.n_heads + 1) + h

    def mlp(self, layer: int) -> int:
        return 1 + layer * (self.n_heads + 1) + self.n_heads

    def attn_receivers(self, layer: int) -> slice:
        start = layer * (3 * self.n_heads + 1)
        return slice(start, start + 3 * self.n_heads)

    def mlp_receiver(self, layer: int) -> int:
        return layer * (3 * self.n_heads + 1) + 3 * self.n_heads


@dataclass
class Captured:
    """One real forward's inputs to the layers: the embeddings (B, T, d), each layer's attention kwargs, and the
    position read out per row (the last real token)."""

    embed: torch.Tensor
    attn_kwargs: list[dict]
    last: torch.Tensor

    def __len__(self) -> int:
        return self.embed.shape[0]


@dataclass
class EdgeRun:
    """What :func:`edge_forward` gives: ``logits`` (B, V) at each row's last token, ``outputs`` (S, B, T, d) every
    sender's output (before Gemma's block norm), ``taps`` (R, B, T, d) the zeros added at each receiver's input
    (leaves whose gradient is d metric / d receiver input) or None."""

    logits: torch.Tensor
    outputs: torch.Tensor
    taps: torch.Tensor | None


def capture(lm, batch: Batch) -> Captured:
    """Run the model once and keep what each layer's attention is called with (masks, rotary embeddings) and the
    embeddings layer 0 reads; the forward stops after the last layer's attention starts."""
    arch, n = architecture(lm), lm.spec.n_layers
    kwargs: list[dict] = [{} for _ in range(n)]
    embed: list[torch.Tensor] = []

    def first(mod, args, kw):
        embed.append((args[0] if args else kw["hidden_states"]).detach())

    def keep(i):
        def pre(mod, args, kw):
            kwargs[i] = {k: v for k, v in kw.items() if k != "hidden_states" and k not in _DROPPED}
            if i == n - 1:
                raise Stop

        return pre

    handles = [
        submodule(lm.hf, f"{arch.layers}.{i}.{arch.attn}").register_forward_pre_hook(keep(i), with_kwargs=True)
        for i in range(n)
    ]
    handles.append(submodule(lm.hf, f"{arch.layers}.0").register_forward_pre_hook(first, with_kwargs=True))
    try:
        with torch.no_grad():
            lm.hf(**batch.forward_kwargs(), use_cache=False)
    except Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    mask = batch.attention_mask
    last = (mask.long() * torch.arange(mask.shape[1], device=mask.device)).argmax(-1)
    return Captured(embed[0], kwargs, last)


def _tile(x, B: int, n: int):
    """Repeat batch-first tensors (B, ...) n times along the batch (rows ``i * B + b``); tuples item by item."""
    if isinstance(x, tuple):
        return tuple(_tile(v, B, n) for v in x)
    if isinstance(x, torch.Tensor) and x.dim() and x.shape[0] == B and n > 1:
        return x.repeat(n, *([1] * (x.dim() - 1)))
    return x


class _Layer:
    """One decoder layer's modules as the edge forward uses them."""

    def __init__(self, lm, i: int):
        arch = architecture(lm)
        self.layer = submodule(lm.hf, f"{arch.layers}.{i}")
        self.attn_norm = self.layer.get_submodule(ATTN_NORM.get(lm.spec.architecture, "input_layernorm"))
        self.attn = self.layer.get_submodule(arch.attn)
        self.qkv = [self.layer.get_submodule(p) for p in arch.qkv]
        self.layout = arch.qkv_layout
        self.o_proj = self.layer.get_submodule(arch.head)
        self.mlp_norm = self.layer.get_submodule(arch.resid_mid[0])
        self.mlp = self.layer.get_submodule(arch.mlp)
        norm_after = arch.attn_out[0] != arch.attn
        self.attn_post = self.layer.get_submodule(arch.attn_out[0]) if norm_after else None
        self.mlp_post = self.layer.get_submodule(arch.mlp_out[0]) if arch.mlp_out[0] != arch.mlp else None
        w = self.o_proj.weight
        self.w_o = w if isinstance(self.o_proj, torch.nn.Linear) else w.T  # (d, H * hd); GPT-2's Conv1D is (in, out)
        self.b_o = getattr(self.o_proj, "bias", None)

    def post(self, kind: str, x: torch.Tensor) -> torch.Tensor:
        """What a block applies to its summed output before the residual add."""
        if kind == "attn":
            if self.attn_post is not None:
                return self.attn_post(x)
            return x + self.b_o if self.b_o is not None else x
        return self.mlp_post(x) if self.mlp_post is not None else x

    def heads(self, x: torch.Tensor, kwargs: dict, H: int) -> torch.Tensor:
        """Each head's output (H, N, T, d) from its own normed inputs ``x`` (H, 3, N, T, d): q, k, v; or from one
        input (N, T, d) that every head reads (the attention runs once, unstacked)."""
        shared = x.dim() == 3
        N = x.shape[0] if shared else x.shape[2]
        flat = {c: x[:, j].flatten(0, 1).contiguous() for j, c in enumerate("qkv")} if not shared else {"q": x}
        handles, z = [], []
        for mod in {id(m): m for m in self.qkv}.values():
            roles = "".join(c for c, m in zip("qkv", self.qkv) if m is mod)
            if roles != "q" and not shared:
                handles.append(mod.register_forward_hook(self._feed(mod, roles, flat, H)))

        def grab(mod, args):
            z.append(args[0])
            raise Stop

        handles.append(self.o_proj.register_forward_pre_hook(grab))
        copies = 1 if shared else H
        kw = {k: _tile(v, N, copies) if k in _BATCHED else v for k, v in kwargs.items()}
        try:
            self.attn(flat["q"], **kw)
        except Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        zz = z[0].reshape(copies, N, z[0].shape[1], H, -1)  # (copies, N, T, H heads, hd)
        if shared:
            own = zz[0].permute(2, 0, 1, 3)  # (H, N, T, hd)
        else:
            idx = torch.arange(H, device=zz.device)
            own = zz[idx, :, :, idx]  # (H, N, T, hd): copy h's head h
        return torch.einsum("hntk,dhk->hntd", own, self.w_o.reshape(self.w_o.shape[0], H, -1))

    def _feed(self, mod, roles: str, flat: dict, H: int):
        """A forward hook that makes ``mod`` project each role's own input (q, k, v columns of a fused module)."""

        def hook(m, args, out):
            outs = {c: out if c == "q" else type(m).forward(m, flat[c]) for c in roles}
            if len(roles) == 1:
                return outs[roles]
            role = _roles(out.shape[-1], roles, self.layout, H, out.device)
            new = outs[roles[-1]]
            for j in range(len(roles) - 2, -1, -1):
                new = torch.where(role == j, outs[roles[j]], new)
            return new

        return hook


def _roles(width: int, roles: str, layout: str, H: int, device) -> torch.Tensor:
    """Which role (index into ``roles``) each output column of a fused projection serves."""
    if layout == "interleaved":  # per head [q_h | k_h | v_h]
        hd = width // (H * 3)
        return (torch.arange(3 * hd, device=device) // hd).repeat(H)
    third = width // 3  # "split": [q | k | v]
    return (torch.arange(width, device=device) // third).clamp(max=2)


def edge_forward(
    lm,
    cap: Captured,
    layout: EdgeLayout,
    *,
    keep: torch.Tensor | None = None,
    corrupt: torch.Tensor | None = None,
    embed: torch.Tensor | None = None,
    taps: bool = False,
) -> EdgeRun:
    """One forward where each receiver reads its own mix (see the module); without ``keep`` a plain run.

    ``corrupt`` (S, B, T, d) or (S, T, d) or (S, d): the senders' outputs in the corrupted run, or their means;
    ``embed`` replaces the embeddings (EAP-IG on inputs); ``taps`` adds a zero at each receiver's input.
    """
    S, R, H = layout.n_senders, layout.n_receivers, layout.n_heads
    B = len(cap)
    if keep is not None:
        if corrupt is None:
            raise InputError("edge_forward: keep needs the corrupted outputs (corrupt=...) to patch from")
        keep = keep if keep.dim() == 3 else keep[None]
        if tuple(keep.shape[1:]) != (R, S):
            raise InputError(f"keep must be (R, S) = ({R}, {S}) or (G, R, S); got {tuple(keep.shape)}")
    G = 1 if keep is None else keep.shape[0]
    e = cap.embed if embed is None else embed
    e = _tile(e, B, G)
    N, T, d = e.shape
    kwargs = [{k: _tile(v, B, G) if k in _BATCHED else v for k, v in kw.items()} for kw in cap.attn_kwargs]
    if corrupt is not None:
        corrupt = corrupt[:, None, None] if corrupt.dim() == 2 else corrupt[:, None] if corrupt.dim() == 3 else corrupt
        corrupt = torch.broadcast_to(corrupt, (S, B, T, d))
    tap = torch.zeros(R, N, T, d, dtype=e.dtype, device=e.device, requires_grad=True) if taps else None
    outs = [e]
    mix = Mixer(keep, corrupt, e) if keep is not None else None
    resid = e
    for i in range(layout.n_layers):
        L = _Layer(lm, i)
        rs = layout.attn_receivers(i)
        if mix is None and tap is None:  # every head reads the same residual: the attention runs once
            heads = L.heads(L.attn_norm(resid), kwargs[i], H)  # (H, N, T, d)
        else:
            x = mix.inputs(rs, len(outs)) if mix else resid.expand(3 * H, N, T, d)
            x = L.attn_norm(x + tap[rs] if tap is not None else x)
            heads = L.heads(x.reshape(H, 3, N, T, d), kwargs[i], H)
        outs += list(heads.unbind(0))
        attn_write = None if mix else L.post("attn", heads.sum(0))
        if mix:
            senders = [layout.head(i, h) for h in range(H)]
            mix.close(partial(L.post, "attn"), L.attn_post is None, senders, heads, attn=True)
        mr = layout.mlp_receiver(i)
        if mix:
            xm = mix.inputs(slice(mr, mr + 1), len(outs) - (H if layout.parallel else 0))[0]
        else:
            xm = resid if layout.parallel else resid + attn_write
        m = L.mlp(L.mlp_norm(xm + tap[mr] if tap is not None else xm))
        outs.append(m)
        if mix:
            mix.close(partial(L.post, "mlp"), L.mlp_post is None, [layout.mlp(i)], m[None], attn=False)
        else:
            resid = resid + attn_write + L.post("mlp", m)
    xf = mix.inputs(slice(R - 1, R), len(outs))[0] if mix else resid
    xf = xf + tap[R - 1] if tap is not None else xf
    rows = torch.arange(N, device=xf.device)
    last = cap.last.to(xf.device).repeat(G)
    final = submodule(lm.hf, architecture(lm).final_norm)
    logits = readout(lm, final(xf[rows, last][:, None]))[:, 0]
    return EdgeRun(logits, torch.stack(outs), tap)


def block_jvp(lm, layout: EdgeLayout, at: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Each sender's difference as the residual sees it, to first order: ``J_post_b(sum of b's outputs) delta_s``
    for every sender s of block b, (S, B, T, d); the identity where ``post_b`` is affine (all but Gemma 2/3)."""
    out = deltas.clone()
    H = layout.n_heads
    for i in range(layout.n_layers):
        L = _Layer(lm, i)
        for kind, senders in (("attn", [layout.head(i, h) for h in range(H)]), ("mlp", [layout.mlp(i)])):
            norm = L.attn_post if kind == "attn" else L.mlp_post
            if norm is None:
                continue
            x = at[senders].sum(0)
            for s in senders:
                out[s] = torch.func.jvp(norm, (x,), (deltas[s],))[1]
    return out


__all__ = ["ATTN_NORM", "Captured", "EdgeLayout", "EdgeRun", "block_jvp", "capture", "edge_forward"]
