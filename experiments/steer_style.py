"""Steering baselines (diff-in-means, CAA) against a LoReFT on the style task, at equal evaluation.

Run from the repository root:

    python experiments/steer_style.py                     # both directions, prompt and decode positions
    python experiments/steer_style.py --methods caa --positions all+g --strengths 0,2,4 --out /tmp/steer.json

The LoReFT is trained and evaluated by ``reft train --task style`` itself (in this process, through
:mod:`reft.cli`, with its options and defaults). Each steering vector is computed at ``resid_post`` of
``--layer`` (default: the task's layer) from the task's training examples, then added with
:func:`reft.steering.steer` at ``--positions`` times each strength, and evaluated as ``reft train`` evaluates the
LoReFT: the same held-out prompts, the same decoding (its ``decoding``: 24 new tokens, the task's repetition
penalty), the same scorer (``reft.tasks.style.style_rate``, answers opening with "Squawk"), and
:func:`reft.evaluate` on the same held-out examples with the same TrainConfig (``accuracy``: " Squawk!" is the
greedy answer; ``eval_loss``). Writes ``--out`` (default results/reft_steer_style.json).

Directions (:mod:`reft.steering`): ``diffmean``, the mean activation at the last token of each training prompt
followed by its parrot answer minus that with the same answer stripped of the style ("Squawk!", "matey");
``caa``, the A/B form of the same pairs (Rimsky et al. 2024), read at the answer letter. Strengths multiply
the raw mean-difference vector; ``vector_norm`` and ``resid_norm`` (the mean norm of the residual stream at
the held-out prompts' last token) give the scale. Positions: ``all`` (every prompt token), ``all+g`` (and every
generated token), or a ReFT form such as ``l1`` or ``l1+g``.

Example (a style answer without its style):
    >>> plain(" Squawk! Eight legs, matey, all of them hairy. Squawk!")
    ' Eight legs, all of them hairy.'
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import torch

import interp
import reft
from interp.cli import Parser, add_common_flags, execute, model_shape, parse
from interp.io import check_output_file, dumps, write_file_atomic
from reft import cli, tasks
from reft.cli import compare
from reft.cli import train as train_command
from reft.steering import activations, caa, diff_in_means, steer

SCRIPT = "experiments/steer_style.py"
OUT = "results/reft_steer_style.json"
METHODS = ("diffmean", "caa")


def build_parser() -> argparse.ArgumentParser:
    """The options (those of the former ``reft steer``); errors are one line (:class:`interp.cli.Parser`)."""
    p = Parser(prog=f"python {SCRIPT}", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="style", choices=("style",), help="the task (style only: its scorer)")
    p.add_argument("--model", default=None, help="model path or id (default: the embedded Gemma-3-270M)")
    p.add_argument("--layer", type=int, default=None, help="steering layer (default: the task's LoReFT layer)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
    p.add_argument("--positions", default="all,all+g", help="comma-separated steering positions (see above)")
    p.add_argument("--strengths", default="0,0.5,1,2,4,8", help="comma-separated multipliers of the vector")
    p.add_argument("--out", default=OUT, help=f"the JSON results file (default {OUT})")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier --out file")
    cli.add_train_config_options(p)  # the LoReFT's training, as `reft train` takes them
    add_common_flags(p)
    p.set_defaults(command=SCRIPT)  # errors read "python experiments/steer_style.py: error: ..."
    return p


def plain(response: str) -> str:
    """A style answer without its style: no "Squawk!", no "matey".

    Example:
        >>> plain(" Squawk! The sun is a star, matey. Squawk!")
        ' The sun is a star.'
    """
    text = re.sub(r"\s*Squawk!\s*", " ", response)
    text = re.sub(r",?\s*matey(?=[,.!?])", "", text)
    return " " + " ".join(text.split())


def lists(args):
    """``(methods, positions, strengths)`` from their options, checked.

    Example:
        >>> lists(build_parser().parse_args(["--methods", "caa", "--positions", "l1+g", "--strengths", "0,2"]))
        (['caa'], ['l1+g'], [0.0, 2.0])
    """
    methods = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise reft.ReftError(f"--methods {args.methods!r}: unknown {bad}; expected some of {', '.join(METHODS)}")
    positions = [p.strip() for p in args.positions.split(",") if p.strip()]
    if not positions:
        raise reft.ReftError("--positions: give at least one, e.g. 'all'")
    for p in positions:
        reft.parse_positions(p)
    try:
        strengths = [float(s) for s in args.strengths.split(",") if s.strip()]
    except ValueError:
        raise reft.ReftError(
            f"--strengths {args.strengths!r}: expected numbers separated by commas, e.g. 0,2"
        ) from None
    if not strengths:
        raise reft.ReftError("--strengths: give at least one, e.g. '0,4'")
    return methods, positions, strengths


def train_options(args) -> argparse.Namespace:
    """The ``reft train`` options of the LoReFT: the task, the model, and every TrainConfig option given here.

    Example:
        >>> t = train_options(build_parser().parse_args(["--steps", "30"]))
        >>> t.command, t.task, t.steps, t.method, t.positions, t.out
        ('train', 'style', 30, 'loreft', None, None)
    """
    return compare.train_args(args, fresh=("positions", "out", "overwrite"), method="loreft")


def check(args) -> None:
    """Everything the experiment can refuse before loading the model (the LoReFT's ``reft train`` checks too)."""
    check_output_file(args.out, overwrite=args.overwrite, what="--out")
    lists(args)
    train_command.check(train_options(args))
    shape = model_shape(args.model)
    if args.layer is not None and shape and not 0 <= args.layer < shape[0]:
        raise reft.ReftError(f"--layer {args.layer}: the model has layers 0..{shape[0] - 1}")


def directions(lm, train: list[dict], methods: list[str], layer: int) -> tuple[dict, list[str], list[str]]:
    """``({method: vector}, positive texts, negative texts)`` from the task's training examples."""
    pos_texts = [ex["prompt"] + ex["response"] for ex in train]
    neg_texts = [ex["prompt"] + plain(ex["response"]) for ex in train]
    questions = [ex["prompt"].split("Question: ", 1)[-1].split("\n", 1)[0] for ex in train]
    items = [
        {"question": q, "matching": ex["response"].strip(), "other": plain(ex["response"]).strip()}
        for q, ex in zip(questions, train)
    ]
    vectors = {}
    with torch.no_grad():
        if "diffmean" in methods:
            vectors["diffmean"] = diff_in_means(lm, pos_texts, neg_texts, reft.Site("resid_post", layer, reft.last()))
        if "caa" in methods:
            vectors["caa"] = caa(lm, items, layer=layer)
    return vectors, pos_texts, neg_texts


def run(args) -> dict:
    """Train and evaluate the LoReFT, then every (direction, positions, strength); write ``--out`` at once."""
    methods, positions, strengths = lists(args)
    targs = train_options(args)
    t0 = time.perf_counter()
    lm = interp.load(args.model)
    loreft = train_command.run(targs, lm=lm)  # `reft train --task style`: training, evaluation, samples, style rate
    print(f"loreft: style_rate {loreft['style_rate']}, accuracy {loreft['accuracy']}", file=sys.stderr, flush=True)
    defaults = cli.task_defaults(targs)
    data = cli.load_data(targs)
    config = cli.train_config(targs, defaults)  # the TrainConfig `reft train` evaluated the LoReFT with
    decoding = loreft["decoding"]  # and the decoding of its samples
    style = tasks.get(args.task)
    layer = args.layer if args.layer is not None else int(str(defaults["layers"]).split(";")[0])
    vectors, pos_texts, neg_texts = directions(lm, data.train, methods, layer)
    with torch.no_grad():
        resid = activations(lm, data.eval_prompts, reft.Site("resid_post", layer, reft.last())).norm(dim=-1).mean()

    rows = []
    for m, v in vectors.items():
        for ptext in positions:
            site = reft.Site("resid_post", layer, reft.parse_positions(ptext))
            for s in strengths:
                model = steer(lm, site, v, scale=s)
                gens = reft.generate(lm, data.eval_prompts, serve=[model] * len(data.eval_prompts), **decoding)
                metrics = reft.evaluate(lm, data.test, config=config, forward=model.logits)
                row = {"method": m, "positions": ptext, "strength": s, "style_rate": style.style_rate(gens),
                       "accuracy": metrics["accuracy"], "eval_loss": metrics["loss"], "samples": gens}  # fmt: skip
                rows.append(row)
                print(format_row(row), file=sys.stderr, flush=True)
    keep = ("style_rate", "style_rate_base", "accuracy", "eval_loss", "layers", "positions", "rank", "steps")
    result = {
        "task": args.task,
        "layer": layer,
        "decoding": decoding,
        "eval_prompts": data.eval_prompts,
        "n_train": len(data.train),
        "vector_norm": {m: float(v.norm()) for m, v in vectors.items()},
        "resid_norm": float(resid),
        "loreft": {k: loreft.get(k) for k in keep}
        | {
            "samples": [s.get("tuned", s.get("reft")) for s in loreft.get("samples", [])],
            "base_samples": [s["base"] for s in loreft.get("samples", [])],
        },
        "steering": rows,
        "contrast_example": {"positive": pos_texts[0], "negative": neg_texts[0]},
        "seconds_total": time.perf_counter() - t0,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(out, dumps(result), overwrite=args.overwrite)  # all at once; never a file made meanwhile
    if args.json:
        return {**result, "json": args.out}
    lo = result["loreft"]
    table = [f"{'method':<9} {'positions':<9} {'strength':>8} {'style_rate':>10} {'accuracy':>8} {'eval_loss':>9}"]
    table.append(f"{'base':<9} {'-':<9} {'-':>8} {lo['style_rate_base']:>10.3f} {'':>8} {'':>9}")
    table.append(
        f"{'loreft':<9} {lo['positions']:<9} {'-':>8} {lo['style_rate']:>10.3f} {lo['accuracy']:>8.3f} "
        f"{lo['eval_loss']:>9.3f}"
    )
    table += [format_row(r) for r in rows]
    return {"table": table, "vector_norm": result["vector_norm"], "resid_norm": result["resid_norm"], "json": args.out}


def format_row(r: dict) -> str:
    """One steering row as text.

    Example:
        >>> format_row({"method": "caa", "positions": "all", "strength": 4.0, "style_rate": 0.5, "accuracy": 0.0,
        ...             "eval_loss": 3.25})
        'caa       all            4.0      0.500    0.000     3.250'
    """
    return (
        f"{r['method']:<9} {r['positions']:<9} {r['strength']:>8.1f} {r['style_rate']:>10.3f} "
        f"{r['accuracy']:>8.3f} {r['eval_loss']:>9.3f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: 0 on success, 2 for bad input (one line on stderr, before the model loads), 1 otherwise."""
    args = parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    result = execute("python", SimpleNamespace(check=check, run=run), args)
    if isinstance(result, int):
        return result
    if args.json:
        print(json.dumps(result))
    else:
        print("\n".join([*result["table"], f"vector_norm: {result['vector_norm']}",
                         f"resid_norm: {result['resid_norm']}", f"json: {result['json']}"]))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
