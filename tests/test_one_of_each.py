"""One of each concept (issue 21): the merged collector, batch builder, position parser, pair type and ReFT
registry give the numbers the separate copies gave (each "before" is re-implemented here as it was)."""

from __future__ import annotations

import re
import types
import warnings

import pytest
import torch
from conftest import tiny_lm

import interp
import reft
from interp import Site, collect
from interp.batches import collect_rows, rows
from interp.causal import Pairs
from interp.engine import Batch
from interp.errors import CausalModelError, FormatError, InputError, PositionError, PositionParseError, ReftError
from interp.inputs import encode, pad
from interp.io import legacy_position, position_from_json, position_to_json
from interp.lens import cache
from interp.position_text import parse_positions
from interp.positions import all_tokens, at, first, generated, last, recent, span, token
from reft.data import Tokenized, collate
from reft.interventions import KINDS, REGISTRY, lookup

RAGGED = [[5, 6, 7, 8], [9, 10], [11, 12, 13], [14, 15, 16, 17, 18], [19, 20, 21]]


def _old_rows(items) -> Batch:
    """interp.batches.rows before the merge: token ids left-padded with 0 (whatever the pad id)."""
    seqs = [torch.as_tensor(x, dtype=torch.long).reshape(-1) for x in items]
    T = max(len(s) for s in seqs)
    ids, mask = torch.zeros(len(seqs), T, dtype=torch.long), torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, T - len(s) :], mask[i, T - len(s) :] = s, 1
    return Batch(ids, mask)


def _with_pad_id(lm, pad_id: int):
    """``lm`` with a stand-in tokenizer that knows only its pad id (the padding rule reads nothing else)."""
    lm.tokenizer = types.SimpleNamespace(pad_token_id=pad_id, bos_token_id=None, eos_token_id=None)
    return lm


# ---- one collector -------------------------------------------------------------------------------------------


def test_collect_rows_and_cache_equal_the_former_readers_exactly():
    lm = tiny_lm("llama")
    sites = [Site("resid_post", 0, last()), Site("mlp_out", 1, at(-2))]
    old = [torch.cat(parts) for parts in zip(*(collect(lm, _old_rows(RAGGED[a : a + 2]), at=sites)
                                               for a in range(0, len(RAGGED), 2)))]  # fmt: skip
    for new in (collect_rows(lm, RAGGED, sites, batch_size=2), collect(lm, RAGGED, at=sites, batch_size=2)):
        assert all(torch.equal(a, b) for a, b in zip(old, new))
    acts = cache(lm, RAGGED[:2], at=sites)
    assert all(torch.equal(acts[s], h) for s, h in zip(sites, collect(lm, RAGGED[:2], at=sites)))


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_collect_in_runs_equals_one_run(size):
    lm = tiny_lm("gpt2")
    ids = torch.randint(3, 97, (5, 6), generator=torch.Generator().manual_seed(0))
    site = Site("resid_post", 1, span(1, 4))
    one = collect(lm, ids, at=site)
    for inputs in (ids, ids.tolist(), encode(lm, ids)):
        torch.testing.assert_close(collect(lm, inputs, at=site, batch_size=size), one, atol=1e-6, rtol=0)


def test_collect_mean_averages_each_prompts_own_tokens():
    lm = tiny_lm("qwen2")
    site = Site("resid_post", 1, all_tokens())
    got = collect(lm, RAGGED, at=site, mean=True, batch_size=2)
    want = torch.stack([collect(lm, [p], at=Site("resid_post", 1, first(len(p))))[0].float().mean(0) for p in RAGGED])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    with pytest.raises(PositionError, match="no generated tokens"):
        collect(lm, RAGGED, at=Site("resid_post", 1, last() + generated()), mean=True)
    with pytest.raises(InputError, match=r"batch_size=\).*got 0"):
        collect(lm, RAGGED, at=site, batch_size=0)


# ---- one batch builder ---------------------------------------------------------------------------------------


def test_one_padding_rule_for_rows_encode_and_collate():
    lm = tiny_lm("llama")  # no tokenizer: pad with 0, as every builder did
    b = rows(lm, RAGGED)
    old = _old_rows(RAGGED)
    assert torch.equal(b.input_ids, old.input_ids) and torch.equal(b.attention_mask, old.attention_mask)
    for x in (encode(lm, RAGGED), pad(lm, RAGGED)):
        assert torch.equal(x.input_ids, b.input_ids) and torch.equal(x.attention_mask, b.attention_mask)
    right = pad(lm, RAGGED, padding_side="right")
    assert right.input_ids[1].tolist() == [9, 10, 0, 0, 0] and right.attention_mask[1].tolist() == [1, 1, 0, 0, 0]
    with pytest.raises(InputError, match="padding_side must be 'left' or 'right'; got 'middle'"):
        pad(lm, RAGGED, padding_side="middle")


def test_a_pad_id_pads_every_builder_and_changes_no_number():
    lm = _with_pad_id(tiny_lm("llama"), 7)
    b = rows(lm, RAGGED)
    assert b.input_ids[1].tolist() == [7, 7, 7, 9, 10]  # rows used to pad with 0 here
    rb = collate(lm, [Tokenized(p[:-1], p[-1:]) for p in RAGGED])
    assert rb.batch.input_ids[1].tolist() == [9, 10, 7, 7, 7]  # collate padded with the pad id: unchanged
    torch.testing.assert_close(rb.batch.attention_mask, pad(lm, RAGGED, padding_side="right").attention_mask)
    site = Site("resid_post", 1, first(1) + last(1))
    old = collect(lm, _old_rows(RAGGED), at=site)  # the former 0-padding: the same vectors at every real token
    torch.testing.assert_close(collect_rows(lm, RAGGED, [site])[0], old, atol=1e-6, rtol=0)


def test_collate_equals_the_former_collate():
    lm = tiny_lm("gpt2")
    data = [Tokenized([1, 5, 6], [7, 8]), Tokenized([1, 9], [10]), Tokenized([2], [3, 4, 5])]
    rb = collate(lm, data)
    seqs = [r.prompt + r.response for r in data]
    T = max(map(len, seqs))
    ids = torch.tensor([s + [0] * (T - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (T - len(s)) for s in seqs])
    assert torch.equal(rb.batch.input_ids, ids) and torch.equal(rb.batch.attention_mask, mask)
    assert rb.pred_at.tolist() == [[2, 3, 2], [1, 1, 1], [0, 1, 2]]


# ---- one position parser -------------------------------------------------------------------------------------

# What the three former readers returned (reft.parse_positions, reft.steering.parse_steer_positions and
# interp.io's legacy_position): the one parser gives each of them.
READ_BEFORE = {
    "f7+l7": first(7) + last(7),
    "f1+l1": first(1) + last(1),
    "l1": last(1),
    "f1": first(1),
    "g": generated(),
    "r4": recent(4),
    "f1+l1+g": first(1) + last(1) + generated(),
    "first(1)+last()": first(1) + last(1),
    "first(7)+last(7)+generated()": first(7) + last(7) + generated(),
    "recent(2)+generated()": recent(2) + generated(),
    "at(-2)": at(-2),
    "span(1,3)": span(1, 3),
    "span(1, 3)": span(1, 3),
    "token(' Mary', occurrence=1)": token(" Mary", 1),
    "token(' Mary', occurrence=1)+last()": token(" Mary", 1) + last(),
    "all": all_tokens(),
    "all+g": all_tokens() + generated(),
}


@pytest.mark.parametrize("text", sorted(READ_BEFORE))
def test_every_form_the_former_readers_took(text):
    assert parse_positions(text) == READ_BEFORE[text]
    assert reft.parse_positions(text) == READ_BEFORE[text]


@pytest.mark.parametrize("pos", [*READ_BEFORE.values(), token("a+b"), all_tokens() + last(2), at(3) + span(-3, -1)])
def test_every_repr_reads_back(pos):
    assert parse_positions(repr(pos)) == pos
    assert legacy_position(repr(pos)) == pos


@pytest.mark.parametrize("bad", ["x3", "recent()", "generated(2)", "gg", "r", "at()", "span(1)", "middle()", "f0",
                                 "everything", "f1+q2", "", "last(n=x)", "__import__('os')"])  # fmt: skip
def test_one_error_for_every_caller(bad):
    with pytest.raises(PositionParseError, match=re.escape(f"cannot read positions {bad!r}")) as e:
        parse_positions(bad)
    assert isinstance(e.value, PositionError) and isinstance(e.value, ReftError)
    with pytest.raises(FormatError, match="cannot read positions"):  # an old file's position
        legacy_position(bad)


# ---- one pair type -------------------------------------------------------------------------------------------


def _pairs(n=4) -> Pairs:
    g = torch.Generator().manual_seed(1)
    base, source = torch.randint(3, 97, (2, n, 5), generator=g).tolist()
    return Pairs.of(base, source, base_answer=[5] * n, source_answer=[6] * n)


def test_patching_pairs_is_the_one_pair_type():
    pp = _pairs()
    with pytest.deprecated_call():
        from interp.tasks import PatchingPairs

        old = PatchingPairs(pp.base, pp.source, [5] * 4, [6] * 4)
    assert type(old) is Pairs and (old.base, old.source, old.base_answer, old.source_answer) == (
        pp.base, pp.source, [5] * 4, [6] * 4)  # fmt: skip
    assert type(interp.tasks.ioi_pairs(3)) is Pairs and interp.tasks.ioi_pairs(3)[1:].source_answer == (
        interp.tasks.ioi_pairs(3).labels[1:])  # fmt: skip
    two = Pairs(("a", "b"), pp.base, [pp.base, pp.source], [5] * 4, [6] * 4)
    with pytest.raises(CausalModelError, match="interchange 2 variables"):
        _ = two.source


def test_patch_grid_attribution_and_das_take_the_same_pairs():
    from interp.attribution import attribution_patch
    from interp.das import fit_das
    from interp.patching import patch_grid

    lm, pp = tiny_lm("llama"), _pairs()
    positions = {"a": at(1), "last": last()}
    grid = patch_grid(lm, pp, positions=positions, progress=False)
    atp = attribution_patch(lm, pp, positions=positions)
    # the same grids as from two inputs with answers given apart (what PatchingPairs duck-typing fed them)
    apart = attribution_patch(lm, pp.base, pp.source, positions=positions,
                              metric=lambda lg: lg[:, 5] - lg[:, 6])  # fmt: skip
    torch.testing.assert_close(atp.effect, apart.effect, atol=0, rtol=0)
    assert grid.effect.shape == atp.effect.shape == (2, 2)
    das = fit_das(lm, pp, at=Site("resid_post", 1, last()), rank=2, steps=1, progress=False)
    assert das.variables == ("input",)
    with pytest.raises(InputError, match="pairs is a list; expected interp.Pairs"):
        patch_grid(lm, [pp.base, pp.source], progress=False)


# ---- one registry of ReFT kinds ------------------------------------------------------------------------------


def test_one_registry_of_reft_kinds():
    assert KINDS == ("loreft", "noreft", "direft", "lobireft", "consreft", "lodireft")  # the former KINDS' keys
    for k in KINDS:
        cls = lookup(k)
        assert REGISTRY[cls.__name__] is cls and type(reft.make(k.upper(), 8, 2)) is cls
    with pytest.raises(ReftError, match="unknown intervention kind 'fancy'; known: loreft, noreft"):
        reft.make("fancy", 8, 2)


def test_all_tokens_saves_and_loads(tmp_path):
    """The steering position (every prompt token) is a kind interp.io saves: a ReFT at it round-trips."""
    pos = all_tokens() + generated()
    assert position_from_json(position_to_json(pos)) == pos
    lm = tiny_lm("llama")
    torch.manual_seed(0)
    rlm = reft.attach(lm, {Site("resid_post", 0, all_tokens()): reft.LoReFT(lm.d_model, rank=2)})
    with torch.no_grad():
        rlm.interventions[0].W.bias.add_(1.0)
    reft.save(rlm, tmp_path / "run")
    again = reft.load(tmp_path / "run", lm)
    assert again.placements[0].site.pos == all_tokens()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = interp.run(rlm, RAGGED).logits, interp.run(again, RAGGED).logits
    assert torch.equal(a, b) and not torch.allclose(a, interp.run(lm, RAGGED).logits)
