"""DII properties on tiny random models of every architecture."""

import pytest
import torch
from conftest import tiny_lm

from interp import (
    BasisError,
    InputError,
    LowRankRotation,
    Mean,
    PositionError,
    Rotation,
    Site,
    SiteError,
    Steer,
    Zero,
    at,
    collect,
    interchange,
    intervene,
    last,
)
from interp.engine import Batch, Op, execute


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


class CountForwards:
    def __init__(self, lm):
        self.n = 0
        self.h = lm.hf.register_forward_pre_hook(lambda *_: setattr(self, "n", self.n + 1))


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        (dict(source=torch.randint(3, 97, (3, 5))), InputError, "base has 2 examples but source has 3"),
        (dict(via=LowRankRotation(16, 2)), BasisError, "width 16 but the site's vectors have width 32"),
        (dict(at=Site("resid_post", 0, at(7))), PositionError, "prompt 0 has only 5 tokens"),
        (dict(at=Site("resid_post", 9)), SiteError, "layer 9 is out of range"),
        (dict(at=Site("head", 0, head=7)), SiteError, "head 7 is out of range"),
        (dict(at=Site("mlp", 0)), SiteError, "unknown component 'mlp'"),
    ],
)
def test_bad_input_fails_before_any_forward_pass(kwargs, err, match):
    lm = tiny_lm("llama")
    call = dict(base=torch.randint(3, 97, (2, 5)), source=torch.randint(3, 97, (2, 5)), at=Site("resid_post", 0))
    call.update(kwargs)
    counter = CountForwards(lm)
    with pytest.raises(err, match=match):
        interchange(lm, **call)
    assert counter.n == 0
