"""Every (architecture x component) pair resolves and round-trips; bad sites fail before any forward pass."""

import pytest
import torch
from conftest import ARCHS, tiny_lm

from interp import Site, SiteError, collect, interchange, last
from interp.sites import COMPONENTS, envoy

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


@pytest.mark.parametrize(
    "site,match",
    [
        (Site("resid_post", 2), "layer 2 is out of range"),
        (Site("resid_post", -1), "out of range"),
        (Site("resid_side", 0), "unknown component 'resid_side'"),
        (Site("head", 0, head=4), "head 4 is out of range"),
        (Site("head", 0), "head None is out of range"),
        (Site("mlp_out", 0, head=1), "head= applies only"),
        (Site.module("model.nothing.here"), "no module 'model.nothing.here'"),
    ],
)
def test_bad_sites_fail_clearly(site, match):
    lm = tiny_lm("llama")
    with pytest.raises(SiteError, match=match):
        collect(lm, torch.randint(3, 97, (2, 5)), at=site)


def test_unknown_architecture_points_to_escape_hatch():
    from transformers import BertConfig, BertForMaskedLM

    import interp

    lm = interp.LM(
        BertForMaskedLM(
            BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=97)
        )
    )
    with pytest.raises(SiteError, match=r"no site table for architecture 'BertForMaskedLM'.*Site.module"):
        collect(lm, torch.randint(3, 97, (2, 5)), at=Site("resid_post", 0))
    h = collect(lm, torch.randint(3, 97, (2, 5)), at=Site.module("bert.encoder.layer.1", last()))
    assert h.shape == (2, 1, 32)


def test_parallel_residual_has_no_resid_mid():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    import interp

    lm = interp.LM(
        GPTNeoXForCausalLM(
            GPTNeoXConfig(
                hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=64, vocab_size=97
            )
        )
    )
    with pytest.raises(SiteError, match="parallel residual"):
        interchange(lm, torch.randint(3, 97, (2, 5)), torch.randint(3, 97, (2, 5)), at=Site("resid_mid", 0))
