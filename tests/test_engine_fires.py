"""Every edit fires exactly once, or the run fails naming it: each path is broken on purpose (a hooked module the
forward skips, a site the architecture routes around, a stand-in layer in the way, an op registered twice, a
module run twice in a forward or a generation step), and the normal paths (DII, patching, DAS with prefix replay,
ReFT training and generation) never raise."""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch
from conftest import ARCHS, randomize, tiny_lm

import interp
import reft
from interp import Site, Zero, first, generated, last
from interp.arch import ARCHITECTURES, architecture
from interp.causal import Pairs
from interp.engine import Op, execute, options, swapped
from interp.errors import EditNotAppliedError
from interp.fastpatch import CleanRun
from interp.inputs import encode
from interp.patching import patch_grid
from interp.replay import PrefixCache
from interp.sites import resolve

BASE = torch.randint(3, 97, (3, 6), generator=torch.Generator().manual_seed(0))


def _op(lm, site, *, fn=lambda h: h * 0, read=False):
    batch = encode(lm, BASE)
    return Op(site, resolve(lm, site), site.pos.resolve(batch.attention_mask), fn=fn, read=read)


def _run(lm, ops, backend):
    batch = encode(lm, BASE)
    return execute(lm, batch, ops, logits_at=last().resolve(batch.attention_mask), backend=backend)


def _skip_layer(monkeypatch, lm, layer):
    """The decoder layer passes its input on: nothing inside it (attention, MLP) runs."""
    mod = lm.hf.get_submodule(f"{architecture(lm).layers}.{layer}")
    monkeypatch.setattr(mod, "forward", types.MethodType(lambda self, h, *a, **k: h, mod))


def _mlp_twice(monkeypatch, lm, layer, *, when=lambda h: True):
    """The decoder layer calls its MLP a second time (on the same input) whenever ``when(hidden_states)``."""
    mod = lm.hf.get_submodule(f"{architecture(lm).layers}.{layer}")
    inner = mod.forward

    def forward(self, h, *a, **k):
        if when(h):
            self.mlp(self.post_attention_layernorm(h))
        return inner(h, *a, **k)

    monkeypatch.setattr(mod, "forward", types.MethodType(forward, mod))


def hooked_module_skipped(monkeypatch, backend):
    lm = tiny_lm("llama")
    _skip_layer(monkeypatch, lm, 1)
    _run(lm, [_op(lm, Site("mlp_out", 1, last()))], backend)


def site_routed_around(monkeypatch, backend):
    """A site-table entry naming a module this architecture never calls."""
    lm = tiny_lm("llama")
    lm.hf.model.layers[1].add_module("unused", torch.nn.Identity())
    entry = dataclasses.replace(ARCHITECTURES["LlamaForCausalLM"], mlp_out=("unused", "output"))
    monkeypatch.setitem(ARCHITECTURES, "LlamaForCausalLM", entry)
    with options(backend=backend):
        interp.intervene(lm, BASE, at=Site("mlp_out", 1, last()), via=Zero())


def stand_in_replay(monkeypatch, backend):
    """Prefix replay stands in for layer 0, and an op addresses something inside it."""
    lm = tiny_lm("llama")
    batch = encode(lm, BASE)
    cache = PrefixCache.collect(lm, list(BASE), layer=1)
    with cache.replay(lm, [0, 1, 2], batch):
        _run(lm, [_op(lm, Site("mlp_out", 0, last()))], backend)


def stand_in_cached_cell(monkeypatch, backend):
    """A cached patching cell skips layers 0..1 and is handed an op at layer 0's input."""
    lm = tiny_lm("llama")
    batch = encode(lm, BASE)
    clean = CleanRun.of(lm, batch, upto=2)
    clean.logits(lm, [_op(lm, Site("resid_pre", 0, last()))], layer=2, logits_at=last().resolve(batch.attention_mask))


def listed_twice(monkeypatch, backend):
    lm = tiny_lm("llama")
    op = _op(lm, Site("resid_post", 0, last()))
    _run(lm, [op, op], backend)


def hooked_twice(monkeypatch, backend):
    """An op hooked by an enclosing run and handed to the engine again."""
    lm = tiny_lm("llama")
    op = _op(lm, Site("resid_post", 0, last()))
    with interp.engine.hooked(lm, [op]):
        _run(lm, [op], backend)


def module_ran_twice(monkeypatch, backend):
    lm = tiny_lm("llama")
    _mlp_twice(monkeypatch, lm, 1)
    _run(lm, [_op(lm, Site("mlp_out", 1, last()))], backend)


def generation_step_twice(monkeypatch, backend):
    """A decoding step runs the MLP twice: the decode-time edit there would apply twice."""
    lm = tiny_lm("llama")
    rlm = randomize(reft.attach(lm, {Site("mlp_out", 1, generated()): reft.LoReFT(lm.d_model, rank=2)}))
    _mlp_twice(monkeypatch, lm, 1, when=lambda h: h.shape[1] == 1)
    reft.generate_ids(rlm, BASE.tolist(), max_new_tokens=3)


def generation_step_skips(monkeypatch, backend):
    """The layer of a decode-time edit does not run in the decoding steps."""
    lm = tiny_lm("llama")
    rlm = randomize(reft.attach(lm, {Site("mlp_out", 1, first(1) + generated()): reft.LoReFT(lm.d_model, rank=2)}))
    mod = lm.hf.model.layers[1]
    inner = mod.forward
    skip_steps = types.MethodType(lambda self, h, *a, **k: h if h.shape[1] == 1 else inner(h, *a, **k), mod)
    monkeypatch.setattr(mod, "forward", skip_steps)
    reft.generate_ids(rlm, BASE.tolist(), max_new_tokens=3)


# (case, backends it applies to, what the error must say besides the op's site)
BROKEN = [
    (hooked_module_skipped, ("hooks", "nnsight"), r"edit op 0 at Site\('mlp_out', 1, last\(\)\).*fired 0 times"),
    (site_routed_around, ("hooks", "nnsight"), r"edit op 0 at Site\('mlp_out', 1, last\(\)\) \(model.layers.1.unused"),
    (stand_in_replay, ("hooks", "nnsight"), r"Site\('mlp_out', 0, last\(\)\).*inside model.layers.0.*prefix replay"),
    (stand_in_cached_cell, ("hooks",), r"Site\('resid_pre', 0, last\(\)\).*stand-in.*cached patching cell"),
    (listed_twice, ("hooks", "nnsight"), r"edit op 1 at Site\('resid_post', 0, last\(\)\).*listed twice"),
    (hooked_twice, ("hooks",), r"edit op 0 at Site\('resid_post', 0, last\(\)\).*hooked on this model already"),
    (module_ran_twice, ("hooks",), r"edit op 0 at Site\('mlp_out', 1, last\(\)\).*fired 2 times"),
    (generation_step_twice, ("hooks",), r"Site\('mlp_out', 1, generated\(\)\).*fired 2 times in a decoding step"),
    (generation_step_skips, ("hooks",), r"Site\('mlp_out', 1, first\(1\)\+generated\(\)\).*fired 0 times in a decod"),
]


@pytest.mark.parametrize(
    "case,backend,match",
    [(c, b, m) for c, backends, m in BROKEN for b in backends],
    ids=[f"{c.__name__}-{b}" for c, backends, _ in BROKEN for b in backends],
)
def test_a_broken_path_raises_naming_the_op_and_site(monkeypatch, case, backend, match):
    with pytest.raises(EditNotAppliedError, match=match):
        case(monkeypatch, backend)


def test_nothing_is_left_behind_after_a_refusal(monkeypatch):
    lm = tiny_lm("llama")
    count = lambda: sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in lm.hf.modules())  # noqa: E731
    before, layers = count(), list(lm.hf.model.layers)
    op = _op(lm, Site("resid_post", 0, last()))
    for ops in ([op, op], [_op(lm, Site("resid_pre", 0, last()))]):
        with pytest.raises(EditNotAppliedError):
            CleanRun.of(lm, encode(lm, BASE), upto=2).logits(lm, ops, layer=2, logits_at=torch.full((3, 1), 5))
    assert count() == before and list(lm.hf.model.layers) == layers
    _run(lm, [op], "hooks")  # the op is free to run again


# ---- the normal paths never raise -----------------------------------------------------------------------------


def _pairs(lm):
    g = torch.Generator().manual_seed(1)
    base, source = torch.randint(3, 97, (4, 5), generator=g), torch.randint(3, 97, (4, 5), generator=g)
    return Pairs.of(encode(lm, base), encode(lm, source), base_answer=[5] * 4, source_answer=[6] * 4)


@pytest.mark.parametrize("arch", ARCHS)
def test_normal_analysis_paths_fire_once(arch):
    lm = tiny_lm(arch)
    src = torch.randint(3, 97, (3, 6), generator=torch.Generator().manual_seed(3))
    for backend in interp.engine.BACKENDS:
        with options(backend=backend):
            interp.interchange(lm, BASE, src, at=Site("mlp_out", 1, last()))
            interp.collect(lm, BASE, at=Site("resid_pre", 0, first(2)))
    pairs = _pairs(lm)
    kw = dict(layers=[0, 1], positions={"last": last()}, component="mlp_out", progress=False)
    cached, full = patch_grid(lm, pairs, **kw), patch_grid(lm, pairs, method="full", **kw)
    assert cached.meta["method"] == "cached"
    torch.testing.assert_close(cached.values, full.values, atol=1e-4, rtol=0)


def test_das_with_prefix_replay_and_reft_train_and_generate_fire_once():
    lm = tiny_lm("llama")
    g = torch.Generator().manual_seed(1)
    base, source = (torch.randint(3, 97, (4, 5), generator=g).tolist() for _ in range(2))
    pairs = Pairs.of(base, source, base_answer=[5] * 4, source_answer=[6] * 4)
    interp.fit_das(lm, pairs, at=Site("resid_post", 1, last()), rank=2, steps=2, progress=False)  # prefix replay
    site = Site("resid_post", 1, first(1) + last(1) + generated())
    rlm = randomize(reft.attach(lm, {site: reft.LoReFT(lm.d_model, rank=2)}))
    examples = [{"prompt_ids": p, "response_ids": [5, 6]} for p in BASE.tolist()]
    reft.train_reft(rlm, examples, reft.TrainConfig(steps=2, batch_size=2, progress=False))
    assert reft.generate_ids(rlm, BASE.tolist(), max_new_tokens=3).new_ids.shape == (3, 3)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_cached_cell_runs_the_last_mlp_at_the_read_columns_only(arch):
    """With no edit in the last layer, its MLP (the module itself: on Gemma 2/3 ``mlp_out`` is the norm after it)
    sees one column per row; the logits equal the full run's."""
    lm = tiny_lm(arch)
    batch = encode(lm, BASE)
    seen = []
    mlp = lm.hf.get_submodule(f"{architecture(lm).layers}.1.{architecture(lm).mlp}")
    handle = mlp.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    try:
        op = _op(lm, Site("resid_post", 0, interp.at(2)))
        at = last().resolve(batch.attention_mask)
        cached = CleanRun.of(lm, batch, upto=1).logits(lm, [op], layer=1, logits_at=at)
    finally:
        handle.remove()
    assert seen[-1] == (3, 1, lm.d_model)  # the last MLP ran at the one column read, not at tokens 2..5
    full = execute(lm, batch, [op], logits_at=at, backend="hooks").logits[:, 0]
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=0)


def test_swapped_restores_the_model_when_the_block_fails():
    lm = tiny_lm("gemma3")
    before = lm.hf.model.layers[0]
    with pytest.raises(RuntimeError), swapped(lm.hf, {"model.layers.0": torch.nn.Identity()}):
        raise RuntimeError("boom")
    assert lm.hf.model.layers[0] is before
