"""``reft compare``: several methods on one task at matched steps, each in its own process; one table.

Example:
    reft compare --task sentiment --json                      # LoReFT, DiReFT, LoRA, DoRA
    reft compare --task addition --methods loreft,lora --grad-accum 2 --jobs 2

Every option given here reaches each method's ``reft train`` worker (:func:`worker_argv` writes the
parsed options back out for ``reft train``'s parser), except ``--lr`` for LoRA/DoRA (they use the task's
``lora_lr``) and ``--head`` for LoRA/DoRA (they score the label words through the tuned model); ``--out``
and ``--checkpoint-dir`` get one subfolder per method.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from ..interventions import ReftError
from . import (
    BASELINES,
    METHODS,
    add_data_options,
    add_method_options,
    add_train_config_options,
    load_data,
    task_defaults,
    to_argv,
    train_config,
)
from . import train as _train

COMPARE = ("loreft", "direft", "lora", "dora")
KEEP = (  # what the table keeps of each worker's `reft train --json`
    "accuracy",
    "trainable_params",
    "percent_of_base",
    "seconds_per_step",
    "peak_rss_mb",
    "eval_loss",
    "train_loss_last",
    "response_tokens",
    "layers",
    "positions",
    "rank",
    "config",
)


def add_parser(sub):
    p = sub.add_parser(
        "compare",
        help="several methods on one task at matched steps, one table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_options(p)
    add_method_options(p)
    add_train_config_options(p)
    p.add_argument("--methods", default=",".join(COMPARE), help=f"comma-separated, from {', '.join(METHODS)}")
    p.add_argument("--jobs", type=int, default=1, help="methods run at once (timings then share the CPU)")
    return p


def train_parser() -> argparse.ArgumentParser:
    """``reft train``'s parser on its own: what :func:`worker_argv` writes command lines for."""
    return _train.add_arguments(argparse.ArgumentParser(prog="reft train"))


def worker_argv(args, method: str) -> list[str]:
    """The ``reft train`` options that run ``method`` with every option ``args`` (a parsed compare) sets.

    Example:
        >>> from reft.cli import build_parser
        >>> args = build_parser().parse_args(["compare", "--task", "sentiment", "--grad-accum", "4"])
        >>> worker_argv(args, "lora")
        ['--task=sentiment', '--grad-accum=4', '--method=lora']
    """
    worker = argparse.Namespace(**vars(args))
    if method in BASELINES:
        worker.lr = None  # the task's lora_lr (a ReFT learning rate is far too small for LoRA)
        worker.head = False  # LoRA/DoRA score the label words through the tuned model
    for name in ("out", "checkpoint_dir"):  # one folder per method, not all of them writing into one
        if getattr(worker, name, None):
            setattr(worker, name, str(Path(getattr(worker, name)) / method))
    return [*to_argv(train_parser(), worker, skip=("method",)), f"--method={method}"]


def methods_of(args) -> list[str]:
    """``--methods 'loreft,lora'`` as a list of known methods, lower-cased."""
    methods = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ReftError(f"--methods {args.methods!r}: unknown {bad}; expected some of {', '.join(METHODS)}")
    return methods


def check(args) -> None:
    """Everything any worker's ``reft train`` would refuse (its own --out/<method> folder included), and --jobs."""
    from interp.cli import check_positive

    check_positive(args, "jobs")
    for m in methods_of(args):
        _train.check(train_parser().parse_args(worker_argv(args, m)))


def run(args) -> dict:
    """Each method in its own process (so peak memory is per method), same data, steps and evaluation."""
    methods = methods_of(args)
    defaults = task_defaults(args)
    steps = train_config(args, defaults).steps
    debug = ["--debug"] if getattr(args, "debug", False) else []
    commands = {m: [sys.executable, "-m", "reft", "train", *worker_argv(args, m), "--json", *debug] for m in methods}
    results, running, queue = {}, {}, list(methods)
    while queue or running:  # at most --jobs methods at a time, each in its own process
        while queue and len(running) < max(1, args.jobs):
            m = queue.pop(0)
            running[m] = subprocess.Popen(commands[m], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        m = next(iter(running))
        out, err = running.pop(m).communicate()
        if not out.strip():
            last = (err.strip().splitlines() or ["no output"])[-1]
            raise ReftError(f"method {m} failed: {last} (its command: {' '.join(commands[m][1:])})")
        r = json.loads(out.strip().splitlines()[-1])
        results[m] = {k: r[k] for k in KEEP if k in r}
        print(f"{m}: { {k: v for k, v in results[m].items() if k != 'config'} }", file=sys.stderr)
        steps = steps if steps is not None else r.get("steps")
    results = {m: results[m] for m in methods}
    return {"task": args.task or args.data, "steps": steps, "methods": results, "frozen": _frozen(args, defaults)}


def _frozen(args, defaults) -> dict:
    """The frozen model on the same held-out examples: the floor every method starts from."""
    import interp

    from ..train import evaluate

    data = load_data(args)
    if not data.test:
        return {}
    config = train_config(args, defaults, "loreft")  # the evaluation every method's `reft train` runs
    r = evaluate(interp.load(args.model), data.test, label_words=data.label_words, config=config)
    return {"accuracy": r["accuracy"], "eval_loss": r["loss"]}
