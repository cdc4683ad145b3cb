"""``interp das``: fit one DAS alignment on a built-in task and report task accuracy and IIA.

Example:
    interp das --task gender --layer 14 --position last --rank 1 --json
    interp das --task hierarchical-equality --json          # trains the MLP first (about a minute)
    interp das --task ioi --layer 9 --save runs/ioi-l9      # safetensors + JSON, reusable in DII
    torchrun --nproc_per_node 2 -m interp das --task gender --batch-size 32   # data parallel; rank 0 prints

Under ``torchrun`` (or ``accelerate launch``) the fit is data parallel (:mod:`interp.distributed`;
``--batch-size`` must be a multiple of the number of processes); rank 0 saves and prints.

Tasks: hierarchical-equality (its own MLP), ioi (name position), gender (pronoun), capitals (country), the last
three on the embedded Gemma-3-270M (or --model). Each has defaults that run in minutes on a CPU.
"""

from __future__ import annotations

import argparse
import time

import torch

import interp.das
from interp import sites
from interp.distributed import check_divisible, is_main, launched, launched_world_size
from interp.io import check_save_dir
from interp.metrics import iia
from interp.subspace import Boundless, LowRankRotation, Rotation
from interp.tasks import hierarchical_equality as he
from interp.tasks import registry
from interp.tasks.setups import OWN_MODEL, POSITIONS, TaskSetup, setup, threads

from . import check_positive, model_shape


def add_parser(sub):
    p = sub.add_parser(
        "das",
        help="fit one DAS alignment on a task; report task accuracy and IIA",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(p)
    p.add_argument("--layer", type=int, default=None, help="layer of the site (task default if omitted)")
    p.add_argument("--position", default=None, help="named position of the task (e.g. last, name, country)")
    p.add_argument(
        "--basis", choices=("lowrank", "full", "boundless"), default=None, help="subspace kind (task default)"
    )
    # dest save_dir: nnsight mounts .save() on every object, so args.save would be a method when --save is absent
    p.add_argument("--save", dest="save_dir", default=None, help="folder to save the alignment in (safetensors + JSON)")
    p.add_argument("--overwrite", action="store_true", help="replace an alignment already saved at --save")
    return p


def add_common(p):
    p.add_argument("--task", choices=registry.names("das"), required=True)
    p.add_argument("--model", default=None, help="local HF model path or id (default: embedded Gemma-3-270M)")
    p.add_argument(
        "--n", "--n-pairs", dest="n", type=int, default=None,
        help="number of counterfactual pairs (task default); under torchrun write --n-pairs (torchrun takes --n)",
    )  # fmt: skip
    p.add_argument("--rank", type=int, default=None, help="subspace rank (task default)")
    p.add_argument("--steps", type=int, default=None, help="maximum optimiser steps per fit (task default)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def task_shape(task: str, model: str | None) -> tuple[int, int] | None:
    """``(n_layers, width)`` of the sites of ``task``, known without building it: its own MLP's, else the language
    model's from its config (:func:`interp.cli.model_shape`); None where only loading the model tells.
    """
    if task in OWN_MODEL:
        return he.N_LAYERS, he.HIDDEN
    return model_shape(model)


def check_common(args) -> tuple[int, int] | None:
    """The checks of the options :func:`add_common` adds; returns :func:`task_shape` for the command's own."""
    if args.n is not None and args.n < 4:
        raise ValueError(f"--n {args.n}: expected at least 4 pairs (train and test both need some)")
    check_positive(args, "rank", "steps", "batch_size", "lr")
    if getattr(args, "command", None) == "das" and args.batch_size is not None:  # torchrun: equal shares of each batch
        check_divisible(args.batch_size, "--batch-size", world=launched_world_size())
    shape = task_shape(args.task, args.model)
    if shape and args.rank is not None and args.rank > shape[1]:
        raise ValueError(f"--rank {args.rank}: the sites of {args.task!r} are {shape[1]} wide; expected 1..{shape[1]}")
    return shape


def check_position(option: str, names, task: str) -> None:
    """Refuse position names that ``task`` does not offer (a task not in :data:`POSITIONS` is checked when built)."""
    known = POSITIONS.get(task)
    bad = [p for p in names if known is not None and p not in known]
    if bad:
        raise ValueError(f"{option} {','.join(bad)}: task {task!r} has positions {', '.join(known)}")


def check(args) -> None:
    """Everything ``interp das`` can refuse before building the task and loading its model."""
    if args.save_dir:
        check_save_dir(args.save_dir, overwrite=args.overwrite, what="--save folder")
    shape = check_common(args)
    if args.position is not None:
        check_position("--position", [args.position], args.task)
    if shape and args.layer is not None and not 0 <= args.layer < shape[0]:
        raise ValueError(f"--layer {args.layer}: task {args.task!r} has layers 0..{shape[0] - 1}")


def config_from(args, ts: TaskSetup):
    cfg = dict(ts.config)
    for key in ("steps", "batch_size", "lr"):
        if getattr(args, key, None) is not None:
            cfg[key] = getattr(args, key)
    return interp.das.DASConfig(seed=args.seed, progress=not args.quiet, **cfg)


def make_basis(kind: str, width: int, rank: int):
    if kind == "full":
        return Rotation(width)
    if kind == "boundless":
        return Boundless(width, init_fraction=min(1.0, rank / width))
    return LowRankRotation(width, rank)


def run(args) -> dict:
    """Fit under the process group a launcher (torchrun) asked for, if any; rank 0 saves and prints."""
    with launched():
        return _run(args)


def _run(args) -> dict:
    t0 = time.time()
    ts = setup(args.task, n=args.n, seed=args.seed, model=args.model)
    layer = ts.layer if args.layer is None else args.layer
    site = ts.site(layer, args.position or ts.position)
    width = sites.resolve(ts.lm, site).width
    rank = args.rank if args.rank is not None else (width if (args.basis or ts.basis) == "full" else ts.rank)
    with torch.random.fork_rng():  # --seed sets the initialisation, as fit_das does for the bases it builds
        torch.manual_seed(args.seed)
        basis = make_basis(args.basis or ts.basis, width, rank)
    with threads(ts.threads):
        das = interp.das.fit_das(
            ts.lm, ts.train, at=site, via=basis, splits=ts.splits, test=ts.test, config=config_from(args, ts)
        )
        result = {
            "task": args.task,
            "site": repr(site),
            "basis": type(basis).__name__,
            "rank": basis.rank,
            "variables": list(das.variables),
            "task_accuracy": ts.task_accuracy,
            "iia_train": das.iia_train,
            "iia_test": das.iia_test,
            "n_train": len(ts.train),
            "n_test": len(ts.test),
            "steps": das.history[-1]["step"] if das.history else 0,
        }
        if ts.splits:  # the no-rotation contrast: the same interchange on raw neurons
            result["iia_test_neuron_aligned"] = iia(
                ts.lm, ts.test, at=site, via=interp.das.neuron_aligned(width, ts.splits)
            )
    if args.save_dir and is_main():
        result["saved"] = str(das.save(args.save_dir, overwrite=args.overwrite))
    result["seconds"] = round(time.time() - t0, 1)
    return result
