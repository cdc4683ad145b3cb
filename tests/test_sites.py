"""Every (architecture x component) pair resolves and round-trips; bad sites fail before any forward pass."""

import pytest
import torch
from conftest import ARCHS, tiny_lm

from interp import Site, at, collect, first, interchange, last, span
from interp.engine import options
from interp.sites import COMPONENTS, INNER_COMPONENTS, envoy, kv_group, n_kv_heads, query_heads, resolve

PAIRS = [(a, c) for a in ARCHS for c in COMPONENTS]


@pytest.mark.parametrize("arch,component", PAIRS)
def test_every_arch_component_pair_resolves_and_reads(arch, component):
    lm = tiny_lm(arch)
    head = 1 if component == "head" else None
    site = Site(component, 1, last(), head=head)
    h = collect(lm, torch.randint(3, 97, (2, 5)), at=site)
    width = lm.spec.head_dim if component == "head" else lm.d_model
    assert h.shape == (2, 1, width)
    assert torch.isfinite(h).all() and h.abs().sum() > 0


@pytest.mark.parametrize("arch,component", PAIRS)
def test_writing_a_site_changes_the_output(arch, component):
    """Zeroing a site at every position must change the logits: the write reaches the model."""
    from interp import Zero, intervene, span

    lm = tiny_lm(arch)
    ids = torch.randint(3, 97, (2, 5))
    site = Site(component, 0, span(0, 5), head=0 if component == "head" else None)
    plain = lm.hf(input_ids=ids).logits[:, -1]
    out = intervene(lm, ids, at=site, via=Zero())
    assert (out.logits - plain).abs().max() > 1e-4


def test_resid_post_equals_next_resid_pre(tiny):
    ids = torch.randint(3, 97, (2, 5))
    a, b = collect(tiny, ids, at=[Site("resid_post", 0, last()), Site("resid_pre", 1, last())])
    torch.testing.assert_close(a, b)


def test_envoy_is_the_raw_nnsight_module(tiny):
    ids = torch.randint(3, 97, (2, 5))
    with tiny.model.trace(input_ids=ids):
        raw = envoy(tiny, Site("resid_post", 1)).output.save()
    torch.testing.assert_close(raw[:, -1:], collect(tiny, ids, at=Site("resid_post", 1, last())))


def test_module_escape_hatch_equals_the_table_site(tiny):
    from interp.sites import architecture

    ids = torch.randint(3, 97, (2, 5))
    by_path = collect(tiny, ids, at=Site.module(f"{architecture(tiny).layers}.0", last()))
    torch.testing.assert_close(by_path, collect(tiny, ids, at=Site("resid_post", 0, last())))
    by_input = collect(tiny, ids, at=Site.module(f"{architecture(tiny).layers}.1", last(), io="input"))
    torch.testing.assert_close(by_input, collect(tiny, ids, at=Site("resid_pre", 1, last())))


def test_module_sites_work_on_an_architecture_outside_the_table():
    """Bert has no site table (the refusal is a row of tests/bad_inputs_numbers.py); Site.module still works."""
    from transformers import BertConfig, BertForMaskedLM

    import interp

    lm = interp.LM(
        BertForMaskedLM(
            BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=97)
        )
    )
    h = collect(lm, torch.randint(3, 97, (2, 5)), at=Site.module("bert.encoder.layer.1", last()))
    assert h.shape == (2, 1, 32)
    wide = Site.module("bert.encoder.layer.1.intermediate.intermediate_act_fn", last())  # (B, T, intermediate_size)
    assert resolve(lm, wide).width == 64 and collect(lm, torch.randint(3, 97, (2, 5)), at=wide).shape == (2, 1, 64)


# a module wider than d_model: the MLP's activation function (intermediate_size; GPT-2: 4 * n_embd)
ACT = {"llama": "model.layers.0.mlp.act_fn", "gpt2": "transformer.h.0.mlp.act", "gpt_neox": "gpt_neox.layers.0.mlp.act"}
WIDTH = {"llama": 64, "gpt2": 128, "gpt_neox": 64}


@pytest.mark.parametrize("backend", ["nnsight", "hooks"])
@pytest.mark.parametrize("arch", sorted(ACT))
def test_a_basis_of_the_module_width_works_at_an_activation_function(arch, backend):
    """DII along a basis of the module's own width: it runs, moves the logits and equals the edit done by hand."""
    from interp import LowRankRotation

    lm = tiny_lm(arch)
    site = Site.module(ACT[arch], last())
    assert resolve(lm, site).width == WIDTH[arch]
    torch.manual_seed(0)
    R = LowRankRotation(WIDTH[arch], 8)
    g = torch.Generator().manual_seed(1)
    base, source = torch.randint(3, 97, (2, 5), generator=g), torch.randint(3, 97, (2, 5), generator=g)
    with options(backend=backend):
        out = interchange(lm, base, source, at=site, via=R)

    module = lm.hf.get_submodule(ACT[arch])
    seen = {}
    handle = module.register_forward_hook(lambda m, a, o: seen.update(s=o[:, -1].clone()))  # returns None: a read
    with torch.no_grad():
        lm.hf(input_ids=source)
    handle.remove()

    def swap(m, a, o):
        o = o.clone()
        o[:, -1] = R.interchange(o[:, -1], seen["s"])
        return o

    handle = module.register_forward_hook(swap)
    with torch.no_grad():
        by_hand = lm.hf(input_ids=base).logits[:, -1]
    handle.remove()
    plain = lm.hf(input_ids=base).logits[:, -1]
    assert (out.logits - plain).abs().max() > 1e-4  # the edit reaches the logits
    torch.testing.assert_close(out.logits, by_hand, atol=1e-5, rtol=0)


def test_numpy_integer_layers_and_heads_are_layers_and_heads():
    import numpy as np

    lm = tiny_lm("llama")
    ids = torch.randint(3, 97, (2, 5))
    for site, plain in [
        (Site("resid_post", np.int64(1), last()), Site("resid_post", 1, last())),
        (Site("head", np.int32(1), last(), head=np.int64(2)), Site("head", 1, last(), head=2)),
    ]:
        assert site == plain and hash(site) == hash(plain) and repr(site) == repr(plain)
        torch.testing.assert_close(collect(lm, ids, at=site), collect(lm, ids, at=plain))


def test_the_final_hidden_states_stand_in_for_the_unembedding():
    """Site.module('lm_head') is refused (a row of tests/bad_inputs_numbers.py): the logits are computed from the
    final norm's output, so that is the site to edit; an edit there reaches the logits."""
    from interp import Zero, intervene

    lm = tiny_lm("llama")  # lm_head has no bias: zero final hidden states give zero logits
    ids = torch.randint(3, 97, (2, 5))
    site = Site.module("model.norm", last())
    assert resolve(lm, site).width == lm.d_model
    out = intervene(lm, ids, at=site, via=Zero())
    torch.testing.assert_close(out.logits, torch.zeros_like(out.logits))


# ---- sites inside attention and MLPs: q, k, v, attn_pattern, mlp_hidden ---------------------------------------

INNER = [(a, c) for a in ARCHS for c in INNER_COMPONENTS]


def _hook_io(lm, path, io, ids, **kw):
    """What module ``path`` takes (its first input) or returns in a plain forward of ``ids``, by a hook."""
    seen = {}
    module = lm.hf.get_submodule(path)
    if io == "input":
        handle = module.register_forward_pre_hook(lambda m, a: seen.update(x=a[0].clone()))
    else:
        handle = module.register_forward_hook(lambda m, a, o: seen.update(x=o.clone()))
    try:
        with torch.no_grad():
            lm.hf(input_ids=ids, **kw)
    finally:
        handle.remove()
    return seen["x"]


def _qkv_by_hand(lm, arch, component, layer, ids):
    """q, k or v (B, T, n, head_dim) as the modeling code splits the projection output (transformers 5)."""
    B, T = ids.shape
    hd, H = lm.spec.head_dim, lm.spec.n_heads
    i = "qkv".index(component)
    if arch == "gpt2":  # c_attn -> split(d) into q, k, v, then view per head
        out = _hook_io(lm, f"transformer.h.{layer}.attn.c_attn", "output", ids)
        return out.split(H * hd, dim=2)[i].view(B, T, -1, hd)
    if arch == "gpt_neox":  # query_key_value -> view (B, T, H, 3 * hd) -> chunk(3) on the last dim
        out = _hook_io(lm, f"gpt_neox.layers.{layer}.attention.query_key_value", "output", ids)
        return out.view(B, T, H, 3 * hd).chunk(3, dim=-1)[i]
    out = _hook_io(lm, f"model.layers.{layer}.self_attn.{component}_proj", "output", ids)
    return out.view(B, T, -1, hd)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("component", ["q", "k", "v"])
def test_qkv_equals_the_projection_output_split_by_hand(arch, component):
    lm = tiny_lm(arch)
    ids = torch.randint(3, 97, (2, 5), generator=torch.Generator().manual_seed(0))
    want = _qkv_by_hand(lm, arch, component, 1, ids)  # (B, T, n, hd)
    n = lm.spec.n_heads if component == "q" else n_kv_heads(lm)
    assert want.shape[2] == n
    whole = collect(lm, ids, at=Site(component, 1, span(0, 5)))
    torch.testing.assert_close(whole, want.reshape(2, 5, -1), atol=1e-5, rtol=0)
    for h in range(n):
        with options(backend="hooks"):
            got = collect(lm, ids, at=Site(component, 1, span(0, 5), head=h))
        torch.testing.assert_close(got, want[:, :, h], atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_mlp_hidden_is_the_down_projection_input(arch):
    lm = tiny_lm(arch)
    ids = torch.randint(3, 97, (2, 5), generator=torch.Generator().manual_seed(0))
    path = {"gpt2": "transformer.h.0.mlp.c_proj", "gpt_neox": "gpt_neox.layers.0.mlp.dense_4h_to_h"}
    want = _hook_io(lm, path.get(arch, "model.layers.0.mlp.down_proj"), "input", ids)
    assert want.shape[-1] == {"gpt2": 128}.get(arch, 64) == resolve(lm, Site("mlp_hidden", 0)).width
    for backend in ("nnsight", "hooks"):
        with options(backend=backend):
            got = collect(lm, ids, at=Site("mlp_hidden", 0, span(0, 5)))
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def _left_padded():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 97, (3, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # row 1: 4 real tokens after 2 pads; row 2: 1 pad
    mask[2, :1] = 0
    return ids, mask


@pytest.mark.parametrize("arch", ARCHS)
def test_attn_pattern_rows_are_the_eager_attention_weights(arch):
    """Rows sum to 1 over the real keys (none on padding, none in the future), equal the weights eager attention
    returns with output_attentions=True, and the run leaves the model's attention implementation as it was."""
    lm = tiny_lm(arch)
    ids, mask = _left_padded()
    before = lm.hf.config._attn_implementation
    batch = {"input_ids": ids, "attention_mask": mask}
    real = mask.bool()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as the engine counts them (GPT-2's are absolute)
    pos = span(0, 4)  # every row has 4 real tokens or more: their columns in the padded batch are
    cols = pos.resolve(mask)  # (B, 4)
    rows = torch.arange(3)[:, None]
    for layer in range(lm.n_layers):
        lm.hf.config._attn_implementation = "eager"
        try:
            with torch.no_grad():
                out = lm.hf(input_ids=ids, attention_mask=mask, position_ids=positions, output_attentions=True)
        finally:
            lm.hf.config._attn_implementation = before
        want = out.attentions[layer].transpose(1, 2)[rows, cols]  # (B, H, T, T) -> (B, 4, H, T) at the rows read
        for backend in ("nnsight", "hooks"):
            with options(backend=backend):
                got = collect(lm, batch, at=Site("attn_pattern", layer, pos))  # (B, 4, H, T)
            assert lm.hf.config._attn_implementation == before
            torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
            sums = (got * mask[:, None, None, :]).sum(-1)  # over the real keys
            torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-5, rtol=0)
            assert (got * (~real)[:, None, None, :]).abs().max() < 1e-6  # no mass on padding
            future = torch.arange(6)[None, None, None, :] > cols[:, :, None, None]  # keys after the query
            assert (got * future).abs().max() < 1e-6
            with options(backend=backend):
                one = collect(lm, batch, at=Site("attn_pattern", layer, last(), head=2))  # (B, 1, T)
                every = collect(lm, batch, at=Site("attn_pattern", layer, last()))  # (B, 1, H, T)
            torch.testing.assert_close(one, every[:, :, 2], atol=0, rtol=0)


@pytest.mark.parametrize("backend", ["nnsight", "hooks"])
@pytest.mark.parametrize("arch", ARCHS)
def test_writing_a_pattern_sets_what_the_head_reads(arch, backend):
    """Patch head h's last-token row to all mass on token 1: the head's output there (the output projection's
    input) becomes that token's value vector of the key/value head h reads (kv_group)."""
    from interp.engine import Batch, Op, execute

    lm = tiny_lm(arch)
    ids = torch.randint(3, 97, (2, 5), generator=torch.Generator().manual_seed(0))
    batch = Batch(ids, torch.ones_like(ids))
    for h in range(lm.spec.n_heads):

        def one_hot(p):  # (n, k, T) -> all mass on key 1
            return torch.zeros_like(p).index_fill(-1, torch.tensor([1]), 1.0)

        sites = [
            Site("v", 1, at(1), head=kv_group(lm, h)),
            Site("attn_pattern", 1, last(), head=h),
            Site("head", 1, last(), head=h),
            Site("attn_pattern", 1, last(), head=h),
        ]
        ops = [Op(s, resolve(lm, s), s.pos.resolve(batch.attention_mask), read=True) for s in sites]
        ops[1].fn, ops[1].read = one_hot, False
        v, _, head_out, pattern = execute(lm, batch, ops, backend=backend).reads
        torch.testing.assert_close(pattern, one_hot(pattern))  # the read after the write sees the write
        torch.testing.assert_close(head_out, v, atol=1e-6, rtol=0)
    assert lm.hf.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_gqa_a_key_head_serves_exactly_the_query_heads_that_share_it(arch):
    """Zeroing key/value head j's keys makes the scores of the query heads in query_heads(lm, j) zero (uniform
    attention over the real keys) and leaves every other head's pattern as it was."""
    from interp.engine import Batch, Op, execute

    lm = tiny_lm(arch)
    H, kv = lm.spec.n_heads, n_kv_heads(lm)
    assert kv < H and [kv_group(lm, h) for h in range(H)] == [h // (H // kv) for h in range(H)]
    assert sum((query_heads(lm, j) for j in range(kv)), ()) == tuple(range(H))
    ids = torch.randint(3, 97, (2, 5), generator=torch.Generator().manual_seed(0))
    batch = Batch(ids, torch.ones_like(ids))
    pattern = Site("attn_pattern", 1, span(0, 5))  # layer 1: full attention (Gemma 3's layer 0 slides)
    plain = collect(lm, ids, at=pattern)  # (B, T, H, T)
    for j in range(kv):
        k = Site("k", 1, span(0, 5), head=j)
        ops = [
            Op(k, resolve(lm, k), k.pos.resolve(batch.attention_mask), fn=torch.zeros_like),
            Op(pattern, resolve(lm, pattern), pattern.pos.resolve(batch.attention_mask), read=True),
        ]
        got = execute(lm, batch, ops, backend="hooks").reads[1]
        causal = torch.ones(5, 5).tril()
        uniform = (causal / causal.sum(-1, keepdim=True)).expand(2, 5, 5)  # (B, query, key)
        for h in range(H):
            if h in query_heads(lm, j):
                torch.testing.assert_close(got[:, :, h], uniform, atol=1e-6, rtol=0)
            else:
                torch.testing.assert_close(got[:, :, h], plain[:, :, h], atol=1e-6, rtol=0)


def test_gpt2_and_neox_have_one_key_head_per_query_head():
    for arch in ("gpt2", "gpt_neox"):
        lm = tiny_lm(arch)
        assert n_kv_heads(lm) == lm.spec.n_heads and [kv_group(lm, h) for h in range(4)] == [0, 1, 2, 3]


@pytest.mark.parametrize("arch,component", INNER)
def test_every_inner_site_resolves_and_round_trips(arch, component):
    """Each inner site reads (B, k, width) (the pattern (B, k, H, T)); writing back what was read is a no-op."""
    from interp import Interchange, intervene

    lm = tiny_lm(arch)
    ids = torch.randint(3, 97, (2, 5), generator=torch.Generator().manual_seed(0))
    site = Site(component, 1, first(2) + last(1))
    h = collect(lm, ids, at=site)
    width = resolve(lm, site).width
    assert h.shape == ((2, 3, lm.spec.n_heads, 5) if component == "attn_pattern" else (2, 3, width))
    assert torch.isfinite(h).all() and h.abs().sum() > 0
    out = intervene(lm, ids, at=site, via=Interchange(), sources=[h])
    torch.testing.assert_close(out.logits, lm.hf(input_ids=ids).logits[:, -1], atol=1e-5, rtol=0)
