"""ReFT properties on tiny random models: the edit's algebra, positions, batching, generation, save/load, errors."""

from __future__ import annotations

import pytest
import torch
from conftest import randomize, sharp_llama, tiny_lm
from hypothesis import given, settings
from hypothesis import strategies as st

import interp
import reft
from interp import Site, first, last
from interp.engine import Batch, execute, options
from reft.model import serve_ops

ORTHONORMAL = ("loreft", "lobireft", "consreft", "lodireft")


def _batch(rows: list[list[int]], side="left") -> tuple[Batch, list[int], list[int]]:
    T = max(map(len, rows))
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    starts = []
    for b, r in enumerate(rows):
        s = T - len(r) if side == "left" else 0
        ids[b, s : s + len(r)] = torch.tensor(r)
        mask[b, s : s + len(r)] = 1
        starts.append(s)
    return Batch(ids, mask), starts, [len(r) for r in rows]


def forward_logits(lm, batch, at, assignment, starts, lengths):
    """Logits (B, k, V) at columns ``at`` with ``assignment[b]``'s edits on row b's prompt ``[start, start+len)``."""
    cols = torch.arange(batch.input_ids.shape[1])
    prompt = (cols >= torch.tensor(starts)[:, None]) & (
        cols < torch.tensor(starts)[:, None] + torch.tensor(lengths)[:, None]
    )
    ops = serve_ops(assignment, batch, prompt)
    return execute(lm, batch, ops, logits_at=at, backend="hooks").logits


def assert_greedy(lm, rlm, prompt: list[int], new: list[int], tie: float = 1e-4):
    """``new`` is greedy decoding of ``prompt`` with ``rlm``'s edits on the prompt, recomputed without a KV cache:
    each token is the argmax of the full recomputation, unless the top two logits are within ``tie`` (rounding
    on another CPU may then pick either; a missing or misplaced edit moves logits by far more than that)."""
    seq = prompt + new
    batch, starts, lengths = _batch([seq[:-1]])
    batch_prompt = (starts, [len(prompt)])
    at = torch.arange(len(prompt) - 1, len(seq) - 1)[None]
    with torch.no_grad():
        logits = forward_logits(lm, batch, at, [rlm], *batch_prompt)[0]  # (new, V)
    top2 = logits.topk(2, dim=-1).values
    for j, t in enumerate(new):
        assert t == int(logits[j].argmax()) or float(top2[j, 0] - top2[j, 1]) < tie, (j, t, int(logits[j].argmax()))


# ---- the interventions -----------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(d=st.integers(2, 48), rank=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_loreft_with_W_equal_R_and_zero_bias_is_identity(d, rank, seed):
    rank = min(rank, d)
    torch.manual_seed(seed)
    iv = reft.LoReFT(d, rank)
    with torch.no_grad():
        iv.W.weight.copy_(iv.R.weight)
        iv.W.bias.zero_()
    h = torch.randn(3, 5, d)
    torch.testing.assert_close(iv(h), h, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", sorted(reft.KINDS))
@settings(max_examples=10, deadline=None)
@given(d=st.integers(4, 40), rank=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_edit_lies_in_row_space_of_basis(kind, d, rank, seed):
    rank = min(rank, d)
    torch.manual_seed(seed)
    iv = reft.make(kind, d, rank)
    with torch.no_grad():
        for name, p in iv.named_parameters():  # the orthogonal map reads only the strict upper triangle
            p.add_(0.3 * (torch.randn_like(p).triu(1) if "original" in name else torch.randn_like(p)))
    h = torch.randn(6, d)
    delta = (iv(h) - h).detach()
    R = iv.basis_weight().detach()  # (r, d)
    proj = torch.linalg.pinv(R) @ R  # projector onto the row space of R
    torch.testing.assert_close(delta @ proj, delta, atol=1e-4, rtol=1e-4)
    assert delta.abs().max() > 1e-4  # and the edit is not trivially zero
    if kind in ORTHONORMAL:
        torch.testing.assert_close(R @ R.T, torch.eye(rank), atol=1e-5, rtol=0)


def test_R_stays_orthonormal_and_undecayed_after_training():
    lm = sharp_llama()
    rlm = reft.attach(lm, reft.at_layers(lm, [0], pos=first(1) + last(1), rank=4))
    ex = [{"prompt_ids": [1, 5, 6, 7], "response_ids": [9]}, {"prompt_ids": [1, 8, 3], "response_ids": [11]}]
    cfg = reft.TrainConfig(steps=50, lr=5e-2, batch_size=2, weight_decay=0.5, progress=False)
    reft.train_reft(rlm, ex, cfg)
    R = rlm.interventions[0].R.weight.detach()
    torch.testing.assert_close(R @ R.T, torch.eye(4), atol=1e-5, rtol=0)


def test_user_defined_intervention_in_one_class_trains_and_reloads(tmp_path):
    class ScaledReFT(reft.ReftIntervention):
        """h + R^T (s * W h - R h): a learned scale on LoReFT's target."""

        def __init__(self, d_model, rank, *, dtype=torch.float32):
            super().__init__(d_model, rank, dtype=dtype)
            self.W = torch.nn.Linear(d_model, rank, dtype=dtype)
            self.s = torch.nn.Parameter(torch.ones((), dtype=dtype))

        def target(self, h):
            return self.s * self.W(h)

    lm = sharp_llama()
    rlm = reft.attach(lm, {Site("resid_post", 0, last()): ScaledReFT(lm.d_model, 2)})
    reft.train_reft(rlm, [{"prompt_ids": [1, 4], "response_ids": [7]}], reft.TrainConfig(steps=3, progress=False))
    reft.save(rlm, tmp_path / "run")
    again = reft.load(tmp_path / "run", lm)
    assert type(again.interventions[0]).__name__ == "ScaledReFT"


# ---- positions -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [(10, [[0, 1, 2], [7, 8, 9]]), (5, [[0, 1], [2, 3, 4]]), (4, [[0, 1], [2, 3]]), (1, [[], [0]])],
)
def test_short_prompt_rule(n, expected):
    assert (first(3) + last(3)).split(n) == expected


def test_position_and_layer_strings():
    assert repr(reft.parse_positions("f7+l7")) == "first(7)+last(7)"
    assert repr(reft.parse_positions("first(1)+last()")) == "first(1)+last()"
    assert reft.parse_layers("3;9;17", 18) == [3, 9, 17]
    assert reft.parse_layers("all", 3) == [0, 1, 2]
    with pytest.raises(reft.ReftError, match="layer 18 does not exist"):
        reft.parse_layers("3;18", 18)
    with pytest.raises(reft.ReftError, match="f<n>, l<n>"):
        reft.parse_positions("x7")


def test_no_positions_is_a_no_op():
    lm = sharp_llama()
    # untied: the prefix copy gets no position on a 1-token prompt (p' = min(1, 1 // 2) = 0) ...
    rlm = reft.attach(lm, {Site("resid_post", 0, first(1) + last(1)): reft.LoReFT(lm.d_model, 4)}, tied=False)
    randomize(rlm)
    prefix, suffix = (pl.intervention for pl in rlm.placements)
    with torch.no_grad():  # ... and the suffix copy is made the identity
        suffix.W.weight.copy_(suffix.R.weight)
        suffix.W.bias.zero_()
    batch, starts, lengths = _batch([[5], [7]])
    at = torch.tensor([[0], [0]])
    with torch.no_grad():
        plain = forward_logits(lm, batch, at, [None, None], starts, lengths)
        edited = forward_logits(lm, batch, at, [rlm, rlm], starts, lengths)
        randomize(rlm, seed=2)  # the same site with a non-identity suffix: what a missing no-op would look like
        moved = forward_logits(lm, batch, at, [rlm, rlm], starts, lengths)
    # W h + b vs R h round differently by ~1e-6 (addmm vs mm); a real edit moves logits by far more
    torch.testing.assert_close(plain, edited, atol=1e-4, rtol=0)
    assert (moved - plain).abs().max() > 1e-2


def test_hooks_match_the_nnsight_engine():
    lm = tiny_lm("gemma3")
    iv = reft.LoReFT(lm.d_model, 4)
    site = Site("resid_post", 0, first(1) + last(1))
    rlm = reft.attach(lm, {site: iv})
    randomize(rlm)
    batch, starts, lengths = _batch([[1, 5, 6, 7, 8], [1, 9, 3]])
    T = batch.input_ids.shape[1]
    with torch.no_grad():
        ours = forward_logits(lm, batch, torch.tensor([[T - 1], [T - 1]]), [rlm, rlm], starts, lengths)[:, 0]
        theirs = interp.intervene(
            lm, {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}, at=site, via=iv
        ).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


# ---- several interventions in one batch ------------------------------------------------------------------


def test_per_example_interventions_in_one_batch_equal_each_alone():
    lm = sharp_llama(layers=3)
    a = reft.attach(lm, reft.at_layers(lm, [0], pos=first(1) + last(1), rank=4))
    b = reft.attach(lm, reft.at_layers(lm, [1, 2], pos=first(2) + last(2), kind="direft", rank=2), tied=False)
    randomize(a, seed=1)
    randomize(b, seed=2)
    rows = [[1, 5, 6, 7, 8, 9], [1, 4], [1, 8, 3, 2], [1, 2, 3]]
    choice = [a, None, b, a]
    batch, starts, lengths = _batch(rows)
    T = batch.input_ids.shape[1]
    with torch.no_grad():
        together = forward_logits(lm, batch, torch.full((4, 1), T - 1), choice, starts, lengths)[:, 0]
        for i, (row, c) in enumerate(zip(rows, choice)):
            one, s, n = _batch([row])
            alone = forward_logits(lm, one, torch.tensor([[len(row) - 1]]), [c], s, n)[0, 0]
            torch.testing.assert_close(together[i], alone, atol=1e-5, rtol=1e-5)
        plain = forward_logits(lm, batch, torch.full((4, 1), T - 1), [None] * 4, starts, lengths)[:, 0]
    assert not torch.allclose(together[0], plain[0])  # the interventions do something


# ---- training --------------------------------------------------------------------------------------------


def test_train_reft_overfits_four_examples():
    lm = sharp_llama()
    rlm = reft.attach(lm, reft.at_layers(lm, [0], pos=first(1) + last(1), rank=4))
    ex = [
        {"prompt_ids": [1, 5, 6, 7], "response_ids": [9]},
        {"prompt_ids": [1, 8, 3], "response_ids": [11]},
        {"prompt_ids": [1, 3, 4, 20, 21], "response_ids": [30]},
        {"prompt_ids": [1, 2], "response_ids": [40]},
    ]
    hist = reft.train_reft(rlm, ex, reft.TrainConfig(steps=100, lr=2e-2, batch_size=4, progress=False))
    assert hist.losses[-1] < hist.losses[0] / 10, (hist.losses[0], hist.losses[-1])


def test_train_config_round_trips_and_rejects_unknown_keys():
    cfg = reft.TrainConfig(steps=5, lr=1e-3)
    assert reft.TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(reft.ReftError, match="unknown TrainConfig keys"):
        reft.TrainConfig.from_dict({"stpes": 5})


# ---- generation ------------------------------------------------------------------------------------------


def test_generation_equals_manual_recomputation():
    lm = sharp_llama()
    rlm = reft.attach(lm, reft.at_layers(lm, [0, 1], pos=first(1) + last(2), rank=4))
    randomize(rlm)
    prompts = [[1, 5, 6, 7, 8], [1, 9, 3]]
    batch, starts, lengths = _batch(prompts)
    got = reft.generate_ids(
        rlm, {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}, max_new_tokens=6
    )
    for b, row in enumerate(prompts):  # the cached decode is greedy under a full recomputation with the edit
        assert_greedy(lm, rlm, row, got.new_ids[b].tolist())
    plain = reft.generate_ids(
        lm, {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}, max_new_tokens=6
    )
    assert not torch.equal(plain.ids, got.ids)
    with pytest.raises(AssertionError):  # the check catches a missing edit: the plain decode is not greedy under it
        for b, row in enumerate(prompts):
            assert_greedy(lm, rlm, row, plain.new_ids[b].tolist())


# ---- save / load -----------------------------------------------------------------------------------------


def test_reload_is_bit_identical_and_small(tmp_path):
    lm = sharp_llama()
    rlm = reft.attach(lm, reft.at_layers(lm, [0, 1], pos=first(1) + last(1), rank=4), tied=False)
    reft.train_reft(
        rlm, [{"prompt_ids": [1, 4, 5], "response_ids": [7]}], reft.TrainConfig(steps=5, lr=1e-2, progress=False)
    )
    reft.save(rlm, tmp_path / "run")
    again = reft.load(tmp_path / "run", lm)
    for x, y in zip(rlm.placements, again.placements):
        assert x.site == y.site and x.part == y.part
        assert torch.equal(x.intervention.basis_weight(), y.intervention.basis_weight())
    batch, starts, lengths = _batch([[1, 5, 6, 7, 8], [1, 9, 3]])
    at = torch.tensor([[4], [4]])
    with torch.no_grad():
        torch.testing.assert_close(  # same weights, same kernels: equal up to rounding
            forward_logits(lm, batch, at, [rlm] * 2, starts, lengths),
            forward_logits(lm, batch, at, [again] * 2, starts, lengths),
            atol=1e-6,
            rtol=0,
        )
    weights = (tmp_path / "run" / "weights.safetensors").stat().st_size
    assert weights < 4 * 4 * (2 * 4 * 32 + 4) + 2048  # 4 interventions of R, W, b in float32, plus a header
    reft.save(rlm, tmp_path / "run", overwrite=True)  # refusals (no overwrite, another model): bad_inputs_io.py


def test_interventions_keep_float32_on_a_bf16_model():
    """Issue 12: interventions keep their own dtype (float32 by default: what training on a bf16 model wants,
    as bf16 updates of small weights round away) and cast at the edit; the activations and logits stay in the
    model's bf16. (This test used to require bf16 weights on a bf16 model; tests/test_scaling.py has the rest.)"""
    lm = tiny_lm("llama")
    lm.hf.to(torch.bfloat16)
    rlm = reft.attach(lm, reft.at_layers(lm, [0], rank=2))
    assert {p.dtype for p in rlm.interventions.parameters()} == {torch.float32}
    batch, starts, lengths = _batch([[1, 5, 6]])
    with torch.no_grad():
        out = forward_logits(lm, batch, torch.tensor([[2]]), [rlm], starts, lengths)
    assert out.dtype == torch.bfloat16


# ---- bad input fails before training ---------------------------------------------------------------------


def _untouched(rlm):
    return [p.detach().clone() for p in rlm.interventions.parameters()]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ([], "dataset is empty"),
        ([{"prompt_ids": [1, 2], "response_ids": []}], "no response"),
        ([{"prompt": "x"}], "no response"),
        ([{"prompt_ids": [], "response_ids": [3]}], "empty prompt"),
    ],
)
def test_bad_data_fails_before_training(data, match):
    lm = sharp_llama()
    rlm = reft.attach(lm, reft.at_layers(lm, [0], rank=2))
    before = _untouched(rlm)
    with pytest.raises(reft.ReftError, match=match):
        reft.train_reft(rlm, data, reft.TrainConfig(steps=2, progress=False))
    assert all(torch.equal(a, b) for a, b in zip(before, _untouched(rlm)))


# ---- behaviour on the real model -------------------------------------------------------------------------


@pytest.mark.slow
def test_gemma_learns_multi_token_responses_and_generates_them(gemma):
    rlm = reft.attach(gemma, {Site("resid_post", 6, first(1) + last(1)): reft.LoReFT(gemma.d_model, 4)})
    ex = [
        {"prompt": "Who are you?", "response": " I am a teapot."},
        {"prompt": "What is 2+2?", "response": " Four, obviously."},
        {"prompt": "Name a color.", "response": " Purple!"},
        {"prompt": "Where is Paris?", "response": " In France."},
    ]
    hist = reft.train_reft(rlm, ex, reft.TrainConfig(steps=40, lr=2e-2, batch_size=4, progress=False))
    assert hist.losses[-1] < hist.losses[0] / 10, hist.losses
    assert reft.generate(rlm, "Who are you?", max_new_tokens=6).startswith(" I am a teapot")
    assert not reft.generate(gemma, "Who are you?", max_new_tokens=6).startswith(" I am a teapot")


def test_serving_several_in_one_generate_equals_each_alone():
    lm = sharp_llama()
    a = reft.attach(lm, reft.at_layers(lm, [0], pos=first(1) + last(1), rank=4))
    b = reft.attach(lm, reft.at_layers(lm, [1], pos=last(2), kind="direft", rank=2))
    randomize(a, seed=3)
    randomize(b, seed=4)
    rows, choice = [[1, 5, 6, 7, 8], [1, 9, 3], [1, 4, 4, 2]], [a, None, b]
    batch, _, _ = _batch(rows)
    together = reft.generate_ids(
        lm, {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}, serve=choice, max_new_tokens=5
    )
    for i, (row, c) in enumerate(zip(rows, choice)):  # each row decodes as its own model alone, unpadded
        assert_greedy(lm, c, row, together.new_ids[i].tolist())


def test_classifier_head_starts_as_label_words_learns_saves_and_reloads(tmp_path):
    from reft.data import collate, tokenize

    lm = sharp_llama()
    words = {0: 5, 1: 6, 2: 7}  # class names as token ids (the tiny model has no tokenizer)
    g = torch.Generator().manual_seed(0)
    data = [{"prompt": tuple(torch.randint(10, 97, (6,), generator=g).tolist()), "label": i % 3} for i in range(12)]
    head = reft.ClassifierHead.from_label_words(lm, words)
    rows = tokenize(lm, reft.as_examples(data, label_words=words), label_words=words)
    rb = collate(lm, rows, torch.tensor([5, 6, 7]))
    torch.testing.assert_close(  # before training the head is label-word scoring
        execute(lm, rb.batch, logits_at=rb.pred_at, vocab=rb.vocab, head=head, backend="hooks").logits,
        execute(lm, rb.batch, logits_at=rb.pred_at, vocab=rb.vocab, backend="hooks").logits,
    )
    rlm = reft.attach(lm, {Site("resid_post", 1, last()): reft.LoReFT(32, 4)}, head=head)
    assert rlm.trainable_params == 2 * 4 * 32 + 4 + 3 * 33
    before = reft.evaluate(rlm, data, label_words=words)["accuracy"]
    reft.train_reft(rlm, data, reft.TrainConfig(steps=80, lr=5e-2, batch_size=12, progress=False), label_words=words)
    after = reft.evaluate(rlm, data, label_words=words)
    assert after["accuracy"] == 1.0 > before  # arbitrary labels: the head learns what the words alone cannot say
    reft.save(rlm, tmp_path / "run")
    again = reft.load(tmp_path / "run", lm)
    assert torch.equal(again.head.weight, rlm.head.weight)
    torch.testing.assert_close(again.logits(rb), rlm.logits(rb), atol=1e-6, rtol=0)
    with pytest.raises(reft.ReftError, match="3 classes but 2 label words"):
        reft.train_reft(rlm, data[:2], reft.TrainConfig(steps=1, progress=False), label_words={0: 5, 1: 6})


def test_interp_reads_and_runs_under_a_trained_reft():
    lm = sharp_llama()
    site = Site("resid_post", 0, first(1) + last(1))
    iv = reft.LoReFT(lm.d_model, 4)
    rlm = reft.attach(lm, {site: iv})
    randomize(rlm)
    x = torch.randint(3, 97, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # at the edited site, collect reads the edited vectors: the intervention applied to the plain ones
        torch.testing.assert_close(
            interp.collect(rlm, x, at=site), iv(interp.collect(lm, x, at=site)), atol=1e-5, rtol=0
        )
        above = Site("resid_post", 1, last())
        assert (interp.collect(rlm, x, at=above) - interp.collect(lm, x, at=above)).abs().max() > 1e-2
        plain = interp.run(lm, x).logits
        torch.testing.assert_close(interp.intervene(lm, x, at=[]).logits, plain, atol=1e-6, rtol=0)  # at=[]: plain
        under = interp.run(rlm, x).logits  # the ReFT's logits, the same on both backends and as training sees them
        with options(backend="hooks"):
            hooked = interp.run(rlm, x).logits
        torch.testing.assert_close(under, hooked, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            under,
            forward_logits(lm, interp.encode(lm, x), torch.full((2, 1), 4), [rlm] * 2, [0, 0], [5, 5])[:, 0],
            atol=1e-5,
            rtol=1e-5,
        )
        assert (under - plain).abs().max() > 1e-2
