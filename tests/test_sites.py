"""Every (architecture x component) pair resolves and round-trips; bad sites fail before any forward pass."""

import pytest
import torch
from conftest import ARCHS, tiny_lm

from interp import Site, collect, interchange, last
from interp.sites import COMPONENTS, envoy, resolve

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
    out = interchange(lm, base, source, at=site, via=R, backend=backend)

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
