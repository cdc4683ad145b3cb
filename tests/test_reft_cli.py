"""The reft CLI's argument handling and early errors (no model is loaded for these)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from experiment_scripts import run_doctests, run_help, script

from reft.cli import build_parser, main
from reft.interventions import ReftError


def test_parser_knows_all_commands():
    p = build_parser()
    for cmd in (
        ["train", "--task", "style"],
        ["eval", "--task", "sentiment", "--load", "x"],
        ["generate", "--prompt", "hi"],
        ["compare", "--task", "sentiment", "--json"],
    ):
        assert p.parse_args(cmd).command == cmd[0]


# bad options of both command lines are rows of the bad-input table (tests/bad_inputs_cli.py)


def test_errors_are_one_line_and_debug_shows_the_traceback(capsys, monkeypatch):
    import pytest

    import interp.cli
    from interp.cli import das
    from reft.cli import train
    from reft.interventions import ReftError

    bad = ["train", "--task", "style", "--method", "lorax"]
    assert main(bad) == 2 and capsys.readouterr().err.count("\n") == 1
    with pytest.raises(ReftError, match="unknown method 'lorax'"):
        main([*bad, "--debug"])
    with pytest.raises(ValueError, match="--steps 0"):
        interp.cli.main(["das", "--task", "gender", "--steps", "0", "--debug"])

    def fails(args):
        raise RuntimeError("disk\nfull")

    monkeypatch.setattr(train, "check", fails)  # any failure, not only bad input: exit 1, one line
    assert main(["train", "--task", "style"]) == 1
    err = capsys.readouterr().err
    assert err == "reft train: error: RuntimeError: disk full (run again with --debug for the traceback)\n"

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(das, "check", interrupted)
    assert interp.cli.main(["das", "--task", "gender"]) == 130
    assert capsys.readouterr().err == "interp das: interrupted\n"


def test_label_words_replace_a_classification_tasks_own():
    from reft.cli import load_data

    args = build_parser().parse_args(["train", "--task", "sentiment", "--n-train", "4", "--label-words", "bad, good"])
    data = load_data(args)
    assert data.label_words == {0: " bad", 1: " good"}
    assert {ex["label"] for ex in data.train} <= {0, 1}


# ---- end to end on a tiny model saved to disk: train -> eval -> generate through the CLI ----------------------

WORDS = ["[PAD]", "[UNK]", "<s>", "</s>", "say", "red", "blue", "green", "ok", "now"]


def _tiny_model_dir(path):
    """A 2-layer Llama with a 10-word word-level tokenizer, saved like a Hugging Face checkpoint."""
    import torch
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(WORDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    tok = tf.PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="[PAD]", unk_token="[UNK]"
    )
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(
        vocab_size=len(WORDS),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
        initializer_range=0.5,  # logits large enough for a rank-4 edit to move them far
    )
    tf.LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_train_eval_generate_end_to_end_on_a_tiny_model(tmp_path, capsys):
    model = str(_tiny_model_dir(tmp_path / "tiny"))
    data = tmp_path / "train.jsonl"
    rows = [{"prompt": "say red now", "response": " green"}, {"prompt": "say blue now", "response": " ok"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["--model", model, "--data", str(data), "--eval-data", str(data), "--json"]
    train = ["train", *common, "--layers", "1", "--positions", "l1", "--rank", "4", "--steps", "60", "--lr", "5e-2"]
    assert main([*train, "--out", str(tmp_path / "run")]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["train_loss_last"] < trained["train_loss_first"] / 10
    assert (tmp_path / "run").is_dir()

    assert main(["eval", *common, "--load", str(tmp_path / "run")]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["reft"]["accuracy"] == 1.0 and ev["reft"]["n"] == 2
    assert ev["base"]["accuracy"] < 1.0  # a random model does not answer both; the saved intervention does

    gen = ["generate", "--model", model, "--prompt", "say red now", "--prompt", "say blue now"]
    assert (
        main([*gen, "--load", str(tmp_path / "run"), "--max-new-tokens", "1", "--repetition-penalty", "1.0", "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert [g.strip() for g in out["generations"]] == ["green", "ok"]
    assert main([*gen, "--max-new-tokens", "1", "--json"]) == 0
    assert [g.strip() for g in json.loads(capsys.readouterr().out)["generations"]] != ["green", "ok"]

    # compare: the same training in a child process, and the frozen model's score on the same held-out rows
    compare = ["compare", *common, "--layers", "1", "--positions", "l1", "--rank", "4", "--steps", "60"]
    options = ["--grad-accum", "2", "--weight-decay", "0.01", "--max-grad-norm", "0.5", "--warmup-ratio", "0.2"]
    assert main([*compare, "--lr", "5e-2", *options, "--methods", "loreft"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["methods"]["loreft"]["accuracy"] == 1.0
    assert table["frozen"]["accuracy"] == ev["base"]["accuracy"]
    # the worker trained with every option given to compare (its TrainConfig, from its own JSON output)
    used = table["methods"]["loreft"]["config"]
    want = {"grad_accum": 2, "weight_decay": 0.01, "max_grad_norm": 0.5, "warmup_ratio": 0.2, "steps": 60, "lr": 5e-2}
    assert {k: used[k] for k in want} == want


# ---- options: TrainConfig's fields, and what compare hands its workers -------------------------------------


def _non_default(name, kind, default):
    """A value for TrainConfig field ``name`` that differs from its default and passes TrainConfig's checks."""
    if kind is bool:
        return not default
    if kind is str:
        return "cosine" if name == "schedule" else "ckpt"  # schedule: one of linear, cosine, constant
    if kind is float:
        return 0.25 if default != 0.25 else 0.5
    return (default or 0) + 3


def test_every_train_config_field_is_an_option_that_reaches_the_config():
    from reft.cli import NONE, train_config, train_config_fields
    from reft.train import TrainConfig

    exposed = train_config_fields()
    assert {name for name, _, _ in exposed} == {f.name for f in dataclasses.fields(TrainConfig)}
    argv, want = ["train", "--data", "x.jsonl"], {}
    for name, kind, default in exposed:
        value = _non_default(name, kind, default)
        flag = "--" + name.replace("_", "-")
        argv += [flag if value else "--no-" + flag[2:]] if kind is bool else [flag, str(value)]
        want[name] = value
    config = train_config(build_parser().parse_args(argv), {})
    assert config.to_dict() == want

    # unset options: the task's default, else the CLI's, else TrainConfig's; 'none' for an optional field
    args = build_parser().parse_args(["train", "--task", "style", "--max-prompt-tokens", NONE, "--batch-size", "3"])
    config = train_config(args, {"steps": 20, "add_eos": True, "batch_size": 10})
    assert (config.steps, config.add_eos, config.batch_size, config.max_prompt_tokens) == (20, True, 3, None)
    assert (config.progress, config.weight_decay) == (False, TrainConfig().weight_decay)
    assert train_config(build_parser().parse_args(["train", "--data", "x", "--epochs", "2"]), {}).steps is None
    assert train_config(build_parser().parse_args(["train", "--data", "x"]), {"lora_lr": 2e-3}, "lora").lr == 2e-3


def test_compare_hands_every_option_to_each_worker():
    from reft.cli import train_config, train_config_fields
    from reft.cli.compare import worker_args

    argv = ["compare", "--data", "t.jsonl", "--eval-data", "e.jsonl", "--label-words", "no,yes", "--model", "m"]
    argv += ["--n-train", "5", "--layers", "0;1", "--positions", "f2+l2", "--rank", "2", "--untied", "--head"]
    argv += ["--lora-rank", "4", "--out", "runs/c", "--overwrite", "--methods", "loreft,lora", "--jobs", "2"]
    for name, kind, default in train_config_fields():
        value = _non_default(name, kind, default)
        flag = "--" + name.replace("_", "-")
        argv += [flag if value else "--no-" + flag[2:]] if kind is bool else [flag, str(value)]
    given = build_parser().parse_args(argv)
    train_options = vars(build_parser().parse_args(["train"])).keys()  # what `reft train` reads, no more, no less
    for method in ("loreft", "lora"):
        worker = worker_args(given, method)
        assert worker.method == method and vars(worker).keys() == train_options
        for key, value in vars(given).items():
            if key in ("command", "methods", "jobs", "json", "seeds"):
                continue  # compare's own
            if key in ("out", "checkpoint_dir"):
                assert getattr(worker, key) == f"{value}/{method}"  # one folder per method
            elif method == "lora" and key in ("lr", "head"):
                assert getattr(worker, key) in (None, False)  # LoRA keeps its own rate; it has no head
            else:
                assert getattr(worker, key) == value, key
        differ = {"checkpoint_dir", *(("lr",) if method == "lora" else ())}  # checked above
        config = {k: v for k, v in train_config(worker, {}, method).to_dict().items() if k not in differ}
        assert config == {k: v for k, v in train_config(given, {}, method).to_dict().items() if k not in differ}


def test_compare_runs_a_method_at_its_own_positions_once_per_seed():
    from reft.cli.compare import methods_of, seeds_of, worker_args

    given = build_parser().parse_args(
        ["compare", "--task", "addition", "--methods", "loreft,loreft@f1+l3+g,lora", "--seeds", "0,2", "--out", "r"]
    )
    assert methods_of(given) == ["loreft", "loreft@f1+l3+g", "lora"] and seeds_of(given) == [0, 2]
    worker = worker_args(given, "loreft@f1+l3+g", seed=2)
    got = (worker.method, worker.positions, worker.seed, worker.out)
    assert got == ("loreft", "f1+l3+g", 2, "r/loreft-at-f1_l3_g-seed2")
    plain = worker_args(given, "loreft", seed=0)
    assert (plain.positions, plain.seed, plain.out) == (None, 0, "r/loreft-seed0")  # the task's positions


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--methods", "lora@f1"], "positions after '@' apply to ReFT methods"),
        (["--methods", "loreft@f1+x"], "cannot read positions"),
        (["--methods", "loreft,loreft"], "names a method twice"),
        (["--seeds", "0,x"], "expected integers"),
        (["--seeds", "1,1"], "distinct"),
        (["--seeds", "0,1", "--seed", "3"], "not both"),
    ],
)
def test_compare_refuses_bad_methods_and_seeds_before_work(extra, match):
    from reft.cli.compare import check

    with pytest.raises(ReftError, match=match):
        check(build_parser().parse_args(["compare", "--task", "addition", *extra]))


def test_over_seeds_reports_mean_standard_error_and_each_seed():
    from reft.cli.compare import over_seeds

    r = over_seeds([{"accuracy": 0.2, "style_rate": 1.0, "rank": 4}, {"accuracy": 0.4, "style_rate": 0.5, "rank": 4},
                    {"accuracy": 0.9, "style_rate": 0.0, "rank": 4}])  # fmt: skip
    assert r["accuracy_mean"] == pytest.approx(0.5) and r["accuracy_per_seed"] == [0.2, 0.4, 0.9]
    assert r["accuracy_se"] == pytest.approx(0.2081666, abs=1e-6)  # stdev (n - 1) / sqrt(3)
    assert r["style_rate_mean"] == pytest.approx(0.5) and r["rank"] == 4 and "accuracy" not in r


def test_the_experiment_checks_tasks_and_its_output_file_before_work(tmp_path):
    experiment = script("decode_time")
    parse = experiment.build_parser().parse_args
    (tmp_path / "old.json").write_text("{}")
    (tmp_path / "a-file").write_text("")
    for argv, error, match in [
        (["--tasks", "style,nope"], ReftError, "unknown"),
        (["--out", str(tmp_path / "x.txt")], ReftError, "expected a .json file"),
        (["--out", str(tmp_path / "old.json")], FileExistsError, "already exists; pass --overwrite"),
        (["--out", str(tmp_path / "a-file" / "x.json")], NotADirectoryError, "is a file"),
        (["--steps", "0"], ReftError, "positive"),
    ]:
        with pytest.raises(error, match=match):
            experiment.check(parse(argv))
    experiment.check(parse(["--out", str(tmp_path / "new" / "x.json")]))
    args = parse(["--tasks", "addition,sentiment", "--seeds", "0,1"])
    experiment.check(args)
    assert experiment.compare_args(args, "addition").methods == "loreft,loreft@f1+l3+g,lora"  # the task's positions
    assert experiment.compare_args(args, "sentiment").methods == "loreft,lora"
    assert experiment.compare_args(args, "style").n_test == 30


def test_the_experiment_script_runs_its_help_and_examples_and_reft_experiment_points_to_it(capsys):
    assert "--seeds" in run_help("decode_time")
    run_doctests("decode_time")
    assert main(["experiment", "--tasks", "style"]) == 2
    assert capsys.readouterr().err == (
        "reft experiment: moved out of the package; run `python experiments/decode_time.py --tasks style` from the "
        "repository's root (same options)\n"
    )


# ---- one task registry for both command lines -------------------------------------------------------------


def _choices(parser, dest="task"):
    return tuple(next(a for a in parser._actions if a.dest == dest).choices)


def test_one_task_registry_serves_both_command_lines():
    import argparse

    import pytest

    import reft.tasks
    from interp.cli import das, patch, sweep
    from interp.tasks import registry
    from reft.interventions import ReftError

    sub = argparse.ArgumentParser().add_subparsers()
    assert _choices(das.add_parser(sub)) == _choices(sweep.add_parser(sub)) == registry.names("das")
    assert _choices(patch.add_parser(sub)) == registry.names("patch")
    reft_sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    for cmd in ("train", "eval", "compare"):
        assert _choices(reft_sub[cmd]) == registry.names("reft") == ("style", "sentiment", "addition")
    assert set(registry.names()) >= {"ioi", "gender", "capitals", "hierarchical-equality", "style", "sentiment"}
    assert reft.tasks.get("addition") is registry.get("addition", "reft")

    with pytest.raises(registry.UnknownTaskError, match="unknown reft task 'nope'; known: style, sentiment, addition"):
        registry.get("nope", "reft")
    with pytest.raises(ReftError, match=r"unknown reft task 'nope'; known: style, sentiment, addition \(or pass"):
        reft.tasks.get("nope")
    with pytest.raises(ValueError, match="unknown das task 'nope'; known: hierarchical-equality, ioi, gender"):
        das.setup("nope", n=None, seed=0, model=None)
    with pytest.raises(registry.UnknownTaskError, match="unknown kind of task 'nope'; known: patch, das, reft"):
        registry.names("nope")
    with pytest.raises(ValueError, match="already registered"):
        registry.register("style", "reft", "somewhere.else")
    registry.register("style", "reft", "reft.tasks.style")  # again, the same: a no-op
    assert registry.names("reft") == ("style", "sentiment", "addition")
