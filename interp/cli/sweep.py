"""``interp sweep``: DAS over layers x positions (x ranks) on a built-in task; a heatmap and a JSON file.

Example:
    interp sweep --task gender --json                        # layers 0,3,..,15 x {name, verb, last}, rank 1
    interp sweep --task ioi --layers all                     # rank 1 at the final position of every layer
    interp sweep --task capitals --ranks 4,16 --probe        # also a linear probe per site for comparison

Under ``torchrun --nproc_per_node N`` the cells are shared out over the processes (:func:`interp.sweep.sweep_das`)
and rank 0 writes the heatmap and JSON and prints.

Prints (with --json) one object with ``layers``, ``positions``, ``ranks``, ``iia`` (layers x positions at the
first rank; ``iia_by_rank`` holds all), ``best`` ({layer, position, rank, iia}) and, with --probe,
``probe_accuracy`` on the same grid.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from interp import viz
from interp.distributed import is_main, launched
from interp.probe import probe_sweep
from interp.sweep import sweep_das
from interp.tasks.setups import OWN_MODEL, setup, threads

from . import output_files, write_json
from .das import add_common, check_common, check_position, config_from
from .patch import parse_layers


def add_parser(sub):
    p = sub.add_parser(
        "sweep",
        help="DAS IIA over layers x positions; heatmap + JSON",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(p)
    p.add_argument("--layers", default=None, help="'all' or a list like '0;4;8' (task default: every third)")
    p.add_argument("--positions", default=None, help="comma-separated position names (task default: all)")
    p.add_argument("--ranks", default=None, help="comma-separated ranks, e.g. '1,4' (default: --rank or the task's)")
    p.add_argument("--probe", action="store_true", help="also fit a linear probe per site (probe accuracy vs IIA)")
    p.add_argument("--out", default="results/das", help="folder for the PNG heatmap and JSON results")
    p.add_argument("--overwrite", action="store_true", help="replace earlier results in --out")
    return p


def parse_ranks(args, width: int | None = None) -> list[int] | None:
    """``--ranks '1,4'`` as integers in 1..width (``width`` when known); None when not given."""
    if not args.ranks:
        return None
    try:
        ranks = [int(r) for r in args.ranks.split(",") if r.strip()]
    except ValueError:
        raise ValueError(f"--ranks {args.ranks!r}: expected integers separated by commas, like '1,4'") from None
    bad = [r for r in ranks if r < 1 or (width is not None and r > width)]
    if not ranks or bad:
        raise ValueError(f"--ranks {args.ranks!r}: ranks {bad or ranks} are not in 1..{width or 'the site width'}")
    return ranks


def position_names(args, known=None) -> list[str] | None:
    """``--positions 'name,last'`` as a list (None when not given), checked against the task's names."""
    if not args.positions:
        return None
    names = [p.strip() for p in args.positions.split(",") if p.strip()]
    if known is None:
        check_position("--positions", names, args.task)
    elif [p for p in names if p not in known]:
        raise ValueError(f"--positions {args.positions}: this task has positions {', '.join(known)}")
    return names


def check(args) -> None:
    """Everything ``interp sweep`` can refuse before building the task and loading its model."""
    output_files(args.out, f"sweep_{args.task}", args.overwrite)
    if args.task in OWN_MODEL:
        raise ValueError(
            f"sweep over {args.task!r} is not offered: its model is an MLP addressed by module path; use `interp das`"
        )
    shape = check_common(args)
    position_names(args)
    parse_ranks(args, shape[1] if shape else None)
    if args.layers and shape:
        parse_layers(args.layers, shape[0])


def run(args) -> dict:
    """Sweep under the process group a launcher (torchrun) asked for, if any; rank 0 writes and prints."""
    with launched():
        return _run(args)


def _run(args) -> dict:
    out = Path(args.out)
    png, js = output_files(out, f"sweep_{args.task}", args.overwrite)
    t0 = time.time()
    ts = setup(args.task, n=args.n, seed=args.seed, model=args.model)
    n_layers = ts.lm.n_layers
    layers = parse_layers(args.layers, n_layers) if args.layers else ts.layers
    names = position_names(args, list(ts.positions)) or ts.sweep_positions or list(ts.positions)
    positions = {p: ts.positions[p] for p in names}
    ranks = parse_ranks(args) or [args.rank or ts.rank]
    if ts.component == "module":
        raise ValueError(
            f"sweep over {args.task!r} is not offered: its model is an MLP addressed by module path; use `interp das`"
        )
    cfg = config_from(args, ts)
    with threads(ts.threads):
        sw = sweep_das(
            ts.lm, ts.train, ts.test, layers=layers, positions=positions, ranks=ranks, config=cfg,
            progress=not args.quiet,
        )  # fmt: skip
    result = {"task": args.task, "task_accuracy": ts.task_accuracy, **sw.to_dict()}
    del result["grid"]  # iia is reshaped next, so this JSON is not Grid.to_dict() output
    result["iia_by_rank"], result["iia"] = result["iia"], result["iia"][0]
    if not is_main():
        return result  # rank 0 probes, writes the files and prints
    if args.probe:
        var = ts.train.variables[0]
        values = [str(ts.causal.run(b)[var]) for b in ts.train.data.base]  # the variable's value on each base
        ps = probe_sweep(ts.lm, ts.train.base, values, layers=layers, positions=positions)
        result["probe_accuracy"] = ps.accuracy.tolist()
    out.mkdir(parents=True, exist_ok=True)
    ax = sw.plot(title=f"DAS IIA on {args.task}, rank {ranks[0]} ({len(ts.test)} held-out pairs)")
    viz.save(ax, png)
    result.update(png=str(png), json=str(js), seconds=round(time.time() - t0, 1))
    write_json(js, result, args.overwrite)
    return result
