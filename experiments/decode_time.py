"""Prompt-only vs decode-time LoReFT vs LoRA over seeds, on generation (addition, style) and sentiment.

Run from the repository root:

    python experiments/decode_time.py --json --out results/reft_decode_experiment.json   # 3 seeds (~40 min here)
    python experiments/decode_time.py --tasks style --seeds 0,1 --steps 4                 # a quick look

For each task it runs ``reft compare`` (the command, through :mod:`reft.cli`) at the task's matched steps with
``--seeds``: on ``addition`` and ``style`` (generation) LoReFT on the task's prompt positions, the same LoReFT also
on every generated token (``<positions>+g``: teacher forcing edits the response tokens in training, decoding
edits each new token) and LoRA; on ``sentiment`` (classification, nothing is generated) LoReFT and LoRA. Each
metric is reported as mean and standard error over the seeds, with the per-seed values. ``--out`` gets one JSON
file with every task's table; the printed table is Markdown (the one in docs/experiments.md).

Example (the ``reft compare`` command a task runs):
    >>> args = build_parser().parse_args(["--tasks", "style", "--seeds", "0,1"])
    >>> c = compare_args(args, "style")
    >>> c.command, c.task, c.methods, c.seeds, c.n_test
    ('compare', 'style', 'loreft,loreft@f1+l1+g,lora', '0,1', 30)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import reft
from interp.cli import Parser, add_common_flags, check_positive, execute, parse
from interp.io import check_output_file, write_file_atomic
from reft import cli
from reft.cli import compare

SCRIPT = "experiments/decode_time.py"
TASKS = {  # task -> the methods compared ("@+g": the task's positions and every generated token)
    "addition": ("loreft", "loreft@+g", "lora"),
    "style": ("loreft", "loreft@+g", "lora"),
    "sentiment": ("loreft", "lora"),
}
N_TEST = {"style": 30}  # the style task's 30 unseen questions (its default 6 is for the demo)
SCORE = {"style": "style_rate"}  # the style task's score: answers in the parrot style (its CLI scorer)


def build_parser() -> argparse.ArgumentParser:
    """The options (those of the former ``reft experiment``); errors are one line (:class:`interp.cli.Parser`)."""
    p = Parser(prog=f"python {SCRIPT}", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, from {', '.join(TASKS)}")
    p.add_argument("--seeds", default="0,1,2", help="seeds of every run (data draw, shuffling, initialisation)")
    p.add_argument("--steps", type=int, default=None, help="override every task's matched steps (for a quick look)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (timings then share the CPU)")
    p.add_argument("--out", default=None, help="write the JSON here (a .json file; refused if it exists)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    add_common_flags(p)
    p.set_defaults(command=SCRIPT)  # errors read "python experiments/decode_time.py: error: ..."
    return p


def tasks_of(args) -> list[str]:
    """The ``--tasks``, checked.

    Example:
        >>> tasks_of(build_parser().parse_args(["--tasks", "style, sentiment"]))
        ['style', 'sentiment']
    """
    tasks = [t.strip().lower() for t in args.tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise reft.ReftError(f"--tasks {args.tasks!r}: unknown {bad}; expected some of {', '.join(TASKS)}")
    return tasks


def compare_args(args, task: str) -> argparse.Namespace:
    """The parsed ``reft compare`` command this experiment runs for ``task``."""
    defaults = cli.task_defaults(argparse.Namespace(task=task, data=None))
    methods = [m.replace("@+", f"@{defaults['positions']}+") for m in TASKS[task]]
    argv = ["compare", "--task", task, "--methods", ",".join(methods), "--seeds", args.seeds]
    argv += ["--jobs", str(args.jobs)]
    if args.steps is not None:
        argv += ["--steps", str(args.steps)]
    if task in N_TEST:
        argv += ["--n-test", str(N_TEST[task])]
    if getattr(args, "debug", False):
        argv += ["--debug"]
    return cli.build_parser().parse_args(argv)


def check(args) -> None:
    """Everything the experiment can refuse before any work: ``--jobs``, ``--steps``, ``--out``, every compare."""
    check_positive(args, "jobs")
    if args.steps is not None and args.steps < 1:
        raise reft.ReftError(f"--steps {args.steps}: expected a positive number of steps")
    if args.out is not None:
        if Path(args.out).suffix != ".json":
            raise reft.ReftError(f"--out {args.out!r}: expected a .json file")
        check_output_file(args.out, overwrite=args.overwrite, what="--out")
    for task in tasks_of(args):
        compare.check(compare_args(args, task))


def run(args) -> dict:
    """Each task's ``reft compare``; prints the Markdown table and writes ``--out`` (at once) when given."""
    results = {task: compare.run(compare_args(args, task)) for task in tasks_of(args)}
    out = {"seeds": compare.seeds_of(compare_args(args, tasks_of(args)[0])), "tasks": results}
    out["table"] = table(results)
    if args.out is not None:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_file_atomic(args.out, json.dumps(out, indent=1) + "\n", overwrite=args.overwrite)
        out["saved"] = str(args.out)
    print(out["table"], file=sys.stderr if args.json else sys.stdout)
    return out


def table(results: dict) -> str:
    """A Markdown table per task and method: trainable parameters, the score's mean +- s.e. and per-seed values
    (exact-match accuracy, or the style rate on ``style``), and the held-out loss (mean +- s.e.).

    Example:
        >>> r = {"accuracy_mean": 0.5, "accuracy_se": 0.1, "accuracy_per_seed": [0.4, 0.6], "eval_loss_mean": 1.0,
        ...      "eval_loss_se": 0.2, "trainable_params": 5124}
        >>> print(table({"sentiment": {"methods": {"loreft": r}}}).splitlines()[-1])
        | sentiment | loreft | 5,124 | accuracy | 0.500 +- 0.100 | 0.40, 0.60 | 1.000 +- 0.200 |
    """
    rows = ["| task | method | params | score | mean +- s.e. | per seed | held-out loss |", "|---" * 7 + "|"]
    for task, res in results.items():
        key = SCORE.get(task, "accuracy")
        for m, r in res["methods"].items():
            seeds = ", ".join(f"{a:.2f}" for a in r.get(f"{key}_per_seed", []))
            rows.append(
                f"| {task} | {m} | {r.get('trainable_params', 0):,} | {key} | "
                f"{r[f'{key}_mean']:.3f} +- {r[f'{key}_se']:.3f} | {seeds} | "
                f"{r['eval_loss_mean']:.3f} +- {r['eval_loss_se']:.3f} |"
            )
        frozen = res.get("frozen", {}).get(key)
        if key == "style_rate":  # the frozen model's answers to the same prompts, as scored in every run
            frozen = next(iter(res["methods"].values())).get("style_rate_base")
        if frozen is not None:
            loss = res.get("frozen", {}).get("eval_loss")
            loss = "" if loss is None else f"{loss:.3f}"
            rows.append(f"| {task} | frozen model | 0 | {key} | {frozen:.3f} | | {loss} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: 0 on success, 2 for bad input (one line on stderr, before any work), 1 otherwise."""
    args = parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    result = execute("python", SimpleNamespace(check=check, run=run), args)
    if isinstance(result, int):
        return result
    if args.json:
        print(json.dumps(result))
    elif "saved" in result:
        print(f"saved: {result['saved']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
