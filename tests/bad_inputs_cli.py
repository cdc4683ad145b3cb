"""Bad-input rows: the ``interp`` and ``reft`` command lines. Joined into one table by test_bad_inputs.

Every row runs ``main(argv)`` with loading a model, training and starting workers made to fail loudly
(:class:`Loaded` is not an ``Exception``, so no ``main`` catches it): each refusal must come before any of them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from unittest import mock

import pytest
from experiment_scripts import script
from test_bad_inputs import CLI, Bad

from interp.cli import main as interp_main
from reft.cli import main as reft_main

HEAVY = (  # what a refused command line must not reach
    "interp.load",
    "interp.das.fit_das",
    "interp.tasks.hierarchical_equality.train_equality_mlp",
    "reft.train.train_reft",
    "reft.baselines.train_lora",
    "subprocess.Popen",  # reft compare's workers
)


class Loaded(BaseException):
    """A refused command line got as far as loading a model, training or starting a worker."""


def _heavy(*args, **kwargs):
    raise Loaded("the command line loaded a model (or trained) before refusing its input")


def _run(main, argv, env) -> int:
    with contextlib.ExitStack() as stack:
        for target in HEAVY:
            stack.enter_context(mock.patch(target, _heavy))
        return main([str(a(env)) if callable(a) else a for a in argv])


def interp(*argv):
    """A row's call: ``interp *argv``, where an item that is a function of ``env`` (a path maker) is called."""
    return lambda env: _run(interp_main, argv, env)


def reft(*argv):
    """A row's call: ``reft *argv``, as :func:`interp`."""
    return lambda env: _run(reft_main, argv, env)


def experiment(name, *argv):
    """A row's call: ``python experiments/<name>.py *argv`` (the script's ``main``, in this process)."""
    return lambda env: _run(script(name).main, argv, env)


def _script(name: str) -> str:
    """The prog of ``experiments/<name>.py`` in its one-line errors, as a regular expression."""
    return re.escape(f"python experiments/{name}.py")


# ---- paths and files a row's command line is given ------------------------------------------------------------


def _file(env):
    p = env.tmp / "a-file"
    p.write_text("not a folder")
    return p


def _under_file(env):
    return _file(env) / "sub"


def _full(env):
    p = env.tmp / "a-run"
    p.mkdir()
    (p / "kept.txt").write_text("earlier work")
    return p


def _read_only(env):
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    p = env.tmp / "locked"
    p.mkdir()
    p.chmod(0o555)  # stays empty, so the temporary folder can still be removed
    return p / "run"


def _missing(env):
    return env.tmp / "missing"


def _patched_before(env):
    p = env.tmp / "results"
    p.mkdir()
    (p / "patch_ioi.json").write_text("{}")
    return p


def _tiny(env):
    """A model folder holding only a config (2 layers, d_model 32): enough to check layers and ranks."""
    import transformers

    p = env.tmp / "tiny-config"
    cfg = transformers.LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4
    )
    cfg.save_pretrained(p)
    return p


def _no_response(env):
    p = env.tmp / "bad.jsonl"
    p.write_text(json.dumps({"prompt": "hello"}) + "\n")
    return p


def _old_checkpoints(env):
    p = env.tmp / "ckpt"
    (p / "step-5").mkdir(parents=True)
    return p


def _not_json(env):
    p = env.tmp / "broken.jsonl"
    p.write_text(json.dumps({"prompt": "a", "response": "b"}) + '\n{"prompt": "c",\n')
    return p


DAS = ("das", "--task", "gender")
SWEEP = ("sweep", "--task", "gender", "--out", _missing)
PATCH = ("patch", "--out", _missing)
TRAIN = ("train", "--task", "style")

ROWS = [
    # ---- interp: output folders, before the model loads or the task is built
    Bad("interp das --save not empty", interp(*DAS, "--save", _full), CLI, r"--save folder .*a-run' already exists"),
    Bad("interp das --save is a file", interp(*DAS, "--save", _file), CLI, r"--save folder .*a-file' is a file"),
    Bad("interp das --save read-only", interp(*DAS, "--save", _read_only), CLI, r"locked' is not writable"),
    Bad("interp patch --out is a file", interp("patch", "--out", _file), CLI, r"--out folder .*a-file' is a file"),
    Bad("interp patch --out read-only", interp("patch", "--out", _read_only), CLI, r"locked' is not writable"),
    Bad(
        "interp patch --out holds results",
        interp("patch", "--out", _patched_before),
        CLI,
        r"patch_ioi.json already exists; pass --overwrite",
    ),
    Bad("interp sweep --out under a file", interp(*SWEEP[:3], "--out", _under_file), CLI, r"a-file' is a file"),
    Bad("interp sweep --out read-only", interp("sweep", "--task", "ioi", "--out", _read_only), CLI, r"not writable"),
    # ---- interp: positions, layers and ranks (from the model's config alone), numbers, tasks
    Bad(
        "interp das --position",
        interp(*DAS, "--position", "nope"),
        CLI,
        r"--position nope: task 'gender' has positions name, verb, last",
    ),
    Bad("interp sweep --positions", interp(*SWEEP, "--positions", "name,nope"), CLI, r"--positions nope: .*verb"),
    Bad("interp das --layer", interp(*DAS, "--model", _tiny, "--layer", "5"), CLI, r"--layer 5: .*layers 0\.\.1"),
    Bad(
        "interp das --layer of its own model",
        interp("das", "--task", "hierarchical-equality", "--layer", "3"),
        CLI,
        r"--layer 3: task 'hierarchical-equality' has layers 0\.\.2",
    ),
    Bad("interp patch --layers", interp(*PATCH, "--model", _tiny, "--layers", "0;7"), CLI, r"--layers '0;7'.*0\.\.1"),
    Bad("interp patch --layers unread", interp(*PATCH, "--model", _tiny, "--layers", "a;b"), CLI, r"--layers 'a;b'"),
    Bad("interp sweep --layers", interp(*SWEEP, "--model", _tiny, "--layers", "9"), CLI, r"--layers '9'.*0\.\.1"),
    Bad("interp sweep --ranks unread", interp(*SWEEP, "--ranks", "1,x"), CLI, r"--ranks '1,x': expected integers"),
    Bad("interp sweep --ranks wide", interp(*SWEEP, "--model", _tiny, "--ranks", "1,64"), CLI, r"\[64\].*1\.\.32"),
    Bad("interp das --rank 0", interp(*DAS, "--rank", "0"), CLI, r"--rank 0: expected a positive number"),
    Bad("interp das --rank wide", interp(*DAS, "--model", _tiny, "--rank", "33"), CLI, r"--rank 33: .*32 wide"),
    Bad("interp das --steps 0", interp(*DAS, "--steps", "0"), CLI, r"--steps 0: expected a positive number"),
    Bad("interp das --lr 0", interp(*DAS, "--lr", "0"), CLI, r"--lr 0.0: expected a positive number"),
    Bad("interp sweep --batch-size 0", interp(*SWEEP, "--batch-size", "0"), CLI, r"--batch-size 0: expected"),
    Bad("interp das --n 2", interp(*DAS, "--n", "2"), CLI, r"--n 2: expected at least 4 pairs"),
    Bad("interp patch --n 0", interp(*PATCH, "--n", "0"), CLI, r"--n 0: expected at least 1 pair"),
    Bad(
        "interp sweep over an MLP task",
        interp("sweep", "--task", "hierarchical-equality", "--out", _missing),
        CLI,
        r"sweep over 'hierarchical-equality' is not offered.*interp das",
    ),
    Bad("interp das unknown task", interp("das", "--task", "nope"), CLI, r"--task: invalid choice: 'nope'"),
    Bad("interp patch --component", interp(*PATCH, "--component", "attn"), CLI, r"--component: invalid choice"),
    Bad("interp das --model missing", interp(*DAS, "--model", _missing), CLI, r"--model .*missing': cannot read"),
    # ---- reft: output folders, before the data is read or the model loads
    Bad("reft train --out not empty", reft(*TRAIN, "--out", _full), CLI, r"--out folder .*a-run' already exists"),
    Bad("reft train --out is a file", reft(*TRAIN, "--out", _file), CLI, r"--out folder .*a-file' is a file"),
    Bad("reft train --out read-only", reft(*TRAIN, "--out", _read_only), CLI, r"locked' is not writable"),
    Bad(
        "reft train --checkpoint-dir is a file",
        reft(*TRAIN, "--checkpoint-every", "5", "--checkpoint-dir", _file),
        CLI,
        r"--checkpoint-dir folder .*a-file' is a file",
    ),
    Bad(
        "reft train --checkpoint-every alone",
        reft(*TRAIN, "--checkpoint-every", "5"),
        CLI,
        r"checkpoint_every needs checkpoint_dir",
    ),
    Bad(
        "reft compare --out under a file",
        reft("compare", "--task", "style", "--methods", "loreft", "--out", _file),
        CLI,
        r"--out folder .*a-file/loreft': .*a-file' is a file",
    ),
    # ---- reft: methods, data, layers (from the model's config alone), positions, numbers
    Bad("reft train unknown method", reft(*TRAIN, "--method", "lorax"), CLI, r"unknown method 'lorax'"),
    Bad(
        "reft compare unknown method",
        reft("compare", "--task", "sentiment", "--methods", "loreft,nope"),
        CLI,
        r"--methods 'loreft,nope': unknown \['nope'\]",
    ),
    Bad("reft compare --jobs 0", reft("compare", "--task", "style", "--jobs", "0"), CLI, r"--jobs 0: expected"),
    Bad("reft train unknown task", reft("train", "--task", "nope"), CLI, r"--task: invalid choice: 'nope'"),
    Bad("reft train --data missing", reft("train", "--data", _missing), CLI, r"--data .*missing' does not exist"),
    Bad("reft train --data no response", reft("train", "--data", _no_response), CLI, r"example 0 has no response"),
    Bad(
        "reft train --checkpoint-dir with step-N",
        reft(*TRAIN, "--checkpoint-every", "5", "--checkpoint-dir", _old_checkpoints),
        CLI,
        r"--checkpoint-dir folder .*ckpt' already holds step-5/",
    ),
    Bad("reft train --data not json", reft("train", "--data", _not_json), CLI, r"broken\.jsonl:2: not valid JSON"),
    Bad("reft train --task and --data", reft(*TRAIN, "--data", _no_response), CLI, r"either --task or --data"),
    Bad("reft train no data", reft("train"), CLI, r"no data: pass --task"),
    Bad(
        "reft train --label-words on a generation task",
        reft(*TRAIN, "--label-words", "no,yes"),
        CLI,
        r"--label-words applies to classification; task 'style'",
    ),
    Bad(
        "reft train --label-words count",
        reft("train", "--task", "sentiment", "--label-words", "bad,so-so,good"),
        CLI,
        r"gives 3 words; task 'sentiment' has 2 labels",
    ),
    Bad(
        "reft eval --label-words one",
        reft("eval", "--task", "sentiment", "--load", _full, "--label-words", "x"),
        CLI,
        r"--label-words 'x': expected two or more words",
    ),
    Bad(
        "reft train --layers", reft(*TRAIN, "--model", _tiny, "--layers", "5"), CLI, r"layer 5 does not exist.*2 layers"
    ),
    Bad("reft train --layers unread", reft(*TRAIN, "--model", _tiny, "--layers", "x"), CLI, r"cannot read layers 'x'"),
    Bad("reft train --positions", reft(*TRAIN, "--positions", "f1+q2"), CLI, r"cannot read positions 'f1\+q2'"),
    Bad("reft train --rank 0", reft(*TRAIN, "--rank", "0"), CLI, r"--rank 0: expected a positive number"),
    Bad(
        "reft train --rank wide",
        reft(*TRAIN, "--model", _tiny, "--layers", "1", "--rank", "64"),
        CLI,
        r"--rank 64: .*d_model is 32",
    ),
    Bad("reft train --lora-rank 0", reft(*TRAIN, "--method", "lora", "--lora-rank", "0"), CLI, r"--lora-rank 0"),
    Bad("reft train --steps 0", reft(*TRAIN, "--steps", "0"), CLI, r"TrainConfig.steps must be a positive .*got 0"),
    Bad("reft train --lr 0", reft(*TRAIN, "--lr", "0"), CLI, r"TrainConfig.lr must be a positive number; got 0\.0"),
    Bad("reft train --batch-size 0", reft(*TRAIN, "--batch-size", "0"), CLI, r"TrainConfig.batch_size .*got 0"),
    Bad("reft train --n-train 0", reft(*TRAIN, "--n-train", "0"), CLI, r"--n-train 0: expected at least 1"),
    Bad("reft train --head with lora", reft(*TRAIN, "--method", "lora", "--head"), CLI, r"--head .*--method lora"),
    Bad(
        "reft train --eval-every with lora",
        reft(*TRAIN, "--method", "lora", "--eval-every", "5"),
        CLI,
        r"--eval-every apply to ReFT methods",
    ),
    Bad("reft train --model missing", reft(*TRAIN, "--model", _missing), CLI, r"--model .*missing': cannot read"),
    Bad("reft eval --load missing", reft("eval", "--task", "style", "--load", _missing), CLI, r"--load .*not a folder"),
    Bad("reft generate --load missing", reft("generate", "--prompt", "hi", "--load", _missing), CLI, r"not a folder"),
    Bad(
        "reft generate --max-new-tokens 0",
        reft("generate", "--prompt", "hi", "--max-new-tokens", "0"),
        CLI,
        r"--max-new-tokens 0: expected a positive number",
    ),
]


def _pyreft(env):
    """A folder in pyreft's layout (config.json, intkey_<key>.bin), as IntervenableModel.save writes it."""
    p = env.tmp / "pyreft-run"
    p.mkdir()
    (p / "config.json").write_text(json.dumps({"representations": [], "intervention_types": []}))
    (p / "intkey_layer_1_comp_block_output_unit_pos_nunit_1#0.bin").write_bytes(b"")
    return p


def _one_line(prog: str, message: str) -> str:
    """The whole of stderr: ``<prog>: error: <message>`` and where to look, on one line."""
    return rf"\A{prog}: error: {message} \(see {prog} --help\)\n\Z"


_FLOAT, _INT = "argument {}: invalid float value: 'x'", "argument {}: invalid int value: 'x'"
ONE_LINE = [  # argparse's own refusals: one line, not the whole usage
    Bad("interp: unknown command", interp("nope"), CLI,
        _one_line("interp", r"argument command: invalid choice: 'nope'.*")),
    Bad("interp das --steps x", interp(*DAS, "--steps", "x"), CLI, _one_line("interp das", _INT.format("--steps"))),
    Bad("interp patch --n x", interp("patch", "--n", "x"), CLI, _one_line("interp patch", _INT.format("--n"))),
    Bad("interp sweep no --task", interp("sweep"), CLI, _one_line("interp sweep", "the following arguments are "
                                                                                   "required: --task")),
    Bad("interp unrecognized", interp(*DAS, "--nope"), CLI, _one_line("interp", "unrecognized arguments: --nope")),
    Bad("reft: unknown command", reft("nope"), CLI, _one_line("reft", r"argument command: invalid choice: 'nope'.*")),
    Bad("reft train --lr x", reft(*TRAIN, "--lr", "x"), CLI, _one_line("reft train", _FLOAT.format("--lr"))),
    Bad("reft eval --batch-size x", reft("eval", "--batch-size", "x"), CLI,
        _one_line("reft eval", _INT.format("--batch-size"))),
    Bad("reft generate no --prompt", reft("generate"), CLI,
        _one_line("reft generate", "the following arguments are required: --prompt")),
    Bad("reft compare --jobs x", reft("compare", "--jobs", "x"), CLI, _one_line("reft compare", _INT.format("--jobs"))),
    Bad("decode_time.py --jobs x", experiment("decode_time", "--jobs", "x"), CLI,
        _one_line(_script("decode_time"), _INT.format("--jobs"))),
    Bad("memorise.py --layer x", experiment("memorise", "--layer", "x"), CLI,
        _one_line(_script("memorise"), _INT.format("--layer"))),
    Bad("steer_style.py --layer x", experiment("steer_style", "--layer", "x"), CLI,
        _one_line(_script("steer_style"), _INT.format("--layer"))),
    Bad("reft experiment (moved)", reft("experiment", "--jobs", "x"), CLI,
        r"\Areft experiment: moved out of the package; run `python experiments/decode_time\.py --jobs x` .*\n\Z"),
    Bad("reft memorise (moved)", reft("memorise", "--layer", "9"), CLI,
        r"\Areft memorise: moved out of the package; run `python experiments/memorise\.py --layer 9` .*\n\Z"),
    Bad("reft steer (moved)", reft("steer"), CLI,
        r"\Areft steer: moved out of the package; run `python experiments/steer_style\.py` from .*\n\Z"),
    Bad("reft unrecognized", reft(*TRAIN, "--nope"), CLI, _one_line("reft", "unrecognized arguments: --nope")),
    Bad(
        "reft generate --load a pyreft folder",
        reft("generate", "--prompt", "hi", "--load", _pyreft),
        CLI,
        r"--load .*pyreft-run' is a pyreft/pyvene checkpoint .*reft\.from_pyreft\(.*pyreft-run', interp\.load\(\)\)",
    ),
    Bad("reft eval --load a pyreft folder", reft("eval", "--task", "style", "--load", _pyreft), CLI,
        r"reft\.from_pyreft"),
]  # fmt: skip

ROWS += ONE_LINE


# ---- training options are checked like TrainConfig/DASConfig before anything loads: NaN and infinity included

ROWS += [
    Bad("reft train --lr inf", reft(*TRAIN, "--lr", "inf"), CLI, r"TrainConfig\.lr must be a positive number; got inf"),
    Bad(
        "reft train --max-grad-norm -1",
        reft(*TRAIN, "--max-grad-norm", "-1"),
        CLI,
        r"TrainConfig\.max_grad_norm must be a non-negative number; got -1\.0",
    ),
    Bad(
        "reft train --warmup-ratio nan",
        reft(*TRAIN, "--warmup-ratio", "nan"),
        CLI,
        r"TrainConfig\.warmup_ratio must be a number in \[0, 1\); got nan",
    ),
    Bad("reft train --weight-decay inf", reft(*TRAIN, "--weight-decay", "inf"), CLI, r"weight_decay .*; got inf"),
    Bad("reft train --schedule", reft(*TRAIN, "--schedule", "step"), CLI, r"TrainConfig\.schedule .*; got 'step'"),
    Bad(
        "reft generate --repetition-penalty inf",
        reft("generate", "--prompt", "hi", "--repetition-penalty", "inf"),
        CLI,
        r"--repetition-penalty inf: expected a positive number, not infinity",
    ),
    Bad(
        "reft generate --repetition-penalty nan",
        reft("generate", "--prompt", "hi", "--repetition-penalty", "nan"),
        CLI,
        r"--repetition-penalty nan: expected a positive number",
    ),
    Bad("interp das --lr inf", interp(*DAS, "--lr", "inf"), CLI, r"--lr inf: expected a positive number, not infinity"),
    Bad(
        "memorise.py --lr inf",
        experiment(
            "memorise", "--lr", "inf", "--out", lambda env: env.tmp / "m.json", "--plot", lambda env: env.tmp / "p.png"
        ),
        CLI,
        r"\Apython experiments/memorise\.py: error: --lr inf: expected a positive number",
    ),
    # ---- reft serve: the edits and vLLM options are checked before vLLM (or a model) loads
    Bad("reft serve --edit without a name", reft("serve", "--edit", "runs/style"), CLI, r"--edit 'runs/style': exp"),
    Bad(
        "reft serve --edit missing folder",
        reft("serve", "--edit", lambda env: f"style={env.tmp / 'missing'}"),
        CLI,
        r"missing' is not a folder written by reft train --out",
    ),
    Bad(
        "reft serve steering vector without a layer",
        reft("serve", "--edit", "calm=calm.safetensors,scale=4"),
        CLI,
        r"--edit 'calm=calm\.safetensors,scale=4': a steering vector needs layer=L",
    ),
    Bad(
        "reft serve steering vector unknown option",
        reft("serve", "--edit", "calm=calm.safetensors,layer=6,alpha=2"),
        CLI,
        r"unknown option 'alpha=2'",
    ),
    Bad(
        "reft serve --vllm-args compiled",
        reft("serve", "--vllm-args=--no-enforce-eager"),
        CLI,
        r"--vllm-args '--no-enforce-eager': --no-enforce-eager is set by reft serve",
    ),
    Bad(
        "reft serve --vllm-args optimisation level",
        reft("serve", "--vllm-args=-O3"),
        CLI,
        r"--vllm-args '-O3': -O is set by reft serve",
    ),
    Bad(
        "reft serve --vllm-args dotted compilation config",
        reft("serve", "--vllm-args=--compilation-config.mode 3"),
        CLI,
        r"--vllm-args '--compilation-config.mode 3': --compilation-config is set by reft serve",
    ),
]
