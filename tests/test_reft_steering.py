"""Steering baselines (reft.steering) on tiny random models: directions, Steer at prompt and decode positions, and
the steering experiment's script (experiments/steer_style.py)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_lm
from experiment_scripts import run_doctests, run_help, script

import interp
import reft
import reft.cli
from interp import Site, first, last
from interp.positions import all_tokens, generated
from reft import data as D
from reft.model import serve_logits
from reft.steering import activations, all_prompt, caa, caa_prompts, diff_in_means, parse_steer_positions, steer
from reft.train import evaluate


def _prompts(seed: int, n: int = 5, lengths=(4, 6)) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 97, (lengths[i % len(lengths)],), generator=g).tolist() for i in range(n)]


def test_diff_in_means_is_the_manual_mean_difference():
    lm = tiny_lm("llama")
    pos, neg = _prompts(0), _prompts(1, n=3)
    site = Site("resid_post", 0, last())
    manual = torch.stack([interp.collect(lm, [p], at=site)[0, 0] for p in pos]).mean(0) - torch.stack(
        [interp.collect(lm, [p], at=site)[0, 0] for p in neg]
    ).mean(0)  # one prompt at a time: no padding anywhere
    assert torch.allclose(diff_in_means(lm, pos, neg, site, batch_size=2), manual, atol=1e-5)
    # a site with several tokens: each prompt's tokens are averaged first
    site2 = Site("resid_post", 1, first(2))
    per = torch.stack([interp.collect(lm, [p], at=site2)[0].mean(0) for p in pos])
    assert torch.allclose(activations(lm, pos, site2), per, atol=1e-5)
    # every prompt token: prompts of different lengths, each averaged over its own tokens
    one = [interp.collect(lm, [p], at=Site("resid_post", 1, interp.span(0, len(p))))[0].mean(0) for p in pos]
    assert torch.allclose(activations(lm, pos, Site("resid_post", 1, all_tokens())), torch.stack(one), atol=1e-5)


def test_strength_zero_is_the_plain_model():
    lm = tiny_lm("llama")
    prompts = _prompts(2, n=4, lengths=(5,))
    v = torch.randn(32, generator=torch.Generator().manual_seed(0))
    for pos in (last(), all_tokens(), all_tokens() + generated()):
        s = steer(lm, Site("resid_post", 0, pos), v, scale=0.0)
        assert torch.allclose(interp.run(s, prompts).logits, interp.run(lm, prompts).logits, atol=1e-6)
        ids = reft.generate_ids(lm, torch.tensor(prompts), serve=[s] * 4, max_new_tokens=4).new_ids
        assert torch.equal(ids, reft.generate_ids(lm, torch.tensor(prompts), max_new_tokens=4).new_ids)  # int ids
    examples = [{"prompt_ids": p, "response_ids": [5, 6]} for p in prompts]
    a, b = evaluate(lm, examples, forward=s.logits), evaluate(lm, examples)
    assert a["accuracy"] == b["accuracy"] and a["loss"] == pytest.approx(b["loss"], abs=1e-5)


def test_steering_adds_the_vector_and_moves_logits_toward_it():
    lm = tiny_lm("llama")
    prompts = _prompts(3, n=4, lengths=(5,))
    site = Site("resid_post", 1, last())  # the last layer: logits = unembed(norm(h))
    h = interp.collect(lm, prompts, at=site)
    t = 42
    v = lm.hf.lm_head.weight[t].detach().clone()  # the unembedding row of token t
    hs = interp.collect(steer(lm, site, v, scale=3.0), prompts, at=site)  # read after the edit
    assert torch.allclose(hs, h + 3.0 * v, atol=1e-5)
    logit_t = [interp.run(steer(lm, site, v, scale=s), prompts).logits[:, t] for s in (0.0, 1.0, 4.0, 50.0)]
    for lo, hi in zip(logit_t, logit_t[1:]):
        assert bool((hi > lo + 1e-4).all())  # toward t: its logit rises with the strength
    top = interp.run(steer(lm, site, v, scale=50.0), prompts).logits.argmax(-1)
    assert top.tolist() == [t] * 4
    minus = interp.run(steer(lm, site, v, scale=-4.0), prompts).logits[:, t]
    assert bool((minus < logit_t[0]).all())


def test_decode_positions_steer_every_generated_token():
    """Generation steered at every prompt and generated token equals recomputing the whole sequence with the
    vector added at all those tokens (teacher forcing, response tokens as the generated ones), token by token."""
    lm = tiny_lm("llama")
    prompt = _prompts(4, n=1, lengths=(5,))[0]
    v = 0.5 * torch.randn(32, generator=torch.Generator().manual_seed(1))
    s = steer(lm, Site("resid_post", 0, all_tokens() + generated()), v, scale=8.0)
    new = reft.generate_ids(lm, torch.tensor([prompt]), serve=[s], max_new_tokens=5).new_ids[0].tolist()
    plain = reft.generate_ids(lm, torch.tensor([prompt]), max_new_tokens=5).new_ids[0].tolist()
    assert new != plain  # the steer matters here
    rb = D.collate(lm, D.tokenize(lm, [D.Example(tuple(prompt), tuple(new))]))
    with torch.no_grad():
        logits = serve_logits(lm, rb, [s])[0]  # (5, V), the vector at every prompt and response column
    top2 = logits.topk(2, dim=-1).values
    for j, tok in enumerate(new):
        assert tok == int(logits[j].argmax()) or float(top2[j, 0] - top2[j, 1]) < 1e-4
    prompt_only = steer(lm, Site("resid_post", 0, all_tokens()), v, scale=8.0)
    assert prompt_only.step_ops(1) == [] and len(s.step_ops(1)) == 1


def test_caa_prompts_alternate_letters_and_need_a_tokenizer():
    items = [{"question": f"Q{i}?", "matching": "Squawk!", "other": "Hello."} for i in range(4)]
    pos, neg = caa_prompts(items)
    assert [p[-1] for p in pos] == ["A", "B", "A", "B"] and [n[-1] for n in neg] == ["B", "A", "B", "A"]
    assert "(A) Squawk!" in pos[0] and "(B) Squawk!" in pos[1] and pos[0][:-1] == neg[0][:-1]
    with pytest.raises(reft.ReftError, match="needs a tokenizer"):
        caa(tiny_lm("llama"), items, layer=0)
    with pytest.raises(reft.ReftError, match="lacks"):
        caa_prompts([{"question": "x"}])


def test_errors():
    lm = tiny_lm("llama")
    with pytest.raises(reft.ReftError, match="no generated tokens"):
        diff_in_means(lm, [[3, 4]], [[5, 6]], Site("resid_post", 0, last() + generated()))
    with pytest.raises(interp.BasisError, match="expected"):
        steer(lm, Site("resid_post", 0, last()), torch.ones(31))
    assert repr(reft.parse_positions("all+g")) == "all_tokens()+generated()"
    with pytest.raises(reft.ReftError):
        reft.parse_positions("everything")


def test_old_names_warn_and_give_the_one_kind():
    with pytest.deprecated_call():
        assert all_prompt() == all_tokens()
    with pytest.deprecated_call():
        assert parse_steer_positions("all+g") == all_tokens() + generated()


def test_activations_equal_the_previous_reader_exactly():
    """activations() now runs on interp.collect(mean=True); the numbers are those of its former own loop."""
    from interp.engine import Op, execute
    from interp.inputs import encode
    from interp.sites import resolve

    lm = tiny_lm("llama")
    prompts = _prompts(4, n=5, lengths=(3, 6, 4))
    for pos in (last(), first(2), all_tokens(), first(1) + last(2)):
        site = Site("resid_post", 1, pos)
        old = []
        for i in range(0, len(prompts), 2):  # the former loop, batches of 2
            batch = encode(lm, prompts[i : i + 2])
            loc = pos.locate(batch.attention_mask, batch.input_ids, lm.tokenizer)
            with torch.no_grad():
                (h,) = execute(lm, batch, [Op(site, resolve(lm, site), loc.index, read=True)], backend="hooks").reads
            w = loc.valid.to(h.device, torch.float32)[..., None]
            old.append((h.float() * w).sum(1) / w.sum(1).clamp(min=1))
        assert torch.equal(activations(lm, prompts, site, batch_size=2), torch.cat(old)), pos


def test_cli_refuses_bad_options_before_loading(tmp_path, monkeypatch, capsys):
    def refuse(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(interp, "load", refuse)
    out = tmp_path / "s.json"
    ok = ["--out", str(out)]
    main = script("steer_style").main
    out.write_text("{}")
    assert main(ok) == 2 and "already exists" in capsys.readouterr().err
    out.unlink()
    for bad, says in (
        (["--methods", "pca"], "unknown ['pca']"),
        (["--strengths", "1,x"], "expected numbers"),
        (["--positions", "middle"], "cannot read positions"),
        (["--steps", "0"], "TrainConfig.steps must be a positive integer; got 0"),
        (["--layer", "99"], "--layer 99"),
        (["--out", str(tmp_path)], "is a folder"),
    ):
        assert main([*ok, *bad]) == 2, bad
        assert says in capsys.readouterr().err, bad
    assert not out.exists()


def test_cli_passes_training_options_to_the_loreft():
    experiment = script("steer_style")
    args = experiment.build_parser().parse_args(["--steps", "5", "--lr", "0.02", "--positions", "l1"])
    train = vars(experiment.train_options(args))
    plain_train = vars(reft.cli.build_parser().parse_args(["train"]))  # `reft train`'s
    assert train.keys() == plain_train.keys() and train["method"] == "loreft"
    assert {k: v for k, v in train.items() if v != plain_train[k]} == {"task": "style", "steps": 5, "lr": 0.02}
    assert experiment.plain(" Squawk! The sun is a star, matey. Squawk!") == " The sun is a star."


def test_the_script_runs_its_help_and_its_examples():
    text = run_help("steer_style")
    assert "--strengths" in text and "--grad-accum" in text  # its own options and reft train's
    run_doctests("steer_style")


def test_the_reft_command_points_to_the_script(capsys):
    assert reft.cli.main(["steer", "--methods", "caa", "--out", "a b.json"]) == 2
    assert capsys.readouterr().err == (
        "reft steer: moved out of the package; run `python experiments/steer_style.py --methods caa --out 'a b.json'` "
        "from the repository's root (same options)\n"
    )
