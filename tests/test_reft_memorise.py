"""Memorisation (reft.memorise) on tiny random models: counting, early stopping, greedy agreement, and the CLI."""

from __future__ import annotations

import pytest
import torch
from conftest import sharp_llama, tiny_lm

import interp
from reft import data as D
from reft.cli import main
from reft.memorise import cells_of, memorise, memorise_table, prefix_match
from reft.model import serve_logits

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
    with pytest.raises(ReftError, match="a cell asks for 40"):
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
    ok = ["memorise", "--out", str(out), "--plot", str(plot)]
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
    from reft.cli.memorise import format_table

    lines = format_table([{"length": 8, "layer": 1, "recovered": 4, "greedy": None, "steps": 10, "seconds": 0.5}])
    assert lines[0].split() == ["length", "layer", "recovered", "greedy", "steps", "seconds"]
    assert lines[1].split() == ["8", "1", "4/8", "(50%)", "-", "10", "0.5"]
