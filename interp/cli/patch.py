"""``interp patch``: an activation-patching grid (layers x positions) on a built-in task.

Example:
    interp patch --task ioi --json                 # writes results/patch/patch_ioi.{png,json}
                                                   # and the attribution-patching grids patch_ioi_atp.{png,json}
                                                   # (AtP) and patch_ioi_atpstar.{png,json} (AtP*)

The exact grid reuses the clean run (``patch_grid(method="cached")``); the AtP grid (``--no-atp`` to skip both
estimates) is one clean forward, one source forward and one backward; the AtP* grid (``attribution_patch(...,
method="atp*")``: attention recomputed exactly, :mod:`interp.atp_star`; for the components it covers) adds two
one-token forwards per layer of cells. Each JSON gives its correlation and top-10 overlap with the exact grid
and its time against the exact grid's.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

import interp
from interp import viz
from interp.atp_star import COMPONENTS as STAR_COMPONENTS
from interp.attribution import attribution_patch
from interp.patching import patch_grid
from interp.sites import COMPONENTS, INNER_COMPONENTS
from interp.tasks import registry

from . import model_shape, output_files, write_json


def add_parser(sub):
    p = sub.add_parser("patch", help="activation-patching grid over layers x positions", description=__doc__)
    p.add_argument("--task", choices=registry.names("patch"), default="ioi")
    p.add_argument("--model", default=None, help="local HF model path or id (default: embedded Gemma-3-270M)")
    p.add_argument("--n", type=int, default=16, help="number of base/source pairs (default 16)")
    p.add_argument(
        "--component",
        choices=[c for c in COMPONENTS + INNER_COMPONENTS if c != "head"],
        default="resid_post",
        help="what to patch: the residual stream, a block's output, or inside attention (q, k, v, all heads; "
        "attn_pattern: a query row of the probabilities) and MLPs (mlp_hidden: the neurons)",
    )
    p.add_argument("--layers", default="all", help="'all' or a list like '0;4;8'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/patch", help="folder for the PNG heatmap and the JSON results")
    p.add_argument("--overwrite", action="store_true", help="replace earlier results in --out")
    p.add_argument("--no-atp", dest="atp", action="store_false", help="skip the attribution-patching grid")
    return p


def parse_layers(text: str, n_layers: int) -> list[int]:
    """'all' or '3;9;18' (also commas) -> a list of layer indices, checked against the model."""
    if text == "all":
        return list(range(n_layers))
    try:
        layers = [int(x) for x in text.replace(",", ";").split(";") if x.strip()]
    except ValueError:
        raise ValueError(f"--layers {text!r}: expected 'all' or integers separated by ';' like '3;9;17'") from None
    bad = [x for x in layers if not 0 <= x < n_layers]
    if not layers or bad:
        raise ValueError(f"--layers {text!r}: layers {bad or layers} are not in 0..{n_layers - 1}")
    return layers


def check(args) -> None:
    """Everything ``interp patch`` can refuse before loading the model: the output files, --n and --layers."""
    output_files(args.out, f"patch_{args.task}", args.overwrite)
    if args.atp:
        output_files(args.out, f"patch_{args.task}_atp", args.overwrite)
        if args.component in STAR_COMPONENTS:
            output_files(args.out, f"patch_{args.task}_atpstar", args.overwrite)
    if args.n < 1:
        raise ValueError(f"--n {args.n}: expected at least 1 pair")
    shape = model_shape(args.model)
    if shape:
        parse_layers(args.layers, shape[0])


def run(args) -> dict:
    out = Path(args.out)
    png, js = output_files(out, f"patch_{args.task}", args.overwrite)
    lm = interp.load(args.model)
    layers = parse_layers(args.layers, lm.n_layers)
    pairs, positions = registry.get(args.task, "patch")(args.n, seed=args.seed)
    t0 = time.perf_counter()
    grid = patch_grid(lm, pairs, layers=layers, positions=positions, component=args.component)
    seconds = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    name = f"{args.task.upper()} activation patching ({args.component}), {lm.spec.architecture}, {grid.n_pairs} pairs"
    viz.save(viz.plot_patching_grid(grid.effect, grid.layers, grid.positions, title=name), png)
    result = {"task": args.task, "model": lm.spec.architecture, **grid.to_dict(), "png": str(png), "json": str(js)}
    write_json(js, result, args.overwrite)
    if args.atp:
        result["atp"] = _atp(lm, pairs, positions, grid, args, out, "atp", seconds)
        if args.component in STAR_COMPONENTS and _one_token_each(lm, pairs, positions):
            result["atpstar"] = _atp(lm, pairs, positions, grid, args, out, "atp*", seconds)
    return result


def _one_token_each(lm, pairs, positions) -> bool:
    """Whether every position is one token of each base prompt (AtP* patches one token per cell)."""
    mask = interp.encode(lm, pairs.base).attention_mask
    return all(p.resolve(mask).shape[1] == 1 for p in positions.values())


def _atp(lm, pairs, positions, exact, args, out: Path, method: str, exact_seconds: float) -> dict:
    """An attribution-patching grid next to the exact one: agreement (Pearson r, top 10) and time against it."""
    stem = f"patch_{args.task}_{method.replace('*', 'star')}"
    png, js = out / f"{stem}.png", out / f"{stem}.json"
    t0 = time.perf_counter()
    grid = attribution_patch(
        lm, pairs, layers=exact.layers, positions=positions, component=args.component, method=method
    )
    a, e = grid.effect.flatten().double(), exact.effect.flatten().double()
    k = min(10, e.numel())
    agree = {
        "pearson_r_with_exact": float(torch.corrcoef(torch.stack([a, e]))[0, 1]),
        "top10_overlap_with_exact": len(set(a.abs().topk(k).indices.tolist()) & set(e.abs().topk(k).indices.tolist())),
        "seconds": time.perf_counter() - t0,
        "exact_seconds": exact_seconds,
    }
    agree["time_over_exact"] = agree["seconds"] / exact_seconds
    name = "AtP*" if method == "atp*" else "attribution patching"
    title = f"{name} ({args.component}), r = {agree['pearson_r_with_exact']:.2f} with exact"
    viz.save(viz.plot_patching_grid(grid.effect, grid.layers, grid.positions, title=title), png)
    write_json(js, {"task": args.task, "model": lm.spec.architecture, **grid.to_dict(), **agree}, args.overwrite)
    return {**agree, "png": str(png), "json": str(js)}
