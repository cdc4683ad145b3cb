"""AtP* (Kramar et al. 2024): attribution patching with the attention softmax recomputed exactly, and GradDrop.

Example:
    >>> pp = Pairs.of(base, source, base_answer=[5] * 4, source_answer=[6] * 4)
    >>> star = attribution_patch(lm, pp, positions={"first": at(0), "last": last()}, method="atp*")
    >>> star.effect.shape, star.method                          # the same Grid as AtP and patch_grid
    (torch.Size([2, 2]), 'atp*')
    >>> gd = attribution_patch(lm, pp, positions={"last": last()}, method="atp*", grad_drop=True)
    >>> gd.graddrop.shape                                       # GradDrop's magnitudes, for ranking cells
    torch.Size([2, 1])

AtP linearises the metric in the patched activation; where a patch moves attention scores the softmax saturates
and the first-order term misses (or flips) the effect. AtP*'s QK fix computes the new attention pattern exactly
for a patched key or query and linearises only from the pattern on. For a grid of sites, this module applies it
at every attention layer a patch reaches:

1. A patch at (layer ``l``, token ``c``) changes nothing at earlier tokens, and token ``c``'s own column (its
   residual stream at every layer above) depends only on the clean earlier tokens. So that column is run
   *exactly*: one token per cell, every cell of a layer stacked in one forward, attending to the clean key/value
   cache (kept with its real positions, so sliding windows and rotary positions are those of the full run).
   Where ``c`` is the column the metric reads, that is the exact patched metric.
2. Later tokens see the patch only through the column's keys and values at each layer ``j >= l``, which step 1
   gives exactly. For every later query row the new attention row is computed exactly (one score moves:
   ``softmax`` with one logit shifted, the scaled queries read from the clean run, softcapping included), and so
   is the attention output: ``o' = o / Z + ((w - p) / Z) v + (w / Z) dv`` with ``p`` the clean probability of
   column ``c``, ``w = p exp(ds)``, ``Z = 1 - p + w``. Only from there on is the metric linearised, with the
   gradient at each head's output (the input of the output projection) from one clean backward.

What is still first order: how a change at one later token feeds other tokens' queries, keys and values
(cross-token, cross-layer interactions), and everything downstream of each attention output.

GradDrop (``grad_drop=True``): for each layer ``L_d`` one more backward in which the gradient does not pass
through layer ``L_d``'s residual contribution (its attention and MLP), giving an estimate per cell and dropped
layer; the magnitude ``mean over L_d of |estimate|`` (Kramar et al. scale the sum by ``1/(L-1)``, the same ranking)
is kept as ``grid.graddrop``: a score for ranking cells against cancellation between paths, never a signed effect.
Layers below a cell's own (at ``resid_post``, its own too) give its undropped estimate. It costs about ``L / 2``
backward passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from .arch import architecture, submodule
from .engine import Op, attach_queries, execute, final_norm_target, forward, layer_stand_ins, query_target, readout
from .errors import InputError
from .positions import last
from .sites import Site, n_kv_heads, resolve

# Components whose patch at one token reaches other tokens only through attention keys and values of its layer
# and above (the column run recomputes them), and whose layer-``l`` site the column run can edit.
COMPONENTS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "q", "k", "v", "mlp_hidden")


@dataclass
class BaseRun:
    """What AtP* keeps of the clean run, per layer: scaled queries, patterns, head outputs and their gradients,
    the key/value cache, each layer's output; and the metric's gradients with each layer dropped (GradDrop)."""

    queries: list[torch.Tensor]  # (B, T, h, d) scaled
    patterns: list[torch.Tensor]  # (B, h, T, T)
    heads: list[torch.Tensor]  # (B, T, h, d): attention outputs per head
    grads: list[torch.Tensor]  # (V, B, T, h, d): variant 0 the full gradient, variant 1 + l with layer l dropped
    keys: list[torch.Tensor]  # (B, kv, T, d)
    values: list[torch.Tensor]
    outputs: list[torch.Tensor]  # (B, T, d_model): resid_post of every layer
    softcap: list[float | None]
    logits: torch.Tensor  # (B, V) at the metric's column
    m_base: float


def check(lm, component: str, cols: dict) -> None:
    """Refuse what AtP* cannot compute, before any forward."""
    if component not in COMPONENTS:
        raise InputError(
            f"method='atp*' does not cover component {component!r}; it covers {', '.join(COMPONENTS)} "
            "(use method='atp' for heads and attention patterns)"
        )
    for name, (cb, _) in cols.items():
        if cb.shape[1] != 1:
            raise InputError(
                f"method='atp*' patches one token per cell; position {name!r} gives {cb.shape[1]} tokens per "
                "prompt (use one Position per token, or method='atp')"
            )


def base_run(lm, batch, metric, read_at: torch.Tensor, grad_drop: bool) -> BaseRun:
    """One clean forward reading every layer's queries, pattern, head outputs and output, keeping its cache; one
    backward (and with ``grad_drop`` one more partial backward per layer)."""
    attach_queries(lm)
    B, T = batch.input_ids.shape
    L, every = lm.n_layers, torch.arange(T, device=batch.input_ids.device).expand(B, T)
    head_t = [_head_target(lm, j) for j in range(L)]
    zeros_h = [_zero(lm, B, T, t.width, t.path) for t in head_t]
    post_t = [resolve(lm, Site("resid_post", j)) for j in range(L)]
    zeros_p = [_zero(lm, B, T, t.width, t.path) for t in post_t]
    ops = [Op(None, query_target(lm, j), every, read=True) for j in range(L)]
    ops += [Op(None, resolve(lm, Site("attn_pattern", j)), every, read=True) for j in range(L)]
    ops += [Op(None, t, every, fn=_adder(z), read=True) for t, z in zip(head_t, zeros_h)]
    ops += [Op(None, t, every, fn=_adder(z), read=True) for t, z in zip(post_t, zeros_p)]
    ops.append(Op(None, final_norm_target(lm), read_at, read=True))
    cache = DynamicCache()
    with torch.enable_grad():
        reads, _ = forward(lm, ops, stop=True, **batch.forward_kwargs(), cache=cache, use_cache=True)
        logits = readout(lm, reads[-1])[:, -1]
        m = _mean(metric(logits))
        if not m.requires_grad:
            raise InputError("the metric does not depend on the logits it is given; AtP* needs a differentiable metric")
        got = torch.autograd.grad(m, zeros_h + zeros_p, allow_unused=True, retain_graph=grad_drop)
    got = [torch.zeros_like(z) if g is None else g for g, z in zip(got, zeros_h + zeros_p)]
    g_heads, g_post = got[:L], got[L:]
    variants = [g_heads]
    if grad_drop:  # layer l dropped: heads below l lose the paths through l's block; l's own heads get nothing
        posts = reads[3 * L : 4 * L]
        with torch.enable_grad():
            for drop in range(L):
                through = [torch.zeros_like(z) for z in zeros_h[:drop]]
                if drop > 0:
                    block = posts[drop] - posts[drop - 1]
                    vjp = torch.autograd.grad(block, zeros_h[:drop], g_post[drop], retain_graph=True, allow_unused=True)
                    through = [torch.zeros_like(z) if v is None else v for v, z in zip(vjp, zeros_h[:drop])]
                dropped = [g - v for g, v in zip(g_heads[:drop], through)] + [torch.zeros_like(g_heads[drop])]
                variants.append(dropped + g_heads[drop + 1 :])
    h, d = lm.spec.n_heads, lm.spec.head_dim
    split = lambda x: x.detach().reshape(B, T, h, d)  # noqa: E731
    return BaseRun(
        queries=[split(r) for r in reads[:L]],
        patterns=[r.detach().transpose(1, 2) for r in reads[L : 2 * L]],  # (B, T, h, S) -> (B, h, T, S)
        heads=[split(r) for r in reads[2 * L : 3 * L]],
        grads=[torch.stack([split(v[j]) for v in variants]) for j in range(L)],
        keys=[layer.keys.detach() for layer in cache.layers],
        values=[layer.values.detach() for layer in cache.layers],
        outputs=[r.detach() for r in reads[3 * L : 4 * L]],
        softcap=[_softcap(lm, j) for j in range(L)],
        logits=logits.detach(),
        m_base=m.item(),
    )


def column_effects(lm, batch, run: BaseRun, read, component: str, layer: int, cols, a_source, read_at):
    """Change of the mean metric (V, n_cells) for every cell of one layer: variant 0 AtP*, 1 + l GradDrop's.

    ``cols`` (n_cells, B) padded base columns, ``a_source`` (n_cells, B, w) the source vectors to patch in;
    ``read`` = (metric, vocab): the metric of logits over ``vocab`` (all words where None)."""
    metric, vocab = read
    m_base = run.m_base if vocab is None else _mean(metric(run.logits[:, vocab.to(run.logits.device)])).item()
    n, B = cols.shape
    N, dev = n * B, batch.input_ids.device
    b_of = torch.arange(B, device=dev).repeat(n)  # row r = cell * B + b
    c_of = cols.reshape(N).to(dev)
    r_of = read_at[:, 0].to(dev)[b_of]  # the column the metric reads, per row
    site = Site(component, layer)
    if component == "resid_post":
        skip, value, ops = layer + 1, a_source.reshape(N, 1, -1).to(lm.dtype), []
    else:
        skip = layer
        value = run.outputs[layer - 1][b_of, c_of][:, None] if layer > 0 else None
        new = a_source.reshape(N, 1, -1)
        ops = [Op(site, resolve(lm, site), torch.zeros(N, 1, dtype=torch.long, device=dev), fn=lambda _h: new)]
    # 1. The patched column, exactly: its keys and values at every layer from ``skip`` on, and its own readout.
    hidden, new_kv = _one_token(lm, batch, run, skip, value, ops, b_of, c_of, None)
    n_var = run.grads[0].shape[0]
    total = torch.zeros(n_var, n, dtype=torch.float64, device=dev)
    direct = c_of == r_of  # rows whose patched column is the one the metric reads
    # 2. The read column, exactly, attending to the patched column's new keys and values (the clean cache else).
    if (~direct).any():
        keep = run.outputs[skip - 1][b_of, r_of][:, None] if skip > 0 else None
        read_hidden, _ = _one_token(lm, batch, run, skip, keep, [], b_of, r_of, (c_of, new_kv))
        hidden = torch.where(direct[:, None, None], hidden, read_hidden)
    patched = readout(lm, hidden, vocab)[:, -1].to(run.logits.dtype)  # (N, V): the metric's logits per row
    for i in range(n):
        total[:, i] += _mean(metric(patched[i * B : (i + 1) * B])).item() - m_base
    # 3. First order from every attention output of the rows between (their rows recomputed exactly).
    for j in range(skip, lm.n_layers):
        total += _through_attention(lm, run, j, new_kv[j - skip], c_of, r_of, n, B).to(total.device)
    return total


def _one_token(lm, batch, run: BaseRun, skip: int, value, ops, b_of, col, replace):
    """One forward of token ``col`` (N,) per row (rows of base row ``b_of``), from layer ``skip`` on, attending to
    the clean cache (with ``replace`` = (columns (N,), [(keys, values) (N, kv, d) per layer >= skip]) put in),
    laid out so the token sits at its real distance from every key. Returns the final norm's output (N, 1, d)
    and the token's own keys and values per layer from ``skip``."""
    T, N, dev = batch.input_ids.shape[1], col.shape[0], col.device
    shift = torch.arange(T, device=dev)[None] - (T - col)[:, None]  # (N, T): the real column at each index
    ok = shift >= 0
    src = shift.clamp(min=0)
    mask = torch.cat([batch.attention_mask[b_of[:, None], src] * ok, torch.ones(N, 1, dtype=ok.dtype, device=dev)], 1)
    data = []
    for j, (k, v) in enumerate(zip(run.keys, run.values)):
        if j < skip:  # not run: only the length counts
            data.append((k[:1, :, :1].expand(N, -1, T, -1), v[:1, :, :1].expand(N, -1, T, -1)))
            continue
        kv = [x[b_of[:, None], :, src].transpose(1, 2) * ok[:, None, :, None] for x in (k, v)]  # (N, kv, T, d)
        if replace is not None:
            at = (src == replace[0][:, None]) & ok  # (N, T): where the patched column sits
            for x, y in zip(kv, replace[1][j - skip]):
                x.copy_(torch.where(at[:, None, :, None], y[:, :, None, :].to(x.dtype), x))
        data.append(tuple(kv))
    cache = DynamicCache(ddp_cache_data=data)
    ops = ops + [Op(None, final_norm_target(lm), torch.zeros(N, 1, dtype=torch.long, device=dev), read=True)]
    swaps = layer_stand_ins(lm, skip, value, purpose="an AtP* column") if skip > 0 else {}
    with torch.no_grad():
        reads, _ = forward(
            lm,
            ops,
            stop=True,
            swaps=swaps,
            input_ids=batch.input_ids[b_of, col][:, None],
            attention_mask=mask,
            position_ids=batch.position_ids[b_of, col][:, None],
            cache=cache,
            use_cache=True,
        )
    own = [(cache.layers[j].keys[:, :, T], cache.layers[j].values[:, :, T]) for j in range(skip, lm.n_layers)]
    return reads[-1], own


def _through_attention(lm, run: BaseRun, j: int, new_kv, c_of, r_of, n: int, B: int) -> torch.Tensor:
    """First-order change of the metric (V, n) from the rows strictly between each cell's column and the read
    column: their attention rows at layer ``j`` recomputed exactly with the column's new key and value."""
    T = run.keys[j].shape[2]
    group = lm.spec.n_heads // n_kv_heads(lm)
    per = lambda x: x.reshape(n, B, *x.shape[1:]).transpose(0, 1).repeat_interleave(group, 2)  # noqa: E731
    k_new, v_new = (per(x.float()) for x in new_kv)  # (B, n, h, d)
    c, r = c_of.reshape(n, B).T, r_of.reshape(n, B).T  # (B, n)
    bi = torch.arange(B, device=c.device)[:, None]
    k_old = run.keys[j].float()[bi, :, c].repeat_interleave(group, 2)  # (B, n, h, d)
    v_old = run.values[j].float()[bi, :, c].repeat_interleave(group, 2)
    q = run.queries[j].float().transpose(1, 2)  # (B, h, T, d)
    kt = lambda x: x.permute(0, 2, 3, 1)  # noqa: E731  (B, n, h, d) -> (B, h, d, n)
    raw_old = q @ kt(k_old)  # (B, h, T, n)
    raw_new = raw_old + q @ kt(k_new - k_old)
    cap = run.softcap[j]
    if cap:
        raw_old, raw_new = (torch.tanh(x / cap) * cap for x in (raw_old, raw_new))
    f64 = torch.float64
    pat = run.patterns[j]  # (B, h, T, S)
    p = torch.gather(pat, 3, c[:, None, None, :].expand(-1, pat.shape[1], T, -1)).to(f64)  # (B, h, T, n)
    t = torch.arange(T, device=c.device)[None, None, :, None]
    between = (t > c[:, None, None, :]) & (t < r[:, None, None, :])  # (B, 1, T, n)
    p = torch.where(between, p, torch.zeros_like(p))
    w = torch.exp(torch.log(p) + (raw_new - raw_old).to(f64))  # p * exp(ds); 0 where p is 0
    z = 1 - p + w
    coef_o, coef_v, coef_dv = (x.float() for x in (1 / z - 1, (w - p) / z, w / z))
    o = run.heads[j].float().transpose(1, 2)  # (B, h, T, d)
    out = torch.zeros(run.grads[j].shape[0], n, dtype=f64, device=c.device)
    for var, g in enumerate(run.grads[j]):
        g = g.float().transpose(1, 2)  # (B, h, T, d)
        a = (o * g).sum(-1, keepdim=True)  # (B, h, T, 1)
        bv, cv = g @ kt(v_old), g @ kt(v_new - v_old)  # (B, h, T, n)
        out[var] = (coef_o * a + coef_v * bv + coef_dv * cv).double().sum((0, 1, 2))
    return out


def grid_effects(lm, b_batch, s_batch, metric, layers, cols, component: str, grad_drop: bool, read=None):
    """AtP*'s change of the mean metric per cell (L, P), GradDrop's magnitudes (L, P) or None, the base and
    source metric values, and the clean logits. ``cols``: name -> (base columns (B, 1), source columns (B, 1));
    ``read``: (the same metric over a few words, their ids), so patched runs compute only those logits."""
    check(lm, component, cols)
    read_at = last().resolve(b_batch.attention_mask)
    targets = [resolve(lm, Site(component, layer)) for layer in layers]
    s_at = last().resolve(s_batch.attention_mask)
    every = torch.arange(s_batch.input_ids.shape[1], device=s_batch.input_ids.device).expand(len(s_batch), -1)
    with torch.no_grad():
        src = execute(lm, s_batch, [Op(None, t, every, read=True) for t in targets], logits_at=s_at)
        m_source = _mean(metric(src.logits[:, -1])).item()
    run = base_run(lm, b_batch, metric, read_at, grad_drop)
    B = len(b_batch)
    rows = torch.arange(B)
    effects = torch.zeros(run.grads[0].shape[0], len(layers), len(cols), dtype=torch.float64)
    c_b = torch.stack([cb[:, 0] for cb, _ in cols.values()])  # (P, B)
    for li, (layer, a_s) in enumerate(zip(layers, src.reads)):
        vec = torch.stack([a_s[rows, cs[:, 0].to(a_s.device)] for _, cs in cols.values()])  # (P, B, w)
        todo = torch.ones(len(cols), dtype=torch.bool)
        if component == "resid_post":  # a cell whose source equals the base everywhere is the clean run
            same = vec.to(run.outputs[layer].device) == run.outputs[layer][rows, c_b.to(run.outputs[layer].device)]
            todo = ~same.all(-1).all(-1).cpu()
        if todo.any():
            got = column_effects(
                lm, b_batch, run, read or (metric, None), component, layer, c_b[todo], vec[todo], read_at
            )
            effects[:, li, todo] = got.cpu()
    delta = effects[0].float()
    magnitude = effects[1:].abs().mean(0).float() if grad_drop else None
    return delta, magnitude, run.m_base, m_source, run.logits


def _head_target(lm, layer: int):
    t = resolve(lm, Site("head", layer, head=0))
    return type(t)(t.path, t.io, None, t.n_heads, t.n_heads * t.width)


def _softcap(lm, layer: int) -> float | None:
    arch = architecture(lm)
    return getattr(submodule(lm.hf, f"{arch.layers}.{layer}.{arch.attn}").attn_query, "softcap", None)


def _zero(lm, B: int, T: int, w: int, path: str) -> torch.Tensor:
    return torch.zeros(B, T, w, device=lm.device_at(path), dtype=lm.dtype, requires_grad=True)


def _adder(zero: torch.Tensor):
    return lambda h: h + zero


def _mean(m: torch.Tensor) -> torch.Tensor:
    m = torch.as_tensor(m)
    return m.float().mean() if m.dim() else m.float()


__all__ = ["COMPONENTS", "BaseRun", "base_run", "check", "column_effects"]
