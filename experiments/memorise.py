"""Memorisation (Wu et al. 2024, appendix F): how long a fixed text one rank-1 LoReFT at one position can store.

Run from the repository root (the table of docs/experiments.md took 14 min on a 2-core CPU):

    python experiments/memorise.py                      # 32..512 tokens at layer 9; layers 3, 9, 15 at 128
    python experiments/memorise.py --lengths 32,64 --layers 9 --steps 100 --max-seconds 60 --out /tmp/m.json

Each cell trains a rank-1 LoReFT at ``resid_post`` of one layer on the last prompt token to emit the first
``length`` tokens of :data:`PASSAGE` (``memorise_passage.txt`` beside this script, written for this project),
stopping as soon as the whole text is recovered (the weights of the best step are kept), and reports the
longest prefix whose every token is the argmax given the prompt and the text before it (teacher forcing, read
from the forward that computes the loss). Up to its first error that prefix *is* greedy decoding; ``--verify``
also decodes greedily (:func:`reft.generate_ids`) and records that count (``greedy``), as the paper reports.
Prints the table and writes it as JSON (``--out``, default results/reft_memorise.json) and a plot (``--plot``).

Example (the functions, on a tiny model with token ids):
    >>> res = memorise(lm, [11, 12, 13, 14], layer=0, steps=3, lr=1e-2, prompt=[1, 5, 7])
    >>> res.length, res.steps, 0 <= res.recovered <= 4       # at most 3 updates (fewer if all 4 are recovered)
    (4, 3, True)
    >>> prefix_match([4, 5, 6, 0, 7], [4, 5, 6, 9, 7])         # exact leading tokens (the 4th differs)
    3
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

import interp
import reft
from interp import optim
from interp.checks import as_float
from interp.cli import Parser, add_common_flags, check_positive, execute, model_shape, parse
from interp.errors import TrainConfigError
from interp.io import check_output_file, dumps, write_file_atomic
from interp.viz import save
from reft import data
from reft.train import response_loss

SCRIPT = "experiments/memorise.py"
OUT = "results/reft_memorise.json"
PLOT = "results/figures/reft_memorise.png"
PROMPT = "Recite the passage.\n"  # the default prompt for a model with a tokenizer
MAX_LENGTH = 643  # tokens of PASSAGE under the embedded Gemma-3 tokenizer (the longest text a cell can take)
# Plain prose of ~3,000 characters, which the Gemma-3 tokenizer turns into more than 600 tokens, so that every
# length up to 512 is a prefix of it.
PASSAGE = (Path(__file__).resolve().parent / "memorise_passage.txt").read_text(encoding="utf-8").rstrip("\n")


@dataclass
class Memorised:
    """One memorisation run: ``recovered`` of ``length`` tokens after ``steps`` updates (``seconds`` of training).

    ``recovered`` is the teacher-forced argmax prefix of the kept (best) weights; ``greedy`` the prefix greedy
    decoding reproduces (None unless ``verify=True``); ``best_step`` the update count those weights had.
    """

    recovered: int
    length: int
    steps: int
    seconds: float
    layer: int
    rank: int
    lr: float
    best_step: int = 0
    greedy: int | None = None
    final_loss: float = float("nan")
    losses: list[float] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.recovered == self.length

    def to_dict(self, *, losses: bool = False) -> dict:
        d = asdict(self)
        if not losses:
            d.pop("losses")
        return d


def prefix_match(pred: Sequence[int] | torch.Tensor, target: Sequence[int] | torch.Tensor) -> int:
    """How many leading tokens of ``pred`` equal ``target``'s (up to the shorter of the two).

    Example:
        >>> prefix_match([1, 2, 3], [1, 2, 3, 4]), prefix_match([9, 2], [1, 2]), prefix_match([], [1])
        (3, 0, 0)
    """
    pred = [int(t) for t in (pred.tolist() if isinstance(pred, torch.Tensor) else pred)]
    target = [int(t) for t in (target.tolist() if isinstance(target, torch.Tensor) else target)]
    n = 0
    for a, b in zip(pred, target):
        if a != b:
            break
        n += 1
    return n


def passage_ids(lm, length: int | None = None, text: str = PASSAGE) -> list[int]:
    """The first ``length`` token ids of ``text`` (no special tokens); a ReftError if it is shorter.

    Example:
        >>> passage_ids(lm, 4)                  # the tiny test model has no tokenizer
        Traceback (most recent call last):
        interp.errors.ReftError: this model has no tokenizer; give the text as a list of token ids
    """
    ids = token_ids(lm, text, "text")
    if length is not None and length > len(ids):
        raise reft.ReftError(f"the text has {len(ids)} tokens; length {length} asks for more; give a longer text")
    return ids[:length]


def token_ids(lm, x, what: str) -> list[int]:
    """``x`` as token ids: a string through the tokenizer (BOS for the prompt only), or ids as they are."""
    if isinstance(x, str):
        if lm.tokenizer is None:
            raise reft.ReftError(f"this model has no tokenizer; give the {what} as a list of token ids")
        return list(lm.tokenizer(x, add_special_tokens=what == "prompt")["input_ids"])
    ids = [int(t) for t in (x.tolist() if isinstance(x, torch.Tensor) else x)]
    if not ids:
        raise reft.ReftError(f"the {what} is empty; expected at least one token")
    return ids


def memorise(
    lm,
    text_ids_or_text,
    *,
    layer: int,
    rank: int = 1,
    steps: int = 300,
    lr: float = 4e-3,
    prompt=PROMPT,
    max_seconds: float | None = None,
    seed: int = 0,
    verify: bool = False,
    max_grad_norm: float = 1.0,
) -> Memorised:
    """Train a rank-``rank`` LoReFT at ``Site("resid_post", layer, last())`` to emit the text after ``prompt``.

    Args:
        text_ids_or_text: the text to store, a string (tokenized without special tokens) or token ids.
        steps: at most this many AdamW updates (constant ``lr``, no weight decay, gradients clipped to
            ``max_grad_norm``); training stops early once every token is recovered.
        prompt: a string (tokenized with BOS) or token ids; the edit is at its last token.
        max_seconds: also stop after this much training time (a budget for long texts).
        verify: also decode greedily with the kept weights and record that prefix in ``greedy``.

    Returns:
        A :class:`Memorised`; ``.recovered`` is the longest prefix recovered exactly, ``.model`` the ReftModel.
    """
    target = token_ids(lm, text_ids_or_text, "text")
    prompt_ids = token_ids(lm, prompt, "prompt")
    if not 0 <= layer < lm.n_layers:
        raise reft.ReftError(f"layer {layer}: the model has layers 0..{lm.n_layers - 1}")
    options = {"steps": steps, "lr": lr, "max_grad_norm": max_grad_norm, "seed": seed}
    optim.check_options(options, owner="memorise", error=TrainConfigError)
    if max_seconds is not None:
        as_float(max_seconds, "memorise: max_seconds", low=0, open_low=True, error=TrainConfigError)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        rlm = reft.attach(lm, {reft.Site("resid_post", layer, reft.last()): reft.LoReFT(lm.d_model, rank=rank)})
    rb = data.collate(lm, data.tokenize(lm, [data.Example(tuple(prompt_ids), tuple(target))]))
    n = len(target)
    losses: list[float] = []  # one per forward: before each update, and of the weights kept at the end
    best = {"got": -1, "step": 0, "state": None, "now": 0}

    def loss(batch):  # scores the weights as they are now, before this step's update
        logits = rlm.logits(batch)  # (1, n, V) at the columns predicting each text token
        got = prefix_match(logits[0].argmax(-1), target)
        value = response_loss(logits, batch)
        losses.append(value.item())
        if got > best["got"]:
            state = {k: v.detach().clone() for k, v in rlm.interventions.state_dict().items()}
            best.update(got=got, step=len(losses) - 1, state=state)
        best["now"] = got
        return value

    def done(hist) -> bool:  # every token recovered, or the time budget spent: no further update
        return best["now"] == n or (max_seconds is not None and hist.seconds >= max_seconds)

    rlm.train()
    try:  # constant lr, no weight decay, clipped gradients
        hist = optim.train(
            rlm.trainable_parameters(), loss, itertools.repeat(rb), steps=steps, lr=lr, schedule="constant",
            max_grad_norm=max_grad_norm, stop=done,
        )  # fmt: skip
        spent = hist.seconds
        if not hist.stopped:  # all `steps` updates taken: score the last weights too
            t0 = time.perf_counter()
            with torch.no_grad():
                loss(rb)
            spent += time.perf_counter() - t0
    finally:
        rlm.eval()
    rlm.interventions.load_state_dict(best["state"])
    got, step = best["got"], best["step"]
    res = Memorised(got, n, hist.steps, spent, layer, rank, lr, step, None, losses[step], losses)
    if verify:
        res.greedy = greedy_prefix(rlm, prompt_ids, target, upto=min(n, got + 1))
    res.model = rlm  # the trained ReftModel (not part of to_dict)
    return res


@torch.no_grad()
def greedy_prefix(rlm, prompt_ids: list[int], target: list[int], *, upto: int | None = None) -> int:
    """The prefix of ``target`` that greedy decoding from ``prompt_ids`` reproduces (decoding ``upto`` tokens;
    decoding stops at EOS, so a text holding the EOS token counts up to it).

    Example:
        >>> greedy_prefix(rlm, [1, 5, 7], [3, 4], upto=2) <= 2
        True
    """
    upto = len(target) if upto is None else upto
    g = reft.generate_ids(rlm, torch.tensor([prompt_ids]), max_new_tokens=upto)
    return prefix_match(g.new_ids[0], target[:upto])


def cells_of(lengths=(32, 64, 128, 256, 512), layers=(3, 9, 15), *, layer=9, layers_at=128) -> list[tuple[int, int]]:
    """``(length, layer)`` cells: every length at ``layer``, then every one of ``layers`` at length ``layers_at``.

    Example:
        >>> cells_of((32, 64), (3, 9), layer=9, layers_at=64)
        [(32, 9), (64, 9), (64, 3)]
    """
    cells = [(int(n), int(layer)) for n in lengths]
    for lay in layers:
        if (int(layers_at), int(lay)) not in cells:
            cells.append((int(layers_at), int(lay)))
    return cells


def memorise_table(
    lm,
    lengths=(32, 64, 128, 256, 512),
    layers=(3, 9, 15),
    *,
    layer: int = 9,
    layers_at: int = 128,
    cells: Sequence[tuple[int, int]] | None = None,
    text=None,
    report=None,
    **kw,
) -> list[dict]:
    """:func:`memorise` on each ``(length, layer)`` cell (default :func:`cells_of`): one row per cell.

    Each cell stores the first ``length`` tokens of ``text`` (default: :data:`PASSAGE` through the model's
    tokenizer; token ids for a model without one). ``kw`` goes to :func:`memorise`; ``report(row)`` is called
    after each cell.

    Example:
        >>> rows = memorise_table(lm, cells=[(4, 0), (8, 1)], text=list(range(10, 40)), steps=3, prompt=[1, 2])
        >>> [(r["length"], r["layer"], r["steps"] <= 3) for r in rows]
        [(4, 0, True), (8, 1, True)]
    """
    cells = list(cells) if cells is not None else cells_of(lengths, layers, layer=layer, layers_at=layers_at)
    longest = max(n for n, _ in cells)
    ids = passage_ids(lm, longest, PASSAGE if text is None else text)
    rows = []
    for n, lay in cells:
        res = memorise(lm, ids[:n], layer=lay, **kw)
        row = res.to_dict()
        row["fraction"] = res.recovered / n
        rows.append(row)
        if report is not None:
            report(row)
    return rows


def plot_table(rows: list[dict], *, layer: int | None = None, layers_at: int | None = None):
    """Two panels: recovered prefix against text length (at ``layer``), and by layer (at length ``layers_at``).

    Example:
        >>> rows = [{"length": 4, "layer": 1, "recovered": 4}, {"length": 8, "layer": 1, "recovered": 5},
        ...         {"length": 8, "layer": 0, "recovered": 2}]
        >>> len(plot_table(rows, layer=1, layers_at=8).axes)
        2
    """
    import matplotlib.pyplot as plt  # heavy and optional: only to draw

    layer = rows[0]["layer"] if layer is None else layer
    by_len = sorted((r["length"], r["recovered"], r.get("steps")) for r in rows if r["layer"] == layer)
    layers_at = max(n for n, _, _ in by_len) if layers_at is None else layers_at
    by_layer = sorted((r["layer"], r["recovered"], r.get("steps")) for r in rows if r["length"] == layers_at)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    xs = [n for n, _, _ in by_len]
    a.plot(xs, xs, ls="--", color="0.6", label="whole text")
    a.plot(xs, [r for _, r, _ in by_len], marker="o", label="recovered prefix")
    for n, r, k in by_len:
        if k is not None:
            a.annotate(f"{k} steps", (n, r), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    a.set_xscale("log", base=2)
    a.set_xticks(xs, [str(x) for x in xs])
    a.set(xlabel="text length (tokens)", ylabel="tokens recovered exactly", title=f"rank-1 LoReFT, layer {layer}")
    a.legend(frameon=False)
    bars = b.bar([str(lay) for lay, _, _ in by_layer], [r for _, r, _ in by_layer], color="C1")
    for bar, (_, r, k) in zip(bars, by_layer):
        if k is not None:
            at = (bar.get_x() + bar.get_width() / 2, r)
            b.annotate(f"{k} steps", at, textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
    b.axhline(layers_at, ls="--", color="0.6")
    b.set(xlabel="layer", ylabel="tokens recovered exactly", title=f"{layers_at}-token text, by layer")
    fig.tight_layout()
    return fig


# ---- the command line ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The options (those of the former ``reft memorise``); errors are one line (:class:`interp.cli.Parser`)."""
    p = Parser(prog=f"python {SCRIPT}", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model path or id (default: the embedded Gemma-3-270M)")
    p.add_argument("--lengths", default="32,64,128,256,512", help="text lengths in tokens (at --layer)")
    p.add_argument("--layer", type=int, default=9, help="the layer of the length sweep")
    p.add_argument("--layers", default="3,9,15", help="the layers of the layer sweep (at --layers-at tokens)")
    p.add_argument("--layers-at", type=int, default=128, help="the text length of the layer sweep")
    p.add_argument("--rank", type=int, default=1)
    p.add_argument("--steps", type=int, default=300, help="at most this many updates per cell (early stop)")
    p.add_argument("--lr", type=float, default=1e-2, help="constant AdamW learning rate")
    p.add_argument("--max-seconds", type=float, default=None, help="also stop a cell after this much training")
    p.add_argument("--prompt", default=None, help=f"the prompt (default: {PROMPT!r})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True, help="also decode greedily")
    p.add_argument("--out", default=OUT, help=f"the JSON results file (default {OUT})")
    p.add_argument("--plot", default=PLOT, help=f"the PNG plot (default {PLOT})")
    p.add_argument("--overwrite", action="store_true", help="replace earlier --out / --plot files")
    add_common_flags(p)
    p.set_defaults(command=SCRIPT)  # errors read "python experiments/memorise.py: error: ..."
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
        raise reft.ReftError(f"{option} {text!r}: expected integers separated by commas, like '32,64'") from None
    bad = [v for v in values if v < low or (high is not None and v > high)]
    if not values or bad:
        span = f"{low}..{high}" if high is not None else f"{low} or more"
        raise reft.ReftError(f"{option} {text!r}: {bad or 'nothing given'}; expected values in {span}")
    return values


def check(args) -> None:
    """Everything the command can refuse before loading the model: outputs, numbers, layers, lengths."""
    check_output_file(args.out, overwrite=args.overwrite, what="--out")
    check_output_file(args.plot, overwrite=args.overwrite, what="--plot")
    if Path(args.out).resolve() == Path(args.plot).resolve():
        raise reft.ReftError("--out and --plot are the same file; give two paths")
    check_positive(args, "rank", "steps", "lr", "max_seconds", "layers_at")
    limit = MAX_LENGTH if args.model is None else None
    int_list(args.lengths, "--lengths", 1, limit)
    if limit is not None and args.layers_at > limit:
        raise reft.ReftError(f"--layers-at {args.layers_at}: the passage has {limit} tokens")
    shape = model_shape(args.model)
    high = shape[0] - 1 if shape else None
    int_list(args.layers, "--layers", 0, high)
    int_list(str(args.layer), "--layer", 0, high)
    if shape and args.rank > shape[1]:
        raise reft.ReftError(f"--rank {args.rank}: the model's d_model is {shape[1]}")


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


def run(args, argv: Sequence[str] | None = None) -> dict:
    """Load the model, run every cell, write ``--out`` (JSON, at once) and ``--plot``; the result as a dict."""
    lengths, layers = int_list(args.lengths, "--lengths"), int_list(args.layers, "--layers", 0)
    lm = interp.load(args.model)
    t0 = time.perf_counter()
    print(format_table([])[0], file=sys.stderr)
    rows = memorise_table(
        lm, lengths, layers, layer=args.layer, layers_at=args.layers_at, rank=args.rank, steps=args.steps, lr=args.lr,
        prompt=args.prompt.replace("\\n", "\n") if args.prompt else PROMPT, max_seconds=args.max_seconds,
        seed=args.seed, verify=args.verify, report=lambda r: print(format_table([r])[1], file=sys.stderr, flush=True),
    )  # fmt: skip
    result = {
        "what": "rank-1 LoReFT at resid_post, last prompt token, trained to emit the first `length` tokens of "
        "the passage of experiments/memorise_passage.txt; `recovered` = teacher-forced argmax prefix (= greedy "
        "decoding up to the first error), `greedy` = greedy decoding checked",
        "command": f"python {SCRIPT} " + " ".join(sys.argv[1:] if argv is None else argv),
        "model": args.model or "embedded Gemma-3-270M", "prompt": args.prompt or PROMPT, "rank": args.rank,
        "lr": args.lr, "max_steps": args.steps, "max_seconds": args.max_seconds, "layer": args.layer,
        "layers_at": args.layers_at, "seconds_total": time.perf_counter() - t0, "rows": rows,
    }  # fmt: skip
    out, plot = Path(args.out), Path(args.plot)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(out, dumps(result), overwrite=args.overwrite)  # all at once; never a file made meanwhile
    save(plot_table(rows, layer=args.layer, layers_at=args.layers_at), plot)
    if args.json:
        return {**result, "json": str(out), "plot": str(plot)}
    return {"table": format_table(rows), "json": str(out), "plot": str(plot)}


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: 0 on success, 2 for bad input (one line on stderr, before the model loads), 1 otherwise."""
    args = parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    result = execute("python", SimpleNamespace(check=check, run=lambda a: run(a, argv)), args)
    if isinstance(result, int):
        return result
    print(json.dumps(result) if args.json else "\n".join([*result["table"], f"json: {result['json']}",
                                                           f"plot: {result['plot']}"]))  # fmt: skip
    return 0


__all__ = ["PASSAGE", "PROMPT", "Memorised", "memorise", "memorise_table", "prefix_match", "passage_ids", "cells_of"]

if __name__ == "__main__":
    sys.exit(main())
