"""Memorisation (experiments/memorise.py) on tiny random models: counting, early stopping, greedy agreement, the
script's command line, and the ``reft.memorise`` alias and ``reft memorise`` command that point to it."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import sharp_llama, tiny_lm
from experiment_scripts import run_doctests, run_help, script

import interp
import reft
import reft.cli
from reft import data as D
from reft.model import serve_logits

experiment = script("memorise")
cells_of, memorise, memorise_table, prefix_match = (
    experiment.cells_of, experiment.memorise, experiment.memorise_table, experiment.prefix_match
)  # fmt: skip
main = experiment.main
PROMPT = [1, 5, 7]


def test_prefix_match_counts_leading_equal_tokens():
    assert prefix_match([4, 5, 6, 0, 7], [4, 5, 6, 9, 7]) == 3  # a later match after the error does not count
    assert prefix_match([4, 5, 6], [4, 5, 6]) == 3
    assert prefix_match([9, 5, 6], [4, 5, 6]) == 0
    assert prefix_match(torch.tensor([4, 5]), [4, 5, 6]) == 2  # a shorter prediction (greedy stopped at EOS)
    assert prefix_match([], [1]) == 0


def _continuation(lm, prompt, first: int, n: int) -> list[int]:
    """``[first]`` then the model's own greedy continuation of ``prompt + [first]``: ``n`` tokens in all."""
    seq = list(prompt) + [first]
    with torch.no_grad():
        for _ in range(n - 1):
            seq.append(int(interp.run(lm, torch.tensor([seq])).logits[0].argmax()))
    return seq[len(prompt) :]


def test_memorise_recovers_a_short_text_and_stops_early():
    # A 2-layer model edited at the last layer: the edit sets the first token's prediction. Text: a random first
    # token the model does not predict, then the model's own continuation (tiny random models cannot store an
    # arbitrary text behind one edited vector; the paper's 7B model can).
    lm = tiny_lm("llama")
    with torch.no_grad():
        plain = int(interp.run(lm, torch.tensor([PROMPT])).logits[0].argmax())
    # a first token the model does not predict, whose continuation has no EOS (2): greedy decoding would stop
    text = next(t for t in (_continuation(lm, PROMPT, f, 8) for f in range(11, 97) if f != plain) if 2 not in t)
    res = memorise(lm, text, layer=1, rank=1, steps=300, lr=5e-2, prompt=PROMPT, verify=True)
    assert (res.recovered, res.length, res.greedy) == (8, 8, 8) and res.complete
    assert res.steps < 300 and res.best_step == res.steps  # stopped as soon as all 8 were recovered
    assert res.losses[0] > res.final_loss
    assert res.to_dict()["recovered"] == 8 and "losses" not in res.to_dict()


def test_recovered_prefix_is_the_teacher_forced_argmax_prefix_and_greedy_agrees():
    lm = sharp_llama(4, width=64, kv_heads=4, init=0.1)
    text = torch.randint(3, 97, (8,), generator=torch.Generator().manual_seed(0)).tolist()
    res = memorise(lm, text, layer=0, rank=1, steps=40, lr=1e-1, prompt=PROMPT, verify=True)
    rb = D.collate(lm, D.tokenize(lm, [D.Example(tuple(PROMPT), tuple(text))]))
    with torch.no_grad():
        pred = serve_logits(lm, rb, [res.model])[0].argmax(-1).tolist()  # (8,) with the kept weights
    manual = next((i for i, (a, b) in enumerate(zip(pred, text)) if a != b), len(text))
    assert res.recovered == manual >= 1  # the first token at least (predicted at the edited position)
    assert res.greedy == res.recovered  # greedy decoding agrees up to its first error
    assert res.steps <= 40


def test_max_seconds_and_steps_bound_training():
    lm = tiny_lm("llama")
    res = memorise(lm, [11, 12, 13, 14], layer=0, steps=2, lr=1e-2, prompt=PROMPT)
    assert res.steps <= 2 and len(res.losses) == res.steps + 1
    res = memorise(lm, [11, 12, 13, 14], layer=0, steps=300, lr=1e-2, prompt=PROMPT, max_seconds=1e-9)
    assert res.steps <= 1


def test_errors_name_the_fix():
    from reft.interventions import ReftError

    lm = tiny_lm("llama")
    with pytest.raises(ReftError, match="no tokenizer"):
        memorise(lm, "some text", layer=0, steps=1)
    with pytest.raises(ReftError, match="layers 0..1"):
        memorise(lm, [3, 4], layer=2, steps=1, prompt=PROMPT)
    with pytest.raises(ReftError, match="17 tokens; length 40 asks for more"):
        memorise_table(lm, cells=[(40, 0)], text=list(range(3, 20)), steps=1, prompt=PROMPT)


def test_table_cells_and_rows():
    assert cells_of((32, 64, 128), (3, 9, 15), layer=9, layers_at=128) == [
        (32, 9),
        (64, 9),
        (128, 9),
        (128, 3),
        (128, 15),
    ]
    lm = tiny_lm("llama")
    seen = []
    rows = memorise_table(
        lm, cells=[(3, 0), (5, 1)], text=list(range(10, 30)), steps=2, prompt=PROMPT, report=seen.append
    )
    assert [(r["length"], r["layer"]) for r in rows] == [(3, 0), (5, 1)] and seen == rows
    assert all(0 <= r["recovered"] <= r["length"] and r["fraction"] == r["recovered"] / r["length"] for r in rows)


def test_cli_refuses_bad_options_before_loading(tmp_path, monkeypatch, capsys):
    def refuse(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(interp, "load", refuse)
    out, plot = tmp_path / "m.json", tmp_path / "m.png"
    ok = ["--out", str(out), "--plot", str(plot)]
    out.write_text("{}")
    assert main(ok) == 2 and "already exists" in capsys.readouterr().err
    out.unlink()
    for bad, says in (
        (["--lengths", "0,32"], "--lengths"),
        (["--lengths", "32,x"], "expected integers"),
        (["--lengths", "9999"], "1..643"),
        (["--steps", "0"], "--steps 0"),
        (["--lr", "-1"], "--lr -1"),
        (["--plot", str(out)], "same file"),
        (["--plot", str(tmp_path)], "is a folder"),
        (["--model", str(tmp_path / "nope")], "cannot read its config"),
    ):
        assert main([*ok, *bad]) == 2, bad
        assert says in capsys.readouterr().err, bad
    assert not out.exists() and not plot.exists()


def test_table_text():
    lines = experiment.format_table(
        [{"length": 8, "layer": 1, "recovered": 4, "greedy": None, "steps": 10, "seconds": 0.5}]
    )
    assert lines[0].split() == ["length", "layer", "recovered", "greedy", "steps", "seconds"]
    assert lines[1].split() == ["8", "1", "4/8", "(50%)", "-", "10", "0.5"]


def test_the_script_runs_its_help_and_its_examples():
    assert "--layers-at" in run_help("memorise")
    torch.manual_seed(0)
    lm = tiny_lm("llama")
    rlm = reft.attach(lm, {reft.Site("resid_post", 1, reft.last()): reft.LoReFT(lm.d_model, rank=1)})
    run_doctests("memorise", lm=lm, rlm=rlm)


def test_the_passage_is_the_one_the_results_were_measured_on():
    text = experiment.PASSAGE
    assert len(text) == 3024 and text.startswith("The lighthouse on the northern cape") and text.count("\n\n") == 5
    assert text.endswith("seems to pause before it sweeps on.")


def test_reft_memorise_is_an_alias_of_the_script_for_one_release():
    sys.modules.pop("reft.memorise", None)
    with pytest.warns(DeprecationWarning, match="reft.memorise moved .* experiments/memorise.py"):
        old = importlib.import_module("reft.memorise")
    assert (
        old.memorise is memorise and old.PASSAGE == experiment.PASSAGE and old.greedy_prefix is experiment.greedy_prefix
    )
    assert set(old.__all__) >= {"memorise", "memorise_table", "prefix_match", "passage_ids", "cells_of", "Memorised"}
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        old.nope  # noqa: B018


def test_reft_memorise_says_where_the_experiment_lives_outside_a_checkout(tmp_path, monkeypatch):
    """Installed without the repository (no experiments/ beside the package): a clear ImportError."""
    monkeypatch.delitem(sys.modules, "experiments.memorise")
    spec = importlib.util.find_spec("reft.memorise")
    copy = tmp_path / "pkg" / "reft" / "memorise.py"  # the module alone, in a tree without experiments/
    copy.parent.mkdir(parents=True)
    copy.write_text(Path(spec.origin).read_text())
    alone = importlib.util.spec_from_file_location("reft_memorise_alone", copy)
    with warnings.catch_warnings(), pytest.raises(ImportError, match="source repository .*experiments/memorise.py"):
        warnings.simplefilter("ignore", DeprecationWarning)
        alone.loader.exec_module(importlib.util.module_from_spec(alone))
    assert "experiments.memorise" not in sys.modules


def test_the_reft_command_points_to_the_script(capsys):
    assert reft.cli.main(["memorise", "--lengths", "32,64", "--layer", "9"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "reft memorise: moved out of the package; run `python experiments/memorise.py --lengths 32,64 --layer 9` "
        "from the repository's root (same options)\n"
    )
