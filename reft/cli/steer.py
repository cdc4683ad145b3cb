"""``reft steer``: steering baselines (diff-in-means, CAA) against a LoReFT on the style task, at equal evaluation.

Example:
    reft steer                                                  # both directions, prompt and decode positions
    reft steer --methods caa --positions all+g --strengths 0,2,4 --out /tmp/steer.json

The LoReFT is trained and evaluated by ``reft train --task style`` itself (in this process, with its options
and defaults). Each steering vector is computed at ``resid_post`` of ``--layer`` (default: the task's layer)
from the task's training examples, then added with :class:`interp.Steer` at ``--positions`` times each
strength, and evaluated as ``reft train`` evaluates the LoReFT: the same held-out prompts, the same decoding
(its ``decoding``: 24 new tokens, the task's repetition penalty), the same scorer (``reft.tasks.style.style_rate``,
answers opening with "Squawk"), and :func:`reft.train.evaluate` on the same held-out examples with the same
TrainConfig (``accuracy``: " Squawk!" is the greedy answer; ``eval_loss``).

Directions (:mod:`reft.steering`): ``diffmean``, the mean activation at the last token of each training prompt
followed by its parrot answer minus that with the same answer stripped of the style ("Squawk!", "matey");
``caa``, the A/B form of the same pairs (Rimsky et al. 2024), read at the answer letter. Strengths multiply
the raw mean-difference vector; ``vector_norm`` and ``resid_norm`` (the mean norm of the residual stream at
the held-out prompts' last token) give the scale. Positions: ``all`` (every prompt token), ``all+g`` (and every
generated token), or a ReFT form such as ``l1`` or ``l1+g``.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from interp.io import check_output_file

from ..interventions import ReftError
from . import add_train_config_options

OUT = "results/reft_steer_style.json"
METHODS = ("diffmean", "caa")


def add_parser(sub):
    p = sub.add_parser(
        "steer",
        help="steering baselines (diff-in-means, CAA) against LoReFT on the style task",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", default="style", choices=("style",), help="the task (style only: its scorer)")
    p.add_argument("--model", default=None, help="model path or id (default: the embedded Gemma-3-270M)")
    p.add_argument("--layer", type=int, default=None, help="steering layer (default: the task's LoReFT layer)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
    p.add_argument("--positions", default="all,all+g", help="comma-separated steering positions (see above)")
    p.add_argument("--strengths", default="0,0.5,1,2,4,8", help="comma-separated multipliers of the vector")
    p.add_argument("--out", default=OUT, help="the JSON results file")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier --out file")
    add_train_config_options(p)  # the LoReFT's training, as `reft train` takes them
    return p


def plain(response: str) -> str:
    """A style answer without its style: no "Squawk!", no "matey".

    Example:
        >>> plain(" Squawk! Eight legs, matey, all of them hairy. Squawk!")
        ' Eight legs, all of them hairy.'
    """
    text = re.sub(r"\s*Squawk!\s*", " ", response)
    text = re.sub(r",?\s*matey(?=[,.!?])", "", text)
    return " " + " ".join(text.split())


def lists(args):
    """``(methods, positions, strengths)`` from their options, checked."""
    from ..positions import parse_positions

    methods = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ReftError(f"--methods {args.methods!r}: unknown {bad}; expected some of {', '.join(METHODS)}")
    positions = [p.strip() for p in args.positions.split(",") if p.strip()]
    if not positions:
        raise ReftError("--positions: give at least one, e.g. 'all'")
    for p in positions:
        parse_positions(p)
    try:
        strengths = [float(s) for s in args.strengths.split(",") if s.strip()]
    except ValueError:
        raise ReftError(f"--strengths {args.strengths!r}: expected numbers separated by commas, like '0,2,4'") from None
    if not strengths:
        raise ReftError("--strengths: give at least one, e.g. '0,4'")
    return methods, positions, strengths


def train_options(args) -> argparse.Namespace:
    """The ``reft train`` options of the LoReFT: the task, the model, and every TrainConfig option given here.

    Example:
        >>> from reft.cli import build_parser
        >>> t = train_options(build_parser().parse_args(["steer", "--steps", "30"]))
        >>> t.task, t.steps, t.method, t.positions, t.out
        ('style', 30, 'loreft', None, None)
    """
    from .compare import train_args

    return train_args(args, fresh=("positions", "out", "overwrite"), method="loreft")


def check(args) -> None:
    """Everything ``reft steer`` can refuse before loading the model (the LoReFT's ``reft train`` checks too)."""
    from interp.cli import model_shape

    from .train import check as train_check

    check_output_file(args.out, overwrite=args.overwrite, what="--out")
    lists(args)
    train_check(train_options(args))
    shape = model_shape(args.model)
    if args.layer is not None and shape and not 0 <= args.layer < shape[0]:
        raise ReftError(f"--layer {args.layer}: the model has layers 0..{shape[0] - 1}")


def run(args) -> dict:
    import torch

    import interp
    from interp.io import dumps, write_file_atomic
    from interp.positions import last
    from interp.sites import Site

    from .. import tasks as _tasks
    from ..generate import generate
    from ..positions import parse_positions
    from ..steering import activations, caa, diff_in_means, steer
    from ..train import evaluate
    from . import load_data, task_defaults, train_config
    from .train import run as train_run

    methods, positions, strengths = lists(args)
    targs = train_options(args)
    t0 = time.perf_counter()
    lm = interp.load(args.model)
    loreft = train_run(targs, lm=lm)  # `reft train --task style`: training, evaluation, samples, style rate
    print(f"loreft: style_rate {loreft['style_rate']}, accuracy {loreft['accuracy']}", file=sys.stderr, flush=True)
    defaults = task_defaults(targs)
    data = load_data(targs)
    config = train_config(targs, defaults)  # the TrainConfig `reft train` evaluated the LoReFT with
    decoding = loreft["decoding"]  # and the decoding of its samples
    style = _tasks.get(args.task)
    layer = args.layer if args.layer is not None else int(str(defaults["layers"]).split(";")[0])

    train = data.train
    pos_texts = [ex["prompt"] + ex["response"] for ex in train]
    neg_texts = [ex["prompt"] + plain(ex["response"]) for ex in train]
    questions = [ex["prompt"].split("Question: ", 1)[-1].split("\n", 1)[0] for ex in train]
    items = [
        {"question": q, "matching": ex["response"].strip(), "other": plain(ex["response"]).strip()}
        for q, ex in zip(questions, train)
    ]
    with torch.no_grad():
        vectors = {}
        if "diffmean" in methods:
            vectors["diffmean"] = diff_in_means(lm, pos_texts, neg_texts, Site("resid_post", layer, last()))
        if "caa" in methods:
            vectors["caa"] = caa(lm, items, layer=layer)
        resid = activations(lm, data.eval_prompts, Site("resid_post", layer, last())).norm(dim=-1).mean()

    rows = []
    for m, v in vectors.items():
        for ptext in positions:
            site = Site("resid_post", layer, parse_positions(ptext))
            for s in strengths:
                model = steer(lm, site, v, scale=s)
                gens = generate(lm, data.eval_prompts, serve=[model] * len(data.eval_prompts), **decoding)
                metrics = evaluate(lm, data.test, config=config, forward=model.logits)
                row = {
                    "method": m,
                    "positions": ptext,
                    "strength": s,
                    "style_rate": style.style_rate(gens),
                    "accuracy": metrics["accuracy"],
                    "eval_loss": metrics["loss"],
                    "samples": gens,
                }
                rows.append(row)
                print(format_row(row), file=sys.stderr, flush=True)
    result = {
        "task": args.task,
        "layer": layer,
        "decoding": decoding,
        "eval_prompts": data.eval_prompts,
        "n_train": len(train),
        "vector_norm": {m: float(v.norm()) for m, v in vectors.items()},
        "resid_norm": float(resid),
        "loreft": {
            k: loreft.get(k)
            for k in ("style_rate", "style_rate_base", "accuracy", "eval_loss", "layers", "positions", "rank", "steps")
        }
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
