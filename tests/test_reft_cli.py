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

    # a second train into the same --out without --overwrite is refused, with the path in the message
    assert main([*train, "--out", str(tmp_path / "run")]) == 2
    assert "run" in capsys.readouterr().err

    # compare: the same training in a child process, and the frozen model's score on the same held-out rows
    compare = ["compare", *common, "--layers", "1", "--positions", "l1", "--rank", "4", "--steps", "60"]
    assert main([*compare, "--lr", "5e-2", "--methods", "loreft"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["methods"]["loreft"]["accuracy"] == 1.0
    assert table["frozen"]["accuracy"] == ev["base"]["accuracy"]
