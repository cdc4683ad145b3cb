"""``reft compare``: several methods on one task at matched steps, each in its own process; one table.

Example:
    reft compare --task sentiment --json                      # LoReFT, DiReFT, LoRA, DoRA
    reft compare --task addition --methods loreft,lora --grad-accum 2 --jobs 2
    reft compare --task addition --methods loreft,loreft@f1+l1+g,lora --seeds 0,1,2 --json   # mean +- s.e.

A method may carry its own positions after ``@`` (``loreft@f1+l1+g``: LoReFT on the first and last prompt
tokens and on every generated token, :func:`interp.generated`); it overrides ``--positions`` for that method.
``--seeds`` runs every method once per seed (``--seed`` of ``reft train``: the data draw, the shuffling and
the initialisation) and reports each metric's mean and standard error over the seeds with the per-seed values.

Every option given here reaches each method's ``reft train`` worker as a value (:func:`worker_args`: the options
parsed once, handed on as JSON, never written back to a command line), except ``--lr`` for LoRA/DoRA (they use
the task's ``lora_lr``) and ``--head`` for LoRA/DoRA (they score the label words through the tuned model);
``--out`` and ``--checkpoint-dir`` get one subfolder per method.

Workers never outlive the command (:mod:`reft.cli.workers`): when one fails, the others are stopped and the
error names the method, its exit code and the last line of its stderr that is not a progress bar; SIGINT or
SIGTERM to ``reft compare`` stops them all the same way (exit 130); on Linux a worker also ends when ``reft
compare`` is killed outright.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
from pathlib import Path

import interp
from interp.cli import Parser, add_common_flags, check_positive

from ..interventions import ReftError
from ..positions import parse_positions
from ..train import evaluate
from . import (
    BASELINES,
    METHODS,
    add_data_options,
    add_method_options,
    add_train_config_options,
    load_data,
    task_defaults,
    train_config,
)
from . import train as _train
from .workers import run_workers

COMPARE = ("loreft", "direft", "lora", "dora")
KEEP = (  # what the table keeps of each worker's `reft train` result
    "accuracy",
    "trainable_params",
    "percent_of_base",
    "seconds_per_step",
    "peak_rss_mb",
    "eval_loss",
    "train_loss_last",
    "response_tokens",
    "style_rate",
    "style_rate_base",
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
    p.add_argument("--seeds", default=None, help="e.g. '0,1,2': each method once per seed, then mean and s.e.")
    return p


@functools.cache
def _train_defaults() -> tuple[tuple[str, object], ...]:
    p = _train.add_arguments(Parser(prog="reft train"))
    add_common_flags(p)
    return tuple(vars(p.parse_args([])).items())


def train_args(args: argparse.Namespace, *, fresh: tuple[str, ...] = (), **changes) -> argparse.Namespace:
    """The parsed ``reft train`` options that another command's parsed ``args`` give: each option of ``reft train``
    takes its value from ``args`` where ``args`` has it (options in ``fresh`` keep ``reft train``'s default),
    then ``changes``. Values are handed on as they are: nothing is written back to a command line and re-read.

    Example:
        >>> from reft.cli import build_parser
        >>> args = build_parser().parse_args(["compare", "--task", "sentiment", "--grad-accum", "4"])
        >>> w = train_args(args, method="lora")
        >>> w.command, w.task, w.grad_accum, w.method, hasattr(w, "jobs")
        ('train', 'sentiment', 4, 'lora', False)
    """
    defaults = dict(_train_defaults())
    unknown = sorted(set(changes) - set(defaults))
    if unknown:
        raise ReftError(f"reft train has no options {unknown}; expected some of {sorted(defaults)}")
    given = {k: getattr(args, k) for k in defaults if hasattr(args, k) and k not in fresh}
    return argparse.Namespace(**{**defaults, **given, **changes, "command": "train"})


def worker_args(args, method: str, seed: int | None = None) -> argparse.Namespace:
    """The ``reft train`` options that run ``method`` with every option ``args`` (a parsed compare) sets.

    Example:
        >>> from reft.cli import build_parser
        >>> args = build_parser().parse_args(["compare", "--task", "sentiment", "--grad-accum", "4", "--out", "c"])
        >>> w = worker_args(args, "loreft@f1+l1+g", seed=2)
        >>> w.method, w.positions, w.seed, w.grad_accum, w.out
        ('loreft', 'f1+l1+g', 2, 4, 'c/loreft-at-f1_l1_g-seed2')
        >>> w = worker_args(args, "lora")
        >>> w.method, w.positions, w.seed, w.lr, w.out
        ('lora', None, None, None, 'c/lora')
    """
    kind, _, positions = method.partition("@")
    changes: dict = {"method": kind}
    if positions:
        changes["positions"] = positions
    if seed is not None:
        changes["seed"] = seed
    if kind in BASELINES:
        changes["lr"] = None  # the task's lora_lr (a ReFT learning rate is far too small for LoRA)
        changes["head"] = False  # LoRA/DoRA score the label words through the tuned model
    for name in ("out", "checkpoint_dir"):  # one folder per method (and seed), not all of them writing into one
        if getattr(args, name, None):
            sub = method.replace("@", "-at-").replace("+", "_") + ("" if seed is None else f"-seed{seed}")
            changes[name] = str(Path(getattr(args, name)) / sub)
    return train_args(args, **changes)


def methods_of(args) -> list[str]:
    """``--methods 'loreft,lora,loreft@f1+l1+g'`` as a list of known methods (with their positions), lower-cased."""
    methods = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m.partition("@")[0] not in METHODS]
    if bad or not methods:
        raise ReftError(f"--methods {args.methods!r}: unknown {bad}; expected some of {', '.join(METHODS)}")
    for m in methods:
        kind, at, positions = m.partition("@")
        if at and kind in BASELINES:
            raise ReftError(f"--methods: {m!r}: positions after '@' apply to ReFT methods, not to {kind}")
        if at:
            parse_positions(positions)  # a clear error for 'loreft@f1+x'
    if len(set(methods)) < len(methods):
        raise ReftError(f"--methods {args.methods!r} names a method twice")
    return methods


def seeds_of(args) -> list[int] | None:
    """``--seeds '0,1,2'`` as a list of distinct integers (None when not given)."""
    if getattr(args, "seeds", None) is None:
        return None
    try:
        seeds = [int(x) for x in str(args.seeds).split(",") if x.strip()]
    except ValueError:
        raise ReftError(f"--seeds {args.seeds!r}: expected integers separated by commas, e.g. '0,1,2'") from None
    if not seeds or len(set(seeds)) < len(seeds):
        raise ReftError(f"--seeds {args.seeds!r}: expected distinct integers, e.g. '0,1,2'")
    if getattr(args, "seed", None) is not None:
        raise ReftError("give --seeds or --seed, not both")
    return seeds


def check(args) -> None:
    """Everything any worker's ``reft train`` would refuse (its own --out/<method> folder included), and --jobs."""
    check_positive(args, "jobs")
    seeds = seeds_of(args)
    for m in methods_of(args):
        _train.check(worker_args(args, m, None if seeds is None else seeds[0]))


def run(args) -> dict:
    """Each method (and seed) in its own process (so peak memory is per method), same data, steps and evaluation."""
    methods, seeds = methods_of(args), seeds_of(args)
    defaults = task_defaults(args)
    steps = train_config(args, defaults).steps
    runs = {(m, s): m if s is None else f"{m} (seed {s})" for m in methods for s in (seeds or [None])}
    work = {name: worker_args(args, *r) for r, name in runs.items()}

    def report(name: str, result: dict) -> None:
        print(f"{name}: { {k: v for k, v in result.items() if k in KEEP and k != 'config'} }", file=sys.stderr)

    done = run_workers(work, jobs=args.jobs, debug=getattr(args, "debug", False), report=report)
    results = {r: {k: done[name][k] for k in KEEP if k in done[name]} for r, name in runs.items()}
    if steps is None:  # trained by epochs: the steps the workers took
        steps = next(iter(done.values())).get("steps")
    if seeds is None:
        table = {m: results[(m, None)] for m in methods}
    else:
        table = {m: over_seeds([results[(m, s)] for s in seeds]) for m in methods}
    out = {"task": args.task or args.data, "steps": steps, "methods": table}
    if seeds is not None:
        out["seeds"] = seeds
    return out | {"frozen": _frozen(args, defaults)}


# ---- the table -------------------------------------------------------------------------------------------------

SPREAD = ("accuracy", "eval_loss", "style_rate", "train_loss_last", "seconds_per_step")  # mean and s.e. over seeds


def over_seeds(runs: list[dict]) -> dict:
    """One method's runs over seeds: ``<metric>_mean``, ``<metric>_se`` (standard error of the mean, n - 1)
    and ``<metric>_per_seed`` for each metric in :data:`SPREAD`; the other fields from the first run.

    Example:
        >>> r = over_seeds([{"accuracy": 0.5, "rank": 4}, {"accuracy": 0.7, "rank": 4}])
        >>> r["accuracy_mean"], round(r["accuracy_se"], 3), r["accuracy_per_seed"], r["rank"]
        (0.6, 0.1, [0.5, 0.7], 4)
    """
    out = {k: v for k, v in runs[0].items() if k not in SPREAD}
    for k in SPREAD:
        values = [r[k] for r in runs if r.get(k) is not None]
        if not values:
            continue
        se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
        out |= {f"{k}_mean": statistics.fmean(values), f"{k}_se": se, f"{k}_per_seed": values}
    return out


def _frozen(args, defaults) -> dict:
    """The frozen model on the same held-out examples: the floor every method starts from."""
    data = load_data(args)
    if not data.test:
        return {}
    config = train_config(args, defaults, "loreft")  # the evaluation every method's `reft train` runs
    r = evaluate(interp.load(args.model), data.test, label_words=data.label_words, config=config)
    return {"accuracy": r["accuracy"], "eval_loss": r["loss"]}
