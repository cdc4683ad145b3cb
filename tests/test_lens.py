"""Caches and the logit lens on tiny random models of every architecture (and one check on the real model)."""

from __future__ import annotations

import matplotlib
import pytest
import torch
from conftest import ARCHS, tiny_lm

import interp
import reft
from interp import InputError, Site, at, cache, collect, first, last, logit_lens
from interp.engine import options
from interp.viz import plot_logit_lens

matplotlib.use("Agg")


def _ids(seed: int, n: int = 3, T: int = 6) -> torch.Tensor:
    return torch.randint(3, 97, (n, T), generator=torch.Generator().manual_seed(seed))


def _ragged() -> dict:
    """Three left-padded prompts of 6, 4 and 5 tokens."""
    g = torch.Generator().manual_seed(1)
    ids, mask = torch.zeros(3, 6, dtype=torch.long), torch.zeros(3, 6, dtype=torch.long)
    for b, n in enumerate((6, 4, 5)):
        ids[b, 6 - n :], mask[b, 6 - n :] = torch.randint(3, 97, (n,), generator=g), 1
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("arch", ARCHS)
def test_cache_equals_collect(arch):
    lm = tiny_lm(arch)
    sites = [
        Site("resid_pre", 0, first(2)),
        Site("attn_out", 0, last()),
        Site("head", 1, at(2), head=3),
        Site("mlp_out", 1, last(2)),
        Site("resid_post", 1, at(0)),
    ]
    for inputs in (_ids(0), _ragged()):
        acts = cache(lm, inputs, at=sites)
        assert list(acts) == sites
        for site, ref in zip(sites, collect(lm, inputs, at=sites)):
            torch.testing.assert_close(acts[site], ref, atol=0, rtol=0)
            torch.testing.assert_close(acts[site], collect(lm, inputs, at=site), atol=1e-6, rtol=1e-6)
    assert list(cache(lm, _ids(0), at=sites[1])) == [sites[1]]  # one Site, still a mapping
    assert list(cache(lm, _ids(0), at=[sites[1], sites[1]])) == [sites[1]]  # asked twice: read once


def test_cache_stops_after_its_last_site():
    lm = tiny_lm("llama")
    calls = []
    handle = lm.hf.model.layers[1].mlp.register_forward_hook(lambda *_: calls.append(1))  # runs inside layer 1
    try:
        for backend in ("nnsight", "hooks"):
            with options(backend=backend):
                cache(lm, _ids(0), at=[Site("resid_post", 0, last())])
        assert calls == []  # layer 1 never ran
        cache(lm, _ids(0), at=[Site("resid_post", 1, last())])
        assert calls == [1]
    finally:
        handle.remove()


@pytest.mark.parametrize("arch", ARCHS)
def test_logit_lens_at_the_last_layer_is_the_model(arch):
    lm = tiny_lm(arch)
    for inputs in (_ids(0), _ragged()):
        batch = interp.encode(lm, inputs)
        lens = logit_lens(lm, inputs, pos=last(4))
        assert lens.logits.shape == (lm.n_layers, 3, 4, lm.spec.vocab_size) and lens.layers == list(range(lm.n_layers))
        with torch.no_grad():
            ref = lm.hf(**batch.forward_kwargs()).logits  # a plain HF forward: (B, T, V)
        rows = torch.arange(3)[:, None]
        torch.testing.assert_close(lens.logits[-1], ref[rows, lens.positions].float(), atol=1e-4, rtol=1e-4)
        # Earlier layers are not the output (the lens reads something else there).
        assert (lens.logits[0] - lens.logits[-1]).abs().max() > 1e-2


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_logit_lens_reads_each_layer_through_the_final_norm(arch):
    lm = tiny_lm(arch)
    lens = logit_lens(lm, _ids(0), layers=[0], pos=first(6))
    h = collect(lm, _ids(0), at=Site("resid_post", 0, first(6)))  # (B, 6, d)
    norm = lm.hf.get_submodule(interp.sites.architecture(lm).final_norm)
    with torch.no_grad():
        ref = lm.hf.get_submodule(interp.sites.architecture(lm).unembed)(norm(h))
    torch.testing.assert_close(lens.logits[0], ref, atol=1e-5, rtol=1e-5)


def test_prob_rank_and_top_k_agree():
    lm = tiny_lm("llama")
    lens = logit_lens(lm, _ids(0), pos=first(6))
    top = lens.logits.argmax(-1)  # (L, B, k)
    p = lens.probs()
    torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]), atol=1e-5, rtol=0)
    token = int(top[-1, 0, -1])
    assert lens.rank(token)[-1, 0, -1] == 0 and (lens.rank(token) >= 0).all()
    torch.testing.assert_close(lens.prob(token), p[..., token])
    per_row = [int(t) for t in top[-1, :, -1]]  # one answer per prompt
    assert (lens.rank(per_row)[-1, :, -1] == 0).all()
    best = lens.top_k(3)  # per layer, prompt 0 at its last position
    assert len(best) == lm.n_layers and best[-1][0][0] == token and best[-1][0][1] >= best[-1][1][1]
    with pytest.raises(InputError, match="k must be"):
        lens.top_k(0)


def test_logit_lens_under_a_reft_reads_the_edited_stream():
    lm = tiny_lm("llama")
    iv = reft.LoReFT(lm.d_model, rank=2)
    with torch.no_grad():
        iv.W.bias.add_(1.0)  # an edit that moves the output
    rlm = reft.attach(lm, {Site("resid_post", 0, last()): iv})
    edited = logit_lens(rlm, _ids(0))
    torch.testing.assert_close(edited.logits[-1, :, -1], interp.run(rlm, _ids(0)).logits, atol=1e-4, rtol=1e-4)
    assert (edited.logits[-1] - logit_lens(lm, _ids(0)).logits[-1]).abs().max() > 1e-3


def test_bad_inputs():
    lm = tiny_lm("llama")
    with pytest.raises(InputError, match="no sites"):
        cache(lm, _ids(0), at=[])
    with pytest.raises(InputError, match="no layers"):
        logit_lens(lm, _ids(0), layers=[])
    with pytest.raises(interp.SiteError, match="out of range"):
        logit_lens(lm, _ids(0), layers=[2])
    with pytest.raises(interp.PositionError):
        logit_lens(lm, _ids(0), pos=at(9))


def test_plot_logit_lens():
    ax = plot_logit_lens(torch.rand(2, 6), [0, 1], list("abcdef"), token=" Mary")
    assert ax.get_title() == "logit lens: p(' Mary')"
    ax = plot_logit_lens(torch.randint(0, 90, (2, 6)), [0, 1], list("abcdef"), kind="rank")
    assert ax.get_title() == "logit lens: rank"
    with pytest.raises(ValueError, match="kind must be"):
        plot_logit_lens(torch.rand(2, 6), [0, 1], list("abcdef"), kind="logit")


@pytest.mark.slow
def test_logit_lens_on_ioi_finds_the_answer_late(gemma):
    """Gemma-3-270M's last layer predicts the indirect object; its first layers' lens does not."""
    from interp.tasks import ioi_pairs

    pairs = ioi_pairs(4)
    lens = logit_lens(gemma, pairs.base)
    rank = lens.rank(pairs.base_answer)[:, :, -1]  # (layers, B)
    assert (rank[-1] == 0).all()
    assert (rank[0] > 0).all()
