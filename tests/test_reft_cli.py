"""The reft CLI's argument handling and early errors (no model is loaded for these)."""

from __future__ import annotations

import json

from reft.cli import build_parser, main


def test_parser_knows_all_commands():
    p = build_parser()
    for cmd in (
        ["train", "--task", "style"],
        ["eval", "--task", "sentiment", "--load", "x"],
        ["generate", "--prompt", "hi"],
        ["compare", "--task", "sentiment", "--json"],
    ):
        assert p.parse_args(cmd).command == cmd[0]


def test_bad_inputs_fail_before_loading_a_model(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "hello"}) + "\n")
    assert main(["train", "--data", str(bad)]) == 2
    assert "example 0 has no response" in capsys.readouterr().err
    assert main(["train", "--task", "style", "--method", "lorax"]) == 2
    assert "unknown method 'lorax'" in capsys.readouterr().err
    assert main(["compare", "--task", "sentiment", "--methods", "loreft,nope"]) == 2
