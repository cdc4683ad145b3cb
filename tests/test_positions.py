"""Typed positions resolve per example, identically under left and right padding."""

import pytest
import torch

import interp
from interp import at, first, last, span, token


def mask(lengths, T, side):
    m = torch.zeros(len(lengths), T, dtype=torch.long)
    for b, n in enumerate(lengths):
        if side == "left":
            m[b, T - n :] = 1
        else:
            m[b, :n] = 1
    return m


@pytest.mark.parametrize("side", ["left", "right"])
def test_positions_count_real_tokens_only(side):
    m = mask([3, 5], 5, side)
    off = [2, 0] if side == "left" else [0, 0]  # where each row's real tokens start
    cases = {
        last(): [[2], [4]],
        first(2): [[0, 1], [0, 1]],
        at(1): [[1], [1]],
        at(-2): [[1], [3]],
        span(0, 2): [[0, 1], [0, 1]],
        first(1) + last(1): [[0, 2], [0, 4]],
    }
    for pos, local in cases.items():
        want = torch.tensor([[i + off[b] for i in row] for b, row in enumerate(local)])
        assert torch.equal(pos.resolve(m), want), pos


def test_token_matched_position_finds_the_kth_occurrence():
    class Tok:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) for c in text]}

        def decode(self, ids):
            return "".join(map(chr, ids))

    ids = torch.tensor([[0, 0] + [ord(c) for c in "abcab"], [ord(c) for c in "xxabyab"]])
    m = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7])
    assert token("ab").resolve(m, ids, Tok()).tolist() == [[3], [3]]
    assert token("ab", occurrence=1).resolve(m, ids, Tok()).tolist() == [[6], [6]]
    assert token("ab", occurrence=-1).resolve(m, ids, Tok()).tolist() == [[6], [6]]


def test_repr_reads_like_the_code():
    assert repr(first(1) + last(1)) == "first(1)+last()"
    assert repr(token(" Mary", 1)) == "token(' Mary', occurrence=1)"


# ---- one semantics for interp and reft: first(p) + last(s) --------------------------------------------------


def _expected(p, s, n):
    """The ReFT paper's rule, written out: p' = min(p, n // 2) leading, s' = min(s, ceil(n / 2)) trailing."""
    pp, ss = min(p, n // 2), min(s, -(-n // 2))
    return list(range(pp)), list(range(n - ss, n))


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize(("p", "s"), [(1, 1), (2, 1), (1, 3), (3, 3), (2, 5)])
@pytest.mark.parametrize("tied", [True, False])
def test_first_plus_last_is_one_rule_in_interp_and_reft(p, s, side, tied):
    from conftest import tiny_lm

    import reft
    from interp import Site
    from reft.data import Tokenized, collate

    lengths = [1, 2, 3, 4, 5, 6]
    m = mask(lengths, 6, side)
    pos = first(p) + last(s)
    offset = [6 - n if side == "left" else 0 for n in lengths]
    loc = pos.locate(m)
    for b, n in enumerate(lengths):  # interp: the rule, never a duplicate, only real tokens
        got = [int(i) - offset[b] for i, v in zip(loc.index[b], loc.valid[b]) if v]
        head, tail = _expected(p, s, n)
        assert got == head + tail and len(set(got)) == len(got), (n, got)
        assert all(m[b, int(i)] for i in loc.index[b])  # invalid slots point at a real column too
    lm = tiny_lm("llama")
    ivs = {Site("resid_post", layer, pos): reft.LoReFT(lm.d_model, 2) for layer in (0, 1)}
    rlm = reft.attach(lm, ivs, tied=tied)
    batch = interp.encode(lm, {"input_ids": torch.randint(3, 97, m.shape), "attention_mask": m})
    # reft at inference (generation, analysis: the prompt is every real token) and in training (a right-padded
    # prompt + response batch, positions counted on the prompt): the same indices per row, at every layer
    rb = collate(lm, [Tokenized(batch.input_ids[b][m[b].bool()].tolist(), [7, 8]) for b in range(len(lengths))])
    for ops, shift in ((rlm.edit_ops(batch), offset), (rlm.edit_ops(rb.batch, rb.prompt_mask), [0] * len(lengths))):
        for layer in (0, 1):
            mine = [op for op in ops if op.site.layer == layer]
            assert len(mine) == (1 if tied else 2)  # untied: the prefix and the suffix get their own weights
            for b, n in enumerate(lengths):
                per_part = [[int(i) - shift[b] for i, v in zip(op.index[b], op.valid[b]) if v] for op in mine]
                head, tail = _expected(p, s, n)
                assert sum(per_part, []) == head + tail
                if not tied:
                    assert per_part == [head, tail]


def test_sums_never_repeat_a_token():
    m = mask([4, 2], 4, "left")
    loc = (first(2) + at(1) + last(3) + span(0, 2)).locate(m)
    for b in range(2):
        idx = [int(i) for i, v in zip(loc.index[b], loc.valid[b]) if v]
        assert len(idx) == len(set(idx))
    assert (first(1) + last(1)).split(1) == [[], [0]]  # a 1-token prompt: the last token, once
    assert (first(3) + last(3)).indices(4, None, None) == [0, 1, 2, 3]  # not [0, 1, 2, 1, 2, 3]
