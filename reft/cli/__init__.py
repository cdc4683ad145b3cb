"""Command line: ``reft train | eval | generate | compare | serve`` (also ``python -m reft``).

Example:
    reft train --task style --out runs/style                 # rank-4 LoReFT at one layer, ~20 examples
    reft generate --load runs/style --prompt "Question: Why do we sleep?\\nAnswer:" --repetition-penalty 1.3
    reft train --data train.jsonl --eval-data test.jsonl --layers "3;9" --positions f7+l7 --rank 8 --out runs/x
    reft train --task sentiment --grad-accum 4 --weight-decay 0.01 --warmup-ratio 0.2 --no-progress
    reft eval --task sentiment --load runs/sent --json
    reft compare --task sentiment --json                      # LoReFT, DiReFT, LoRA, DoRA: one table
    reft serve --edit style=runs/style --port 8000             # vLLM's OpenAI server, an edit per request

``--json`` prints one object. The experiments (decode-time, memorisation, steering) are scripts of the
repository's ``experiments/`` folder (:data:`MOVED`).

Methods are the ReFT kinds (loreft, direft, noreft, lobireft, consreft, lodireft) and the peft baselines
(lora, dora). The training options are the fields of :class:`reft.train.TrainConfig` (``--grad-accum`` sets
``grad_accum``); unset ones take the task's defaults (``reft.tasks.<task>.DEFAULTS``), else the command line's
(:data:`CLI_DEFAULTS`), else TrainConfig's. Each command is a module of this package with ``add_parser(sub)``,
``check(args)`` (every refusal possible before the model loads) and ``run(args) -> dict``, run by
:func:`interp.cli.execute` as in ``interp``: an error is one line on stderr, ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import resource
import shlex
import sys
import typing
from pathlib import Path

from interp.cli import Parser, add_common_flags, check_positive, execute, model_shape, parse
from interp.distributed import is_main
from interp.io import check_save_dir
from interp.tasks import registry

from .. import hub
from ..data import as_examples, read_jsonl
from ..interventions import KINDS, ReftError
from ..positions import parse_layers, parse_positions
from ..tasks import NAMES, TaskData, get  # importing reft.tasks registers reft's tasks
from ..train import TrainConfig, check_checkpoint_dir

# modules of reft.cli, one per subcommand
COMMANDS = ("train", "eval", "generate", "compare", "serve")
# Commands that reproduced results: now scripts of the repository's experiments/ folder (options unchanged).
MOVED = {"experiment": "decode_time", "memorise": "memorise", "steer": "steer_style"}
BASELINES = ("lora", "dora")
METHODS = (*KINDS, *BASELINES)

# Where the command line's default differs from TrainConfig's (a task's DEFAULTS come first).
CLI_DEFAULTS = {"steps": 100, "max_prompt_tokens": 64, "progress": False}
CLI_DEFAULTS_BASELINE = {"lr": 1e-3}  # LoRA/DoRA: --lr, else a task's ``lora_lr``, else this
NONE = "none"  # `--max-prompt-tokens none`: an optional TrainConfig field set to None

HELP = {
    "epochs": "passes over the training data (used when --steps is not given)",
    "steps": "optimizer steps (overrides --epochs; 'none' to train by epochs)",
    "batch_size": "examples per micro-batch",
    "grad_accum": "micro-batches per optimizer step",
    "lr": "learning rate; LoRA/DoRA default to the task's lora_lr, else 1e-3",
    "warmup_ratio": "fraction of the steps with linear warm-up",
    "schedule": "the learning rate after the warm-up: linear (decay to 0), cosine or constant",
    "weight_decay": "AdamW weight decay (on W and b; never on the basis R)",
    "max_grad_norm": "gradient clipping norm (0 or 'none': no clipping)",
    "seed": "seed of the data draw, the shuffling and the initialisation",
    "max_prompt_tokens": "longer prompts keep BOS and their end ('none' for no limit)",
    "max_response_tokens": "cut longer responses ('none' for no limit)",
    "add_eos": "append EOS to responses, so that generation learns to stop",
    "eval_every": "evaluate on --eval-data (or the task's held-out set) every so many steps (ReFT methods)",
    "checkpoint_every": "save the interventions every so many steps into --checkpoint-dir (ReFT methods)",
    "checkpoint_dir": "where --checkpoint-every writes step-<n>/ folders",
    "progress": "a progress bar with the loss",
}


def train_config_fields(only: tuple[str, ...] | None = None) -> list[tuple[str, type, object]]:
    """``(name, type, TrainConfig default)`` for the TrainConfig fields a command line can set.

    Every field whose type is int, float, bool or str (each optionally ``| None``) is exposed; ``only``
    keeps a subset (``reft eval`` needs just the batching and tokenization ones).

    Example:
        >>> [name for name, _, _ in train_config_fields(("lr", "seed"))]
        ['lr', 'seed']
    """
    hints = typing.get_type_hints(TrainConfig)
    out = []
    for f in dataclasses.fields(TrainConfig):
        if only is not None and f.name not in only:
            continue
        kinds = [t for t in typing.get_args(hints[f.name]) if t is not type(None)] or [hints[f.name]]
        if len(kinds) == 1 and kinds[0] in (int, float, bool, str):
            out.append((f.name, kinds[0], f.default))
    return out


def _optional(kind: type):
    def parse(text: str):
        return NONE if text.strip().lower() == NONE else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its "invalid int value" message
    return parse


def add_train_config_options(p: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    """One ``--field-name`` per TrainConfig field (``--add-eos/--no-add-eos`` for booleans), default None."""
    optional = {f.name for f in dataclasses.fields(TrainConfig) if "None" in str(f.type)}
    for name, kind, default in train_config_fields(only):
        flag = "--" + name.replace("_", "-")
        shown = CLI_DEFAULTS.get(name, default)
        shown = NONE if shown is None else shown
        text = f"{HELP.get(name, f'TrainConfig.{name}')} (default: the task's, else {shown})"
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            p.add_argument(flag, type=_optional(kind) if name in optional else kind, default=None, help=text)


def add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=registry.names("reft"), help="a built-in task")
    p.add_argument("--data", help="JSONL training data: {prompt, response} or {prompt, label} per line")
    p.add_argument("--eval-data", help="JSONL held-out data (same format)")
    p.add_argument("--label-words", help="classification label words by label index, e.g. 'negative,positive'")
    p.add_argument("--model", default=None, help="model path or id (default: the embedded Gemma-3-270M)")
    p.add_argument("--n-train", type=int, default=None, help="training examples drawn from the task")
    p.add_argument("--n-test", type=int, default=None, help="held-out examples drawn from the task")


def add_method_options(p: argparse.ArgumentParser) -> None:
    """Where to intervene and with what (the options of ``reft train`` besides data and TrainConfig)."""
    p.add_argument("--layers", default=None, help="'9', '3;9;15' or 'all'")
    p.add_argument(
        "--positions", default=None, help="positions, e.g. 'f1+l1', 'f7+l7', 'f1+l1+g' (g: every generated token) "
        "or 'r4' (the last 4 prompt tokens and every generated one)"
    )  # fmt: skip
    p.add_argument("--rank", type=int, default=None)
    p.add_argument("--untied", action="store_true", help="separate weights for prefix and suffix positions")
    p.add_argument(
        "--share-weights", action="store_true", help="one intervention for all --layers: one set of weights, "
        "trained and saved once (ReFT methods; with --untied: one per part of the positions)"
    )  # fmt: skip
    p.add_argument(
        "--head", action="store_true", help="classification with ReFT: train a linear head (started from the "
        "label words' unembedding rows) with the interventions instead of scoring the label words"
    )  # fmt: skip
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument(
        "--out", default=None, help="save the trained interventions here (ReFT methods): a folder, or "
        "hf://owner/name to upload them with a model card to the Hugging Face Hub"
    )  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="reft", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        add_common_flags(importlib.import_module(f"reft.cli.{name}").add_parser(sub))
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in MOVED:  # one line and exit 2, before parsing (and before anything loads)
        rest = "".join(f" {shlex.quote(str(a))}" for a in argv[1:])
        print(
            f"reft {argv[0]}: moved out of the package; run `python experiments/{MOVED[argv[0]]}.py{rest}` from the "
            "repository's root (same options)",
            file=sys.stderr,
        )
        return 2
    args = parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    result = execute("reft", importlib.import_module(f"reft.cli.{args.command}"), args)
    if isinstance(result, int):
        return result
    if not is_main():
        return 0  # under torchrun, rank 0 prints
    if args.json:
        print(json.dumps(result))
    else:
        _print_human(result)
    return 0


def _print_human(result: dict) -> None:
    if "methods" in result:
        cols = ("accuracy", "trainable_params", "percent_of_base", "seconds_per_step", "peak_rss_mb")
        print(f"{result['task']} ({result['steps']} steps each)")
        print(f"{'method':<16} " + " ".join(f"{c:>17}" for c in cols))
        seeded = "seeds" in result  # reft compare --seeds: mean +- standard error over the seeds
        for m, r in result["methods"].items():
            cells = []
            for c in cols:
                if seeded and f"{c}_mean" in r:
                    cells.append(f"{r[f'{c}_mean']:.3g} +- {r[f'{c}_se']:.2g}".rjust(17))
                else:
                    cells.append(f"{r.get(c, float('nan')):>17.4g}")
            print(f"{m:<16} " + " ".join(cells))
        return
    for key, value in result.items():
        if isinstance(value, list):
            for v in value:
                print(f"{key}: {v}")
        else:
            print(f"{key}: {value}")


# ---- shared by the commands ------------------------------------------------------------------------------


def task_defaults(args) -> dict:
    """The task's ``DEFAULTS`` (where to intervene and how to train), or {} for --data."""
    if getattr(args, "task", None):
        return dict(get(args.task).DEFAULTS)
    return {}


def pick(args, name, defaults, fallback):
    value = getattr(args, name, None)
    return value if value is not None else defaults.get(name, fallback)


def check_data_options(args) -> None:
    """The checks of :func:`add_data_options`' options that need no data read and no model."""
    if args.task and args.data:
        raise ReftError("give either --task or --data, not both")
    if not args.task and not args.data:
        raise ReftError(f"no data: pass --task ({', '.join(NAMES)}) or --data train.jsonl")
    for option in ("data", "eval_data"):
        path = getattr(args, option)
        if path is not None:
            _check_file(f"--{option.replace('_', '-')}", path, "a JSONL file with one example per line")
    if args.label_words:
        label_words(args.label_words)
    if args.n_train is not None and args.n_train < 1:
        raise ReftError(f"--n-train {args.n_train}: expected at least 1 training example")
    if args.n_test is not None and args.n_test < 0:
        raise ReftError(f"--n-test {args.n_test}: expected 0 or more held-out examples")


def check_method_options(args, method: str, defaults: dict) -> None:
    """The checks of :func:`add_method_options`' options (``method`` checked): the output folders, the ranks, the
    model, and the layers (against the model's config), positions and rank of a ReFT method.
    """
    if args.out and hub.is_hub(args.out):
        hub.check(args.out, doing="save to")  # a malformed repo id, offline mode, no network
    elif args.out:
        check_save_dir(args.out, overwrite=args.overwrite, what="--out folder")
    if getattr(args, "checkpoint_dir", None):
        check_checkpoint_dir(args.checkpoint_dir, what="--checkpoint-dir folder")
    check_positive(args, "rank", "lora_rank")
    if args.head and method in BASELINES:
        raise ReftError(f"--head trains a classifier head with a ReFT method; got --method {method}")
    if getattr(args, "share_weights", False):
        if method in BASELINES:
            raise ReftError(f"--share-weights shares a ReFT intervention across layers; got --method {method}")
    shape = model_shape(args.model)  # a missing model is refused here
    if method in BASELINES:
        return
    parse_positions(pick(args, "positions", defaults, "f1+l1"))
    layers, rank = pick(args, "layers", defaults, None), pick(args, "rank", defaults, 4)
    if shape and layers is not None:
        parse_layers(layers, shape[0])
    if shape and rank > shape[1]:
        raise ReftError(f"--rank {rank}: the model's d_model is {shape[1]}; expected 1..{shape[1]}")


def check_load(args) -> None:
    """``--load``, where given, must be a folder that ``reft train --out`` wrote (or ``hf://owner/name``)."""
    if getattr(args, "load", None) and hub.is_hub(args.load):
        hub.check(args.load, doing="load from")
    elif getattr(args, "load", None) and not Path(args.load).is_dir():
        raise FileNotFoundError(f"--load {args.load!r} is not a folder; expected one written by reft train --out")
    elif getattr(args, "load", None) and any(Path(args.load).glob("intkey_*.bin")):
        raise ReftError(
            f"--load {args.load!r} is a pyreft/pyvene checkpoint (intkey_*.bin), not a folder written by reft train "
            f"--out; convert it once in Python: rlm = reft.from_pyreft({args.load!r}, interp.load()); "
            "reft.save(rlm, 'runs/converted'); then pass --load runs/converted"
        )


def _check_file(option: str, path, what: str) -> None:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{option} {str(path)!r} does not exist; expected {what}")


def label_words(text: str) -> dict[int, str]:
    """``--label-words 'negative,positive'`` -> ``{0: ' negative', 1: ' positive'}`` (a leading space each).

    Example:
        >>> label_words("no, yes")
        {0: ' no', 1: ' yes'}
    """
    words = [w.strip() for w in text.split(",")]
    if len(words) < 2 or not all(words):
        raise ReftError(f"--label-words {text!r}: expected two or more words separated by commas, like 'no,yes'")
    return {i: " " + w for i, w in enumerate(words)}


def load_data(args):
    """The examples of ``--task`` or ``--data``; ``--label-words`` replaces a classification task's label words."""
    check_data_options(args)
    words = label_words(args.label_words) if args.label_words else None
    if args.task:
        task = get(args.task)
        kw = {"seed": args.seed if args.seed is not None else 0}
        if args.n_train is not None:
            kw["n_train"] = args.n_train
        if args.n_test is not None:
            kw["n_test"] = args.n_test
        data = task.load(**kw)
        if words is None:
            return data
        if not data.label_words:
            raise ReftError(f"--label-words applies to classification; task {args.task!r} trains responses, not labels")
        if len(words) != len(data.label_words):
            raise ReftError(
                f"--label-words {args.label_words!r} gives {len(words)} words; task {args.task!r} has "
                f"{len(data.label_words)} labels ({','.join(w.strip() for w in data.label_words.values())})"
            )
        return dataclasses.replace(data, label_words=words)
    train = read_jsonl(args.data)
    as_examples(train, label_words=words)  # validate now, with the example's index in the error
    test = read_jsonl(args.eval_data) if args.eval_data else []
    return TaskData(train[: args.n_train] if args.n_train else train, test, words)


def train_config(args, defaults: dict, method: str = "loreft"):
    """The TrainConfig a command runs: each field from its option, else ``defaults`` (the task's), else
    :data:`CLI_DEFAULTS`, else TrainConfig's own default. Only the fields the parser has are read.

    Example:
        >>> args = build_parser().parse_args(["train", "--task", "style", "--grad-accum", "2"])
        >>> train_config(args, task_defaults(args)).grad_accum, train_config(args, task_defaults(args)).steps
        (2, 20)
    """
    baseline = method in BASELINES
    cli = {**CLI_DEFAULTS, **(CLI_DEFAULTS_BASELINE if baseline else {})}
    if baseline:  # LoRA/DoRA learn at their own rate: --lr, else the task's lora_lr, else 1e-3
        defaults = {k: v for k, v in defaults.items() if k != "lr"}
        if "lora_lr" in defaults:
            defaults["lr"] = defaults["lora_lr"]
    kw = {}
    for name, _, _ in train_config_fields():
        if not hasattr(args, name):
            continue
        value = getattr(args, name)
        if value is None:
            if name == "steps" and getattr(args, "epochs", None) is not None:
                continue  # --epochs without --steps trains by epochs
            value = defaults.get(name, cli.get(name))
        if value is None:
            continue  # TrainConfig's default
        kw[name] = None if value == NONE else value
    return TrainConfig(**kw)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
