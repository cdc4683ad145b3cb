"""ReFT training from a prefix cache (reft.cache) equals training through the whole model.

Steps that replay the stream entering the lowest intervened layer give the same losses and the same gradients on
the intervention (and head) parameters as full runs, whatever the batch order and padding; a few steps of
``train_reft`` give the same loss history both ways; sites where no cache applies fall back to full runs.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import randomize, sharp_llama, tiny_lm

import interp
import reft
from interp import Site, first, last
from interp import sites as _sites
from reft.cache import StreamCache, lowest_layer, replaying
from reft.data import ReftBatch, as_examples, collate, label_vocab, tokenize
from reft.train import response_loss

TOL = dict(atol=1e-5, rtol=1e-4)


def _examples(n=6, seed=1) -> list[dict]:
    """Prompts of 2..2+n-1 tokens, responses of 1..3: rows of unequal lengths, so batches pad."""
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "prompt_ids": [1] + torch.randint(3, 97, (1 + i,), generator=g).tolist(),
            "response_ids": [5, 6, 7][: 1 + i % 3],
        }
        for i in range(n)
    ]


def _left(rb: ReftBatch) -> ReftBatch:
    """The same rows left-padded: each row shifted right by its padding, prompt starts and pred_at with it."""
    ids, mask = rb.batch.input_ids, rb.batch.attention_mask
    T = ids.shape[1]
    n = mask.sum(-1)
    new_ids, new_mask = torch.zeros_like(ids), torch.zeros_like(mask)
    for b in range(len(rb)):
        s = T - int(n[b])
        new_ids[b, s:], new_mask[b, s:] = ids[b, : n[b]], 1
    shift = (T - n)[:, None]
    return dataclasses.replace(
        rb,
        batch=interp.engine.Batch(new_ids, new_mask),
        starts=(T - n).tolist(),
        pred_at=rb.pred_at + shift,
    )


def _step(rlm, rb, idx=None, cache=None):
    """Loss and gradients (on every trainable parameter) of one batch, replayed from ``cache`` when given."""
    for p in rlm.trainable_parameters():
        p.grad = None
    with replaying(cache, idx, rb):
        loss = response_loss(rlm.logits(rb), rb)
    loss.backward()
    return loss.detach(), [p.grad.detach().clone() for p in rlm.trainable_parameters()]


def _same_step(rlm, rows, idx, cache, vocab=None, side="right"):
    rb = collate(rlm.lm, [rows[i] for i in idx], vocab)
    rb = _left(rb) if side == "left" else rb
    full_loss, full_grads = _step(rlm, rb)
    loss, grads = _step(rlm, rb, idx, cache)
    torch.testing.assert_close(loss, full_loss, **TOL)
    assert len(grads) == len(full_grads) and any(g.abs().max() > 1e-4 for g in full_grads)
    for g, f in zip(grads, full_grads):
        torch.testing.assert_close(g, f, **TOL)
    return full_loss


PLACEMENTS = {  # name: (interventions, the layer whose input is cached)
    "resid_post 2": (lambda lm: {Site("resid_post", 2, first(1) + last(1)): reft.LoReFT(lm.d_model, 4)}, 3),
    "resid_post 0": (lambda lm: {Site("resid_post", 0, first(1) + last(1)): reft.LoReFT(lm.d_model, 4)}, 1),
    "two layers, untied": (lambda lm: reft.at_layers(lm, [1, 3], pos=first(2) + last(1), rank=3), 2),
    "resid_pre and mlp_out": (
        lambda lm: {
            Site("resid_pre", 2, last(2)): reft.LoReFT(lm.d_model, 2),
            Site("mlp_out", 3, first(1)): reft.DiReFT(lm.d_model, 2),
        },
        2,
    ),
    "attn_out and resid_post, one layer": (
        lambda lm: {
            Site("attn_out", 1, last(1)): reft.LoReFT(lm.d_model, 2),
            Site("resid_post", 1, first(1)): reft.LoReFT(lm.d_model, 2),
        },
        1,
    ),
}


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("name", sorted(PLACEMENTS))
def test_cached_step_equals_full_step(name, side):
    lm = sharp_llama(4)
    make, layer = PLACEMENTS[name]
    rlm = reft.attach(lm, make(lm), tied=name != "two layers, untied")
    randomize(rlm, head=True)
    rows = tokenize(lm, as_examples(_examples()))
    cache = StreamCache.for_model(rlm, rows)
    assert cache is not None and cache.layer == lowest_layer(rlm) == layer
    cache.fill(range(len(rows)))  # all at once: one padding, replayed below in batches padded otherwise
    assert cache.filled == len(rows)
    assert cache.nbytes == sum(len(r.prompt) + len(r.response) for r in rows) * lm.d_model * 4
    for idx in ([4, 0, 2], [1], [5, 3, 1, 0]):  # shuffled, subsets: indexed by example id
        _same_step(rlm, rows, idx, cache, side=side)


@pytest.mark.parametrize("arch", ["gpt2", "qwen2", "gemma3", "gpt_neox"])
def test_cached_step_equals_full_step_on_each_architecture(arch):
    lm = tiny_lm(arch)
    rlm = reft.attach(lm, {Site("resid_post", 1, first(1) + last(1)): reft.LoReFT(lm.d_model, 4)})
    randomize(rlm, head=True)
    rows = tokenize(lm, as_examples(_examples()))
    cache = StreamCache.for_model(rlm, rows)  # filled on demand: each batch caches its new examples
    for idx in ([3, 1], [0, 5, 1], [2, 4]):
        _same_step(rlm, rows, idx, cache)
    assert cache.filled == len(rows)


def test_cached_step_with_a_classifier_head():
    lm = sharp_llama(3)
    words = {0: 5, 1: 6, 2: 7}
    g = torch.Generator().manual_seed(0)
    data = [
        {"prompt": tuple(torch.randint(10, 97, (3 + i % 4,), generator=g).tolist()), "label": i % 3} for i in range(6)
    ]
    head = reft.ClassifierHead.from_label_words(lm, words)
    rlm = reft.attach(lm, {Site("resid_post", 2, last()): reft.LoReFT(32, 4)}, head=head)
    randomize(rlm, head=True)
    rows = tokenize(lm, as_examples(data, label_words=words), label_words=words)
    vocab = label_vocab(lm, words)
    cache = StreamCache.for_model(rlm, rows, vocab)
    for idx in ([2, 0, 5], [4, 1, 3]):
        _same_step(rlm, rows, idx, cache, vocab)
    assert any(p is rlm.head.weight for p in rlm.trainable_parameters())  # the head's gradients were compared too


def test_replay_skips_the_layers_below_and_restores_them():
    lm = sharp_llama(4)
    rlm = reft.attach(lm, {Site("resid_post", 2, last()): reft.LoReFT(lm.d_model, 4)})
    rows = tokenize(lm, as_examples(_examples()))
    cache = StreamCache.for_model(rlm, rows)
    interp.engine.execution_order(lm)  # found once with a full forward; not counted below
    layers = lm.hf.get_submodule(_sites.architecture(lm).layers)
    before = list(layers)
    calls = [0] * len(layers)
    handles = [
        m.register_forward_hook(lambda *a, i=i: calls.__setitem__(i, calls[i] + 1)) for i, m in enumerate(layers)
    ]
    try:
        rb = collate(lm, [rows[i] for i in [0, 1]])
        _step(rlm, rb, [0, 1], cache)  # fills 0, 1 (layers 0, 1 run once), then replays
        assert calls == [1, 1, 1, 1]  # resid_post 2 is layer 3's input: layers 0..2 run to fill
        _step(rlm, rb, [0, 1], cache)  # cached: only layer 3 runs; the edit is on the replayed stream
        assert calls == [1, 1, 1, 2]
    finally:
        for h in handles:
            h.remove()
    assert list(layers) == before


def _train(lm, make, cache_prefix, **kw):
    rlm = reft.attach(lm, make(lm))
    cfg = reft.TrainConfig(steps=6, batch_size=3, lr=2e-2, progress=False, cache_prefix=cache_prefix, **kw)
    hist = reft.train_reft(rlm, _examples(5), cfg, eval_examples=_examples(5))
    return hist, [p.detach().clone() for p in rlm.trainable_parameters()]


@pytest.mark.parametrize(
    ("component", "layer", "cached"),
    [("resid_post", 2, True), ("resid_post", 0, True), ("resid_pre", 0, False)],  # resid_pre 0: nothing to skip
)
def test_training_gives_the_same_history_with_and_without_the_cache(component, layer, cached, monkeypatch):
    lm = sharp_llama(4)
    replays = []
    real = StreamCache.replay
    monkeypatch.setattr(StreamCache, "replay", lambda self, idx, rb: replays.append(list(idx)) or real(self, idx, rb))

    def make(lm):
        return {
            Site(component, layer, first(1) + last(1)): reft.LoReFT(lm.d_model, 4),
            Site("resid_post", 3, last()): reft.DiReFT(lm.d_model, 2),
        }

    torch.manual_seed(0)
    on, on_params = _train(lm, make, True, grad_accum=2)  # 5 examples in batches of 3: partial batches pad
    torch.manual_seed(0)
    assert len(replays) == (12 if cached else 0)  # 6 steps x 2 micro-batches replayed, or no cache applies
    off, off_params = _train(lm, make, False, grad_accum=2)
    assert len(replays) == (12 if cached else 0)  # cache_prefix=False: none
    assert len(on.losses) == len(off.losses) == 6 and on.losses[-1] < on.losses[0]
    torch.testing.assert_close(torch.tensor(on.losses), torch.tensor(off.losses), **TOL)
    assert on.response_tokens == off.response_tokens
    torch.testing.assert_close(torch.tensor(on.evals[-1][1]["loss"]), torch.tensor(off.evals[-1][1]["loss"]), **TOL)
    for a, b in zip(on_params, off_params):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_no_cache_where_it_does_not_apply():
    lm = sharp_llama(4)
    rows = tokenize(lm, as_examples(_examples()))
    at0 = reft.attach(lm, {Site("resid_pre", 0, last()): reft.LoReFT(lm.d_model, 2)})
    mixed = reft.attach(lm, reft.at_layers(lm, [0, 2], rank=2, component="mlp_out"))  # inside layer 0: no skip
    assert lowest_layer(at0) is None and StreamCache.for_model(at0, rows) is None
    assert lowest_layer(mixed) is None and StreamCache.for_model(mixed, rows) is None
    rb = collate(lm, rows[:2])
    loss, _ = _step(at0, rb, [0, 1], None)  # replaying(None, ...) is a no-op
    assert torch.isfinite(loss)


def test_cache_prefix_config_round_trips_and_old_configs_load():
    cfg = reft.TrainConfig(steps=3, cache_prefix=False)
    assert cfg.to_dict()["cache_prefix"] is False
    assert reft.TrainConfig.from_dict(cfg.to_dict()) == cfg
    old = {k: v for k, v in reft.TrainConfig(steps=3).to_dict().items() if k != "cache_prefix"}
    assert reft.TrainConfig.from_dict(old).cache_prefix is True
