"""ReFT-r1 (reft.r1): the top-k steering magnitude and L1 term by hand, the masks its ops pass, and a planted concept
direction recovered by training on a tiny model where the answer is known."""

from __future__ import annotations

import types

import pytest
import torch
from conftest import tiny_lm

import interp
import reft
from interp.benchmarks.axbench_detect import roc_auc
from interp.engine import execute
from interp.errors import ReftError
from interp.inputs import pad
from reft.data import Tokenized, collate
from reft.r1 import R1Model, ReftR1, attach_r1, train_r1
from reft.train import TrainConfig


def _unit_first_axis(d=4, k=2):
    iv = ReftR1(d, k=k)
    iv.R.set_weight(torch.eye(d)[:1])
    return iv


def test_topk_magnitude_and_penalty_by_hand():
    iv = _unit_first_axis()
    h = torch.zeros(2, 5, 4)
    h[0, :, 0] = torch.tensor([3.0, -1.0, 1.0, 2.0, 9.0])  # latents 3, 0, 1, 2 and a padding slot of 9
    h[1, :, 0] = torch.tensor([4.0, 0.0, 0.0, 0.0, 0.0])  # one valid token: k clips to 1
    valid = torch.tensor([[1, 1, 1, 1, 0], [1, 0, 0, 0, 0]]).bool()
    out = iv.forward(h, valid)  # the masked edit (R1Model passes each op's valid slots)
    assert torch.allclose((out - h)[0, :, 0], torch.full((5,), 2.5))  # mean of the top 2 valid: (3 + 2) / 2
    assert torch.allclose((out - h)[1, :, 0], torch.full((5,), 4.0))  # a row with one token: that token
    assert torch.allclose((out - h)[..., 1:], torch.zeros(2, 5, 3))  # only along w
    # L1 outside the top k, per row over its valid tokens: (0 + 1) / 4 and 0 / 1, then the batch mean
    assert float(iv.penalty().detach()) == pytest.approx((0.25 + 0.0) / 2)
    iv.center.fill_(1.0)  # the latent's origin: ReLU(w . (h - mu))
    assert iv.latent(torch.tensor([3.0, 0, 0, 0])).item() == pytest.approx(2.0)


def test_rank_and_options_are_checked():
    with pytest.raises(ReftError, match="rank 1"):
        ReftR1(8, rank=2)
    with pytest.raises(ReftError, match="k"):
        ReftR1(8, k=0)
    lm = tiny_lm("llama")
    ex = [{"prompt_ids": [1, 5, 6], "response_ids": [7]}]
    with pytest.raises(ReftError, match="'seen'"):
        train_r1(lm, ex, layer=0, vocab="mine")
    with pytest.raises(ReftError, match=r"\(4, d_model\)"):
        train_r1(lm, ex, layer=0, streams=[torch.zeros(3, 32)])


def test_ops_mask_padding_and_bos():
    lm = tiny_lm("llama")
    lm.tokenizer = types.SimpleNamespace(bos_token_id=1, pad_token_id=0, eos_token_id=2)
    rlm = attach_r1(lm, 0, k=2)
    assert isinstance(rlm, R1Model)
    batch = pad(lm, [[1, 5, 6, 7], [1, 8]], padding_side="right")
    (op,) = rlm.edit_ops(batch)
    valid = op.valid & (op.index >= 0)
    kept = [sorted(op.index[b][valid[b]].tolist()) for b in range(2)]
    assert kept == [[1, 2, 3], [1]]  # BOS (column 0) and padding never count
    execute(lm, batch, [op], logits_at=torch.zeros(2, 1, dtype=torch.long), backend="hooks")
    _, _, seen = op.fn.iv.latest
    assert seen.sum(1).tolist() == [3, 1]


def test_planted_concept_direction_is_recovered():
    """A tiny Llama where token C carries a planted direction u in its embedding and u is the unembedding of
    token T: concept texts (C somewhere in the prompt) answer T T, the others what the model says. ReFT-r1 must
    find w ~ u (it both detects C and steers to T), and its latent must separate held-out texts perfectly."""
    torch.manual_seed(0)
    lm = tiny_lm("llama")
    g = torch.Generator().manual_seed(1)
    u = torch.randn(lm.d_model, generator=g)
    u /= u.norm()
    C, T = 7, 11
    with torch.no_grad():
        lm.hf.get_input_embeddings().weight[C] += 4 * u
        lm.hf.lm_head.weight[T] = 2 * u

    def prompts(n, concept):
        out = []
        for _ in range(n):
            p = torch.randint(20, 97, (8,), generator=g).tolist()
            if concept:
                p[int(torch.randint(1, 8, (1,), generator=g))] = C
            out.append([1] + p)
        return out

    pos, neg = prompts(24, True), prompts(24, False)
    rb = collate(lm, [Tokenized(p, [0]) for p in neg])
    with torch.no_grad():
        said = execute(lm, rb.batch, [], logits_at=rb.pred_at, backend="hooks").logits[:, 0].argmax(-1).tolist()
    ex = [{"prompt_ids": p, "response_ids": [T, T]} for p in pos]
    ex += [{"prompt_ids": p, "response_ids": [t, t]} for p, t in zip(neg, said)]
    cfg = TrainConfig(epochs=6, batch_size=6, lr=0.02, warmup_ratio=0.0, progress=False)
    fit = train_r1(lm, ex, layer=0, k=2, config=cfg)
    assert len(fit.history.losses) == 48 and fit.history.losses[-1] < fit.history.losses[0]
    assert abs(float(fit.direction @ u)) > 0.7  # a random direction: |cos| about 0.14 in 32 dims

    every = interp.Site("resid_post", 0, interp.positions.all_tokens())
    held = prompts(20, True) + prompts(20, False)
    acts = interp.collect(lm, held, at=every)[:, 1:]  # BOS excluded, as in AxBench
    scores = fit.latents(acts).max(1).values
    assert float(roc_auc(scores, torch.tensor([1] * 20 + [0] * 20))) == 1.0


def test_saves_and_loads_with_its_origin(tmp_path):
    lm = tiny_lm("llama")
    rlm = attach_r1(lm, 1, k=3)
    iv = rlm.placements[0].intervention
    iv.center.fill_(0.5)
    back = reft.load(reft.save(rlm, tmp_path / "r1"), lm).placements[0].intervention
    assert type(back) is ReftR1 and back.k == 3 and float(back.center[0]) == 0.5
    assert torch.allclose(back.direction, iv.direction)
