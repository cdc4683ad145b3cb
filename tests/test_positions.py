"""Typed positions resolve per example, identically under left and right padding."""

import pytest
import torch

from interp import PositionError, at, first, last, span, token


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
    with pytest.raises(PositionError, match="found 2 occurrence"):
        token("ab", occurrence=2).resolve(m, ids, Tok())


def test_repr_reads_like_the_code():
    assert repr(first(1) + last(1)) == "first(1)+last()"
    assert repr(token(" Mary", 1)) == "token(' Mary', occurrence=1)"


@pytest.mark.parametrize("pos", [at(5), at(-6), first(4), last(4), span(1, 9)])
def test_position_beyond_a_prompt_is_a_clear_error(pos):
    with pytest.raises(PositionError, match="prompt 0 has only 3 tokens"):
        pos.resolve(mask([3, 5], 5, "left"))


def test_uneven_counts_are_refused():
    with pytest.raises(PositionError, match="different numbers of tokens"):
        span(1, -1).resolve(mask([3, 5], 5, "left"))


def test_counts_must_be_positive():
    with pytest.raises(PositionError, match="at least 1"):
        first(0)
