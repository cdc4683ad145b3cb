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
import contextlib
import time
from dataclasses import dataclass, field

import torch

from interp.tasks import registry

# What `check` knows of each built-in task before building it: the names of the positions its setup offers
# (the setups below pick their positions by these names). A task not listed here is checked once built.
POSITIONS = {
    "hierarchical-equality": ("hidden",),
    "ioi": ("IO", "S2", "end"),
    "gender": ("name", "verb", "last"),
    "capitals": ("of", "country", "last"),
}
OWN_MODEL = ("hierarchical-equality",)  # tasks with their own MLP (sites by module path), not the language model


@dataclass
class TaskSetup:
    """Everything a DAS run on a task needs: model, pairs, the grid of sites, and per-task defaults."""

    lm: object
    train: object
    test: object
    positions: dict
    layers: list
    layer: int
    position: str
    rank: int
    component: str = "resid_post"
    basis: str = "lowrank"
    splits: tuple | None = None
    config: dict = field(default_factory=dict)
    task_accuracy: float = float("nan")
    extra: dict = field(default_factory=dict)
    threads: int | None = None  # tiny models run faster on one thread
    causal: object = None  # the task's CausalModel (probe targets are its variables' values)
    sweep_positions: list | None = None  # default positions of `interp sweep` (all when None)

    def site(self, layer: int, position: str):
        from interp import Site

        if position not in self.positions:
            raise ValueError(f"--position {position!r}: this task has positions {list(self.positions)}")
        if self.component == "module":
            return Site.module(f"layers.{layer}", self.positions[position])
        return Site(self.component, layer, self.positions[position])


@contextlib.contextmanager
def threads(n: int | None):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def setup(task: str, *, n: int | None, seed: int, model: str | None) -> TaskSetup:
    """Build a task's model and train/test pairs (test is held out from training and early stopping).

    The task's loader comes from :mod:`interp.tasks.registry` (kind ``"das"``).
    """
    return registry.get(task, "das")(n=n, seed=seed, model=model)


def hierarchical_equality_setup(*, n: int | None, seed: int, model: str | None = None) -> TaskSetup:
    """Train the hierarchical-equality MLP (its own model: ``model`` is not used) and make its pairs."""
    from interp.tasks import hierarchical_equality as he

    with threads(1):
        mlp, acc = he.train_equality_mlp(seed=seed)
    pairs = he.equality_pairs(mlp, n=n or 20_000, seed=seed + 1)
    train, test = pairs.split(0.5, seed=seed)
    return TaskSetup(
        mlp, train, test, {POSITIONS["hierarchical-equality"][0]: he.FIRST_HIDDEN.pos}, list(range(he.N_LAYERS)), 0,
        "hidden", he.HIDDEN,
        component="module", basis="full", splits=(he.HIDDEN // 2, he.HIDDEN // 2),
        config=dict(steps=2000, batch_size=256, lr=5e-3, eval_every=250, patience=0, eval_batch_size=4096),
        task_accuracy=acc, threads=1, causal=he.causal_model(),
    )  # fmt: skip


def gender_setup(*, n: int | None, seed: int, model: str | None) -> TaskSetup:
    import interp
    from interp.tasks.gender import GENDER_POSITIONS, causal_model, gender_pairs

    lm = interp.load(model)
    # layer 14 / last: rank-1 DAS and whole-vector patching both move G there (notebook 03). At layer 10 / last
    # rank-1 DAS reaches 1.00 but patching the whole vector 0.00: a direction that acts, not where G is kept
    return _lm_setup(
        lm, gender_pairs(lm, n=n or 256, seed=seed), seed, {k: GENDER_POSITIONS[k] for k in POSITIONS["gender"]},
        14, "last", 1,
        config=dict(steps=80, batch_size=32, lr=2e-2, eval_every=40, patience=0), causal=causal_model(),
    )  # fmt: skip


def ioi_setup(*, n: int | None, seed: int, model: str | None) -> TaskSetup:
    import interp
    from interp.tasks.ioi_position import IOI_POSITIONS, causal_model, ioi_position_pairs

    lm = interp.load(model)
    positions = {k: IOI_POSITIONS[k] for k in POSITIONS["ioi"]}
    # sweep defaults sized for a few minutes on a 2-core CPU: the long IOI/capitals prompts get fewer cells
    return _lm_setup(
        lm, ioi_position_pairs(lm, n=n or 256, seed=seed), seed, positions, 9, "end", 1,
        config=dict(steps=60, batch_size=16, lr=5e-3, eval_every=20, patience=2), causal=causal_model(),
        sweep_positions=["end"],
    )  # fmt: skip


def capitals_setup(*, n: int | None, seed: int, model: str | None) -> TaskSetup:
    import interp
    from interp.tasks.capitals import capital_pairs, capital_positions, causal_model, known_countries

    lm = interp.load(model)
    known = known_countries(lm)
    pairs = capital_pairs(lm, n=n or 1024, seed=seed, countries=known)  # 84 values need more distinct pairs
    positions = capital_positions(lm)
    # the country's identity (84 values) needs a wide subspace: rank 16 / 192 pairs gave test IIA 0.0-0.25
    # (train 0.8: memorised); rank 64 on 768 train pairs at layer 8's country token: test 0.52 at 80 steps
    return _lm_setup(
        lm, pairs, seed, {k: positions[k] for k in POSITIONS["capitals"]}, 8, "country", 64,
        config=dict(steps=80, batch_size=16, lr=1e-2, eval_every=20, patience=2), causal=causal_model(known),
        sweep_positions=["country", "last"],
    )  # fmt: skip


def _lm_setup(lm, pairs, seed, positions, layer, position, rank, *, config, causal, sweep_positions=None):
    """The part every language-model task shares: the split, the task accuracy and the layer grid."""
    from interp.metrics import task_accuracy

    train, test = pairs.split(0.75, seed=seed)
    acc = task_accuracy(lm, pairs.base, pairs.base_labels, candidates=pairs.candidates)
    layers = list(range(0, lm.n_layers, 3))
    return TaskSetup(
        lm, train, test, positions, layers, layer, position, rank, config=config, task_accuracy=acc, causal=causal,
        sweep_positions=sweep_positions,
    )  # fmt: skip


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
    from interp.cli import model_shape

    if task in OWN_MODEL:
        from interp.tasks import hierarchical_equality as he

        return he.N_LAYERS, he.HIDDEN
    return model_shape(model)


def check_common(args) -> tuple[int, int] | None:
    """The checks of the options :func:`add_common` adds; returns :func:`task_shape` for the command's own."""
    from interp.cli import check_positive
    from interp.distributed import check_divisible, launched_world_size

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
    from interp.io import check_save_dir

    if args.save_dir:
        check_save_dir(args.save_dir, overwrite=args.overwrite, what="--save folder")
    shape = check_common(args)
    if args.position is not None:
        check_position("--position", [args.position], args.task)
    if shape and args.layer is not None and not 0 <= args.layer < shape[0]:
        raise ValueError(f"--layer {args.layer}: task {args.task!r} has layers 0..{shape[0] - 1}")


def config_from(args, ts: TaskSetup):
    from interp.das import DASConfig

    cfg = dict(ts.config)
    for key in ("steps", "batch_size", "lr"):
        if getattr(args, key, None) is not None:
            cfg[key] = getattr(args, key)
    return DASConfig(seed=args.seed, progress=not args.quiet, **cfg)


def make_basis(kind: str, width: int, rank: int):
    from interp import Boundless, LowRankRotation, Rotation

    if kind == "full":
        return Rotation(width)
    if kind == "boundless":
        return Boundless(width, init_fraction=min(1.0, rank / width))
    return LowRankRotation(width, rank)


def run(args) -> dict:
    """Fit under the process group a launcher (torchrun) asked for, if any; rank 0 saves and prints."""
    from interp.distributed import launched

    with launched():
        return _run(args)


def _run(args) -> dict:
    from interp import sites
    from interp.das import fit_das, neuron_aligned
    from interp.distributed import is_main
    from interp.metrics import iia

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
        das = fit_das(ts.lm, ts.train, at=site, via=basis, splits=ts.splits, test=ts.test, config=config_from(args, ts))
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
            result["iia_test_neuron_aligned"] = iia(ts.lm, ts.test, at=site, via=neuron_aligned(width, ts.splits))
    if args.save_dir and is_main():
        result["saved"] = str(das.save(args.save_dir, overwrite=args.overwrite))
    result["seconds"] = round(time.time() - t0, 1)
    return result
