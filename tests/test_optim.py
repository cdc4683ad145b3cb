"""The one training loop (interp.optim): schedule, accumulation, early stopping, checkpoints, and the stop at the
first non-finite loss or gradient, for the loop itself, DAS, ReFT and the ``reft train`` command line."""

from __future__ import annotations

import contextlib
import itertools
import math
from unittest import mock

import pytest
import torch
from conftest import tiny_lm

import interp
import reft
from interp import optim
from interp.causal import CausalModel
from interp.errors import ConfigError, NonFiniteError
from reft.cli import main as reft_main


def _regression(seed=0, n=12):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g), torch.randn(n, generator=g)


def _mse(w, x, y):
    return lambda idx: ((x[idx] @ w - y[idx]) ** 2).mean()


# ---- the schedule and the update --------------------------------------------------------------------------------


def test_schedule_values():
    linear = optim.lr_schedule(10, warmup_ratio=0.2)  # 2 warm-up steps reaching 1, then linear decay toward 0
    assert [linear(s) for s in range(10)] == pytest.approx([0.5, 1, 1, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])
    cosine = optim.lr_schedule(4, kind="cosine")
    assert [cosine(s) for s in range(4)] == pytest.approx([0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(4)])
    assert [optim.lr_schedule(3, warmup_ratio=0.5, kind="constant")(s) for s in range(3)] == [1.0, 1.0, 1.0]
    assert optim.lr_schedule(5, warmup_ratio=0.01)(0) == 1.0  # a positive ratio warms up over at least one step
    # the loop uses it: the rate of each update is lr x the factor of its step
    w = torch.nn.Parameter(torch.zeros(3))
    x, y = _regression()
    hist = optim.train([w], _mse(w, x, y), itertools.repeat(list(range(12))), steps=10, lr=0.1, warmup_ratio=0.2)
    assert hist.lrs == pytest.approx([0.1 * linear(s) for s in range(10)])


def test_each_update_equals_a_plain_adamw_step_with_clipping():
    """Same numbers as torch's AdamW with the schedule and clipping written out (each step's own gradients only)."""
    x, y = _regression()
    batches = [list(range(i, i + 4)) for i in (0, 4, 8)] * 3
    w = torch.nn.Parameter(torch.zeros(3))
    optim.train([w], _mse(w, x, y), batches, steps=9, lr=0.2, weight_decay=0.1, warmup_ratio=0.3, max_grad_norm=0.5)
    ref = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.AdamW([ref], lr=0.2, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, optim.lr_schedule(9, warmup_ratio=0.3))
    for idx in batches:
        opt.zero_grad()
        _mse(ref, x, y)(idx).backward()
        torch.nn.utils.clip_grad_norm_([ref], 0.5)
        opt.step()
        sched.step()
    torch.testing.assert_close(w.detach(), ref.detach(), atol=0, rtol=0)


def test_accumulation_equals_one_bigger_batch():
    x, y = _regression()
    whole, halves = [list(range(8))], [list(range(4)), list(range(4, 8))]
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))
    optim.train([a], _mse(a, x, y), itertools.cycle(whole), steps=5, lr=0.1)
    hist = optim.train([b], _mse(b, x, y), itertools.cycle(halves), steps=5, lr=0.1, grad_accum=2)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert len(hist.losses) == 5 and hist.losses[0] == pytest.approx(float((y[:8] ** 2).mean()))
    # a (sum, count) loss is divided by the global count: the same step as the mean (ReFT's response tokens)
    c = torch.nn.Parameter(torch.zeros(3))
    summed = optim.train([c], lambda idx: (((x[idx] @ c - y[idx]) ** 2).sum(), len(idx)), itertools.cycle(whole),
                         steps=5, lr=0.1)  # fmt: skip
    torch.testing.assert_close(a, c, atol=1e-6, rtol=0)
    assert summed.tokens == 5 * 8


def test_early_stopping_keeps_the_best_state():
    w = torch.nn.Parameter(torch.zeros(1))
    scores = iter([0.2, 0.5, 0.4, 0.3, 0.9, 0.9])
    seen = {}

    def evaluate():
        seen[len(seen) + 1] = w.detach().clone()  # the state evaluated after each step
        return next(scores)

    loss = lambda batch: (w - 10.0).pow(2).sum()  # noqa: E731
    hist = optim.train([w], loss, itertools.repeat(None), steps=6, lr=0.1, evaluate=evaluate, eval_every=1,
                       patience=2, keep_best=True)  # fmt: skip
    assert (hist.steps, hist.stopped, hist.best_step) == (4, "patience", 2)  # 0.4 and 0.3 did not beat 0.5
    assert [s for s, _ in hist.evals] == [1, 2, 3, 4]
    torch.testing.assert_close(w.detach(), seen[2], atol=0, rtol=0)  # restored to the state that scored 0.5
    w2 = torch.nn.Parameter(torch.zeros(1))
    reach = optim.train([w2], lambda batch: w2.sum(), itertools.repeat(None), steps=9, lr=0.1,
                        evaluate=iter([0.3, 1.0, 1.0]).__next__, eval_every=2, stop_at=1.0)  # fmt: skip
    assert (reach.steps, reach.stopped, reach.evals) == (4, "stop_at", [(2, 0.3), (4, 1.0)])


# ---- the stop at the first non-finite loss or gradient -----------------------------------------------------------


def test_a_loss_that_becomes_nan_at_step_k_stops_there_before_updating():
    x, y = _regression()
    w = torch.nn.Parameter(torch.zeros(3))
    calls, states, saved = [], [], []

    def loss(idx):
        calls.append(1)
        states.append(w.detach().clone())
        value = ((x[idx] @ w - y[idx]) ** 2).mean()
        return value * float("nan") if len(calls) == 3 else value

    with pytest.raises(NonFiniteError, match=r"step 3 of 8: the loss is nan \(learning rate 0\.05\); the parameters "
                       r"are those after step 2.*lower learning rate"):  # fmt: skip
        optim.train([w], loss, itertools.repeat(list(range(12))), steps=8, lr=0.05, schedule="constant",
                    checkpoint=saved.append, checkpoint_every=1)  # fmt: skip
    torch.testing.assert_close(w.detach(), states[2], atol=0, rtol=0)  # the update of step 3 was not taken
    assert saved == [1, 2] and torch.isfinite(w).all()


def test_an_infinite_gradient_stops_too():
    w = torch.nn.Parameter(torch.zeros(2))  # sqrt at 0: a finite loss with an infinite gradient
    with pytest.raises(NonFiniteError, match=r"step 1 of 3: the gradient norm is inf .*parameters are unchanged"):
        optim.train([w], lambda batch: w.sqrt().sum(), itertools.repeat(None), steps=3, lr=0.1)
    assert torch.equal(w.detach(), torch.zeros(2))


def _das_pairs():
    model = CausalModel({"a": None, "G": (("a",), lambda a: a >= 50), "O": (("G",), lambda g: 5 if g else 6)})
    data = model.counterfactuals(lambda r: {"a": r.randrange(10, 90)}, variables="G", n=40, seed=0, changed_only=True)
    return data.render(lambda s: [1, s["a"], 7], int, candidates=[5, 6])


def _nan_at(k: int, fn):
    """``fn`` whose ``k``-th call returns NaN (its value times NaN, so the graph stays)."""
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        out = fn(*args, **kwargs)
        return out * float("nan") if len(calls) == k else out

    return wrapped


def test_das_stops_at_the_step_whose_loss_is_nan(monkeypatch):
    lm = tiny_lm("llama")
    monkeypatch.setattr("interp.das.interchange_loss", _nan_at(4, interp.das.interchange_loss))
    basis = interp.LowRankRotation(32, 1)
    with pytest.raises(NonFiniteError, match=r"step 4 of 10: the loss is nan \(learning rate 0\.01\)"):
        interp.fit_das(lm, _das_pairs(), at=interp.Site("resid_post", 1, interp.last()), via=basis, steps=10,
                       batch_size=8, lr=1e-2, schedule="constant", progress=False)  # fmt: skip
    assert torch.isfinite(basis.weight).all()


def test_reft_stops_at_the_step_whose_loss_is_nan_and_writes_no_nan_checkpoint(monkeypatch, tmp_path):
    lm = tiny_lm("llama")
    site = interp.Site("resid_post", 1, interp.first(1) + interp.last(1))
    rlm = reft.attach(lm, {site: reft.LoReFT(32, rank=4)})
    examples = [{"prompt_ids": [1, 5 + i, 7, 9], "response_ids": [5, 6]} for i in range(4)]
    monkeypatch.setattr("reft.train.response_loss", _nan_at(3, reft.train.response_loss))
    cfg = reft.TrainConfig(steps=6, batch_size=2, lr=4e-3, warmup_ratio=0.0, checkpoint_every=1,
                           checkpoint_dir=str(tmp_path / "ckpt"), progress=False)  # fmt: skip
    with pytest.raises(NonFiniteError, match=r"step 3 of 6: the loss is nan \(learning rate 0\.00267\)"):
        reft.train_reft(rlm, examples, cfg)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step-1", "step-2"]
    for step in ("step-1", "step-2"):
        loaded = reft.load(tmp_path / "ckpt" / step, lm)
        assert all(torch.isfinite(v).all() for v in loaded.state_dict().values())
    assert all(torch.isfinite(v).all() for v in rlm.state_dict().values())


def test_reft_with_a_huge_learning_rate_stops_on_the_gradient():
    """lr=1e30 is a valid number: the first update blows the edit up, and step 2 stops before a second one."""
    lm = tiny_lm("llama")
    rlm = reft.attach(lm, {interp.Site("resid_post", 1, interp.first(1) + interp.last(1)): reft.LoReFT(32, rank=4)})
    examples = [{"prompt_ids": [1, 5 + i, 7, 9], "response_ids": [5, 6]} for i in range(4)]
    cfg = reft.TrainConfig(steps=5, batch_size=2, lr=1e30, warmup_ratio=0.0, progress=False)
    with pytest.raises(NonFiniteError, match=r"step 2 of 5: the (loss|gradient norm) is .*learning rate 8e\+29"):
        reft.train_reft(rlm, examples, cfg)
    assert all(torch.isfinite(v).all() for v in rlm.state_dict().values())


def test_reft_train_lr_inf_exits_in_one_line_before_loading_and_saves_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    with contextlib.ExitStack() as stack:
        for heavy in ("interp.load", "reft.train.train_reft"):
            stack.enter_context(mock.patch(heavy, side_effect=AssertionError(f"{heavy} was reached")))
        code = reft_main(["train", "--task", "style", "--lr", "inf", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code not in (0, None) and "\n" not in err and "Traceback" not in err
    assert "TrainConfig.lr must be a positive number; got inf" in err
    assert not out.exists()


def test_train_config_is_a_config_error_and_a_reft_error():
    with pytest.raises(ConfigError) as e:
        reft.TrainConfig(max_grad_norm=float("nan"))
    assert isinstance(e.value, reft.ReftError)
    assert reft.TrainConfig(max_grad_norm=None).max_grad_norm is None  # None (or 0): no clipping
    with pytest.raises(ConfigError, match=r"DASConfig\.lr .*got inf"):
        interp.DASConfig(lr=float("inf"))
    assert interp.DASConfig.from_dict({"warmup": 0.3}).warmup_ratio == 0.3  # configs saved before the rename load
