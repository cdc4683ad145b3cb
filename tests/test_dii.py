"""DII properties on tiny random models of every architecture."""

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import tiny_lm

from interp import (
    LowRankRotation,
    Mean,
    Rotation,
    Site,
    Steer,
    Zero,
    at,
    collect,
    encode,
    interchange,
    intervene,
    last,
    run,
)
from interp.batches import rows as batch_rows
from interp.engine import Batch, Op, execute
from interp.inputs import PaddingWarning


def pad(rows, side):
    """A Batch from token lists of different lengths, padded on ``side`` with token 0."""
    T = max(map(len, rows))
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, r in enumerate(rows):
        sl = slice(T - len(r), T) if side == "left" else slice(0, len(r))
        ids[b, sl], mask[b, sl] = torch.tensor(r), 1
    return Batch(ids, mask)


def rows(n, lo=3, hi=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(3, 97, (int(torch.randint(lo, hi, (1,), generator=g)),), generator=g).tolist() for _ in range(n)
    ]


def test_identical_source_is_a_noop(tiny):
    ids = torch.randint(3, 97, (3, 6))
    plain = tiny.hf(input_ids=ids).logits[:, -1]
    for via in (None, LowRankRotation(tiny.d_model, 3)):
        out = interchange(tiny, ids, ids, at=[Site("resid_post", 0, last()), Site("mlp_out", 1, at(2))], via=via)
        torch.testing.assert_close(out.logits, plain, atol=1e-5, rtol=1e-5)


def test_full_rank_interchange_equals_patching_the_whole_vector(tiny):
    base, source = torch.randint(3, 97, (3, 6)), torch.randint(3, 97, (3, 6))
    site = Site("resid_pre", 1, last())
    patched = interchange(tiny, base, source, at=site)
    rotated = interchange(tiny, base, source, at=site, via=Rotation(tiny.d_model))
    torch.testing.assert_close(rotated.logits, patched.logits, atol=1e-4, rtol=1e-4)
    # patching every position of the last layer's output gives the source's logits exactly
    from interp import span

    full = interchange(tiny, base, source, at=Site("resid_post", 1, span(0, 6)))
    torch.testing.assert_close(full.logits, tiny.hf(input_ids=source).logits[:, -1])


@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_dii_equals_a_loop_of_single_runs(tiny, side):
    base_rows, src_rows = rows(4, seed=1), rows(4, seed=2)
    R = LowRankRotation(tiny.d_model, 4)
    sites = [Site("resid_post", 0, last()), Site("attn_out", 1, at(1))]
    batched = interchange(tiny, pad(base_rows, side), pad(src_rows, side), at=sites, via=R).logits
    for b in range(4):
        one = interchange(tiny, pad([base_rows[b]], side), pad([src_rows[b]], side), at=sites, via=R).logits
        torch.testing.assert_close(batched[b : b + 1], one, atol=1e-5, rtol=1e-4)


def test_left_and_right_padding_agree(tiny):
    base_rows, src_rows = rows(3, seed=3), rows(3, seed=4)
    site = Site("resid_mid", 1, at(-2))
    left = interchange(tiny, pad(base_rows, "left"), pad(src_rows, "left"), at=site).logits
    right = interchange(tiny, pad(base_rows, "right"), pad(src_rows, "right"), at=site).logits
    torch.testing.assert_close(left, right, atol=1e-5, rtol=1e-4)


def test_read_only_trace_equals_plain_forward(tiny):
    b = pad(rows(3, seed=5), "left")
    ops_site = Site("resid_post", 0, last())
    from interp.dii import plan

    ops = [Op(s, t, p, read=True) for s, t, p in plan(tiny, b, [ops_site])]
    T = b.input_ids.shape[1]
    every = torch.arange(T).expand(3, T)
    plain = tiny.hf(**b.forward_kwargs())
    for backend in ("nnsight", "hooks"):
        out = execute(tiny, b, ops, logits_at=every, backend=backend)
        # our readout (final norm, then the unembedding as one matmul) vs HF's lm_head: same maths, and
        # tolerances far below what any edit moves (tests/test_conformance.py)
        torch.testing.assert_close(out.logits, plain.logits, atol=1e-5, rtol=1e-5)
        assert out.reads[0].shape == (3, 1, tiny.d_model)


def test_different_source_per_site_and_ablations():
    lm = tiny_lm("llama")
    base, s1, s2 = (torch.randint(3, 97, (2, 5)) for _ in range(3))
    sites = [Site("resid_post", 0, last()), Site("resid_post", 1, last())]
    out = interchange(lm, base, [s1, s2], at=sites)
    ref = interchange(lm, base, s2, at=sites[1])  # layer 1 overrides whatever layer 0 did at that position
    torch.testing.assert_close(out.logits, ref.logits)
    h = collect(lm, base, at=sites[0])
    zero = intervene(lm, base, at=sites[0], via=Zero())
    mean = intervene(lm, base, at=sites[0], via=Mean(torch.zeros(lm.d_model)))
    torch.testing.assert_close(zero.logits, mean.logits)
    steer = intervene(lm, base, at=sites[0], via=Steer(-h[0, 0], scale=0.0))
    torch.testing.assert_close(steer.logits, lm.hf(input_ids=base).logits[:, -1])


def test_metrics_on_logits():
    lm = tiny_lm("gpt2")
    out = intervene(lm, torch.randint(3, 97, (2, 5)), at=Site("resid_post", 0), via=Zero())
    assert out.logits.shape == (2, 97)
    top = out.logits.argmax(-1)
    assert out.accuracy(top) == 1.0
    torch.testing.assert_close(out.logit_diff(top, top), torch.zeros(2))
    assert (out.prob(top) > 0).all()


def test_answer_ids_may_be_numpy_and_top_k_gives_ids_without_a_tokenizer():
    lm = tiny_lm("llama")
    out = run(lm, torch.randint(3, 97, (2, 5)))
    top = out.predictions()
    assert out.accuracy(np.int64(top[0])) == out.accuracy(int(top[0]))  # one numpy id for every row
    assert out.accuracy(top.numpy()) == out.accuracy(top.tolist()) == 1.0  # an array of ids, one per row
    assert out.accuracy([np.int32(t) for t in top]) == 1.0
    torch.testing.assert_close(out.logit_diff(np.array([5, 6]), 6), out.logit_diff(torch.tensor([5, 6]), 6))
    ranked = out.top_k(3)
    assert [len(r) for r in ranked] == [3, 3] and all(isinstance(t, int) for r in ranked for t, _ in r)
    assert [r[0][0] for r in ranked] == top.tolist() and ranked[0][0][1] >= ranked[0][1][1]


def test_encode_pads_lists_of_token_ids_like_rows():
    lm = tiny_lm("llama")
    seqs = [[5, 6, 7], [8, 9], [10]]
    left, right = encode(lm, seqs), encode(lm, seqs, padding_side="right")
    want = batch_rows(lm, seqs)
    assert torch.equal(left.input_ids, want.input_ids) and torch.equal(left.attention_mask, want.attention_mask)
    assert right.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0], [1, 0, 0]]
    assert encode(lm, [5, 6, 7]).input_ids.tolist() == [[5, 6, 7]]  # one prompt of ids, like a (T,) tensor
    assert encode(lm, [torch.tensor([5, 6]), np.array([7])]).attention_mask.tolist() == [[1, 1], [0, 1]]
    site = Site("resid_post", 1, last())
    torch.testing.assert_close(collect(lm, left, at=site), collect(lm, right, at=site), atol=1e-5, rtol=0)


def _tokenizer(pad, bos=2, eos=1):
    tok = SimpleNamespace(pad_token_id=pad, bos_token_id=bos, eos_token_id=eos)
    return SimpleNamespace(device="cpu", tokenizer=tok)


@pytest.mark.parametrize(
    "lm,ids",
    [
        (_tokenizer(pad=None), [[0, 0, 5], [6, 7, 8]]),  # no pad id known: nothing to say
        (_tokenizer(pad=0), [[5, 0, 6], [6, 7, 8]]),  # the pad id inside a row is not padding
        (_tokenizer(pad=2, bos=2), [[2, 5, 6], [2, 7, 8]]),  # pad = bos: one leading bos is the real one
        (_tokenizer(pad=1, eos=1), [[5, 6, 1], [7, 8, 1]]),  # pad = eos: one trailing eos is the real one
    ],
)
def test_unmasked_ids_warn_only_when_they_look_padded(lm, ids):
    with warnings.catch_warnings():
        warnings.simplefilter("error", PaddingWarning)
        encode(lm, {"input_ids": ids})
        encode(lm, torch.tensor(ids))
        encode(lm, {"input_ids": [[0, 0, 5], [1, 2, 2]], "attention_mask": [[0, 0, 1], [1, 1, 1]]})  # a mask: fine
        encode(lm, [[5], [6, 7]])  # lists of ids are padded here, with a mask
    with pytest.warns(PaddingWarning, match="pad id 2"):
        encode(_tokenizer(pad=2, bos=2), torch.tensor([[2, 2, 5], [2, 7, 8]]))  # two leading: padding
