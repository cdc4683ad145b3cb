"""``reft memorise``: how long a text one rank-1 LoReFT at one position can store (ReFT paper, appendix F).

Example:
    reft memorise                                              # 32..512 tokens at layer 9; layers 3, 9, 15 at 128
    reft memorise --lengths 32,64 --layers 9 --steps 100 --max-seconds 60 --out /tmp/m.json --plot /tmp/m.png

Each cell trains a rank-1 LoReFT at ``resid_post`` of one layer on the last prompt token to emit the first
``length`` tokens of :data:`reft.memorise.PASSAGE` (an English passage written for this project), stopping
early once the whole text is recovered, and reports the prefix recovered exactly (teacher-forced argmax,
equal to greedy decoding up to its first error; ``--verify`` also decodes greedily). Prints the table
(length x layer -> recovered prefix, steps, seconds) and writes it as JSON (``--out``) and a plot (``--plot``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from interp.io import check_output_file

from ..interventions import ReftError

OUT = "results/reft_memorise.json"
PLOT = "results/figures/reft_memorise.png"


def add_parser(sub):
    p = sub.add_parser(
        "memorise",
        help="memorisation by a rank-1 LoReFT: recovered prefix by text length and layer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default=None, help="model path or id (default: the embedded Gemma-3-270M)")
    p.add_argument("--lengths", default="32,64,128,256,512", help="text lengths in tokens (at --layer)")
    p.add_argument("--layer", type=int, default=9, help="the layer of the length sweep")
    p.add_argument("--layers", default="3,9,15", help="the layers of the layer sweep (at --layers-at tokens)")
    p.add_argument("--layers-at", type=int, default=128, help="the text length of the layer sweep")
    p.add_argument("--rank", type=int, default=1)
    p.add_argument("--steps", type=int, default=300, help="at most this many updates per cell (early stop)")
    p.add_argument("--lr", type=float, default=1e-2, help="constant AdamW learning rate")
    p.add_argument("--max-seconds", type=float, default=None, help="also stop a cell after this much training")
    p.add_argument("--prompt", default=None, help="the prompt (default: reft.memorise.PROMPT)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True, help="also decode greedily")
    p.add_argument("--out", default=OUT, help="the JSON results file")
    p.add_argument("--plot", default=PLOT, help="the PNG plot")
    p.add_argument("--overwrite", action="store_true", help="replace earlier --out / --plot files")
    return p


def int_list(text: str, option: str, low: int = 1, high: int | None = None) -> list[int]:
    """``'32,64'`` -> ``[32, 64]``, each in ``low..high``.

    Example:
        >>> int_list("3, 9", "--layers", 0, 17)
        [3, 9]
    """
    try:
        values = [int(x) for x in str(text).replace(";", ",").split(",") if x.strip()]
    except ValueError:
        raise ReftError(f"{option} {text!r}: expected integers separated by commas, like '32,64'") from None
    bad = [v for v in values if v < low or (high is not None and v > high)]
    if not values or bad:
        span = f"{low}..{high}" if high is not None else f"{low} or more"
        raise ReftError(f"{option} {text!r}: {bad or 'nothing given'}; expected values in {span}")
    return values


def check(args) -> None:
    """Everything ``reft memorise`` can refuse before loading the model: outputs, numbers, layers, lengths."""
    from interp.cli import check_positive, model_shape

    from ..memorise import MAX_LENGTH

    check_output_file(args.out, overwrite=args.overwrite, what="--out")
    check_output_file(args.plot, overwrite=args.overwrite, what="--plot")
    if Path(args.out).resolve() == Path(args.plot).resolve():
        raise ReftError("--out and --plot are the same file; give two paths")
    check_positive(args, "rank", "steps", "lr", "max_seconds", "layers_at")
    limit = MAX_LENGTH if args.model is None else None
    int_list(args.lengths, "--lengths", 1, limit)
    if limit is not None and args.layers_at > limit:
        raise ReftError(f"--layers-at {args.layers_at}: the passage has {limit} tokens")
    shape = model_shape(args.model)
    high = shape[0] - 1 if shape else None
    int_list(args.layers, "--layers", 0, high)
    int_list(str(args.layer), "--layer", 0, high)
    if shape and args.rank > shape[1]:
        raise ReftError(f"--rank {args.rank}: the model's d_model is {shape[1]}")


def format_table(rows: list[dict]) -> list[str]:
    """The table as lines of text: length, layer, recovered prefix (and greedy), steps, seconds.

    Example:
        >>> format_table([{"length": 32, "layer": 9, "recovered": 32, "greedy": 32, "steps": 41, "seconds": 60.2}])[1]
        '    32      9    32/32  (100%)      32     41     60.2'
    """
    lines = [f"{'length':>6} {'layer':>6} {'recovered':>15} {'greedy':>7} {'steps':>6} {'seconds':>8}"]
    for r in rows:
        g = "-" if r.get("greedy") is None else str(r["greedy"])
        frac = f"{r['recovered']}/{r['length']}  ({100 * r['recovered'] / r['length']:.0f}%)"
        lines.append(f"{r['length']:>6} {r['layer']:>6} {frac:>15} {g:>7} {r['steps']:>6} {r['seconds']:>8.1f}")
    return lines


def run(args) -> dict:
    import interp
    from interp.io import dumps, write_file_atomic
    from interp.viz import save

    from ..memorise import PROMPT, memorise_table, plot_table

    lengths = int_list(args.lengths, "--lengths")
    layers = int_list(args.layers, "--layers", 0)
    lm = interp.load(args.model)
    t0 = time.perf_counter()

    def report(row):
        print(format_table([row])[1], file=sys.stderr, flush=True)

    print(format_table([])[0], file=sys.stderr)
    rows = memorise_table(
        lm,
        lengths,
        layers,
        layer=args.layer,
        layers_at=args.layers_at,
        rank=args.rank,
        steps=args.steps,
        lr=args.lr,
        prompt=args.prompt.replace("\\n", "\n") if args.prompt else PROMPT,
        max_seconds=args.max_seconds,
        seed=args.seed,
        verify=args.verify,
        report=report,
    )
    result = {
        "what": "rank-1 LoReFT at resid_post, last prompt token, trained to emit the first `length` tokens of "
        "reft.memorise.PASSAGE; `recovered` = teacher-forced argmax prefix (= greedy decoding up to the first "
        "error), `greedy` = greedy decoding checked",
        "command": "reft memorise " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["memorise"] else None,
        "model": args.model or "embedded Gemma-3-270M",
        "prompt": args.prompt or PROMPT,
        "rank": args.rank,
        "lr": args.lr,
        "max_steps": args.steps,
        "max_seconds": args.max_seconds,
        "layer": args.layer,
        "layers_at": args.layers_at,
        "seconds_total": time.perf_counter() - t0,
        "rows": rows,
    }
    out, plot = Path(args.out), Path(args.plot)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(out, dumps(result), overwrite=args.overwrite)  # all at once; never a file made meanwhile
    save(plot_table(rows, layer=args.layer, layers_at=args.layers_at), plot)
    if args.json:
        return {**result, "json": str(out), "plot": str(plot)}
    return {"table": format_table(rows), "json": str(out), "plot": str(plot)}
