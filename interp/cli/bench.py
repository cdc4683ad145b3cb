"""``interp bench <name>``: one of the field's benchmarks on the embedded model (or --model); a JSON table.

Example:
    interp bench ravel --json                 # Cause / Isolate / Disentangle per method and layer
    interp bench mib-mcqa --quick --json      # the small version the test suite runs
    interp bench axbench-concept10 --data /path/to/benchmarks --json

Data is read from --data (default: $INTERP_BENCHMARKS, else ../shared/benchmarks beside the checkout); a missing
file is an error that names the public repository and path to get it from. Results go to --out/<name>.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from interp.benchmarks import RUNNERS, runner
from interp.benchmarks.data import data_root
from interp.models import load

from . import output_files, write_json
from .patch import parse_layers


def add_parser(sub):
    p = sub.add_parser(
        "bench", help="run one of the field's benchmarks; JSON table", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("name", choices=sorted(RUNNERS), help="which benchmark")
    p.add_argument("--data", default=None, help="folder that holds ravel/, mib_variable_track/, ...")
    p.add_argument("--quick", action="store_true", help="a small version (a few layers, few examples)")
    p.add_argument("--model", default=None, help="a local model folder (default: the embedded Gemma-3-270M)")
    p.add_argument("--layers", default=None, help="'all' or a list like '0;4;8' (default: the runner's)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling and fitting")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", default="results/bench", help="folder for <name>.json")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier <name>.json in --out")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: the runner's list)")
    return p


def check(args) -> None:
    """What ``interp bench`` can refuse before loading the model: the data folder and the output file."""
    data_root(args.data)
    output_files(args.out, args.name, args.overwrite)


def run(args) -> dict:
    out = Path(args.out)
    _, js = output_files(out, args.name, args.overwrite)
    t0 = time.time()
    lm = load(args.model) if args.model else load()
    layers = parse_layers(args.layers, lm.n_layers) if args.layers else None
    mod = runner(args.name)
    extra = {"methods": [m.strip() for m in args.methods.split(",") if m.strip()]} if args.methods else {}
    result = mod.run(
        lm, data=args.data, quick=args.quick, layers=layers, seed=args.seed, progress=not args.quiet, **extra
    )
    result.setdefault("seconds", round(time.time() - t0, 1))
    out.mkdir(parents=True, exist_ok=True)
    result["json"] = str(js)
    write_json(js, result, args.overwrite)
    return result
