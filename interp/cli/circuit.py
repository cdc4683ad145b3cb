"""``interp circuit``: edge attribution (EAP and EAP-IG), an exact check, and faithfulness curves on a task.

Example:
    interp circuit --task ioi --json                 # writes results/circuit/circuit_ioi.{png,json},
                                                     # circuit_ioi_faithfulness.png, circuit_ioi_edges.json
    interp circuit --task ioi --quick --json         # 4 pairs, 2 steps, 3 budgets, 6 exact edges

Scores every edge of the model's graph (input, heads, MLPs, logits) with EAP (two forwards and one backward) and
EAP-IG (``--steps`` interpolation steps on the inputs), patches a sample of edges exactly (half the top edges
by EAP-IG, half drawn at random) to give each method's Pearson r with exact edge patching, and runs every budget's
circuit exactly (counterfactual or mean ablation) for the faithfulness curves, with MIB's areas: CPR (the area
under f, higher is better) and CMD (the area under |1 - f|, lower is better).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import torch

import interp
from interp import viz
from interp.circuits.eap import eap
from interp.circuits.faithfulness import ABLATIONS, BUDGETS, check_budgets, circuit_at, faithfulness
from interp.circuits.graph import Graph
from interp.circuits.run import exact_edge_effects
from interp.tasks import registry

from . import check_positive, output_files, write_json

QUICK = dict(n=4, steps=2, sample=6, budgets=(0.01, 0.1, 1.0))


def add_parser(sub):
    p = sub.add_parser(
        "circuit", help="edge attribution (EAP, EAP-IG) and faithfulness curves on a task", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("--task", choices=registry.names("patch"), default="ioi")
    p.add_argument("--model", default=None, help="local HF model path or id (default: embedded Gemma-3-270M)")
    p.add_argument("--n", type=int, default=None, help="number of base/source pairs (default 8; --quick 4)")
    p.add_argument("--steps", type=int, default=None, help="EAP-IG interpolation steps (default 5; --quick 2)")
    p.add_argument("--sample", type=int, default=None, help="edges patched exactly for the check (default 16)")
    p.add_argument("--ablation", choices=ABLATIONS, default="counterfactual", help="how edges outside are removed")
    p.add_argument("--budgets", default=None, help="edge fractions like '0.01,0.1,1' (default MIB's 0.001 .. 1)")
    p.add_argument("--top", type=int, default=None, help="edges drawn in the circuit figure (default 1%% of them)")
    p.add_argument("--quick", action="store_true", help="a small run: 4 pairs, 2 steps, 3 budgets, 6 exact edges")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/circuit", help="folder for the figures and the JSON results")
    p.add_argument("--overwrite", action="store_true", help="replace earlier results in --out")
    return p


def settings(args) -> dict:
    """The run's sizes: the options given, else ``--quick``'s or the defaults; budgets parsed and checked."""
    quick = QUICK if args.quick else dict(n=8, steps=5, sample=16, budgets=BUDGETS)
    s = {k: quick[k] if getattr(args, k) is None else getattr(args, k) for k in ("n", "steps", "sample")}
    budgets = quick["budgets"]
    if args.budgets is not None:
        try:
            budgets = [float(x) for x in args.budgets.split(",") if x.strip()]
        except ValueError:
            raise ValueError(
                f"--budgets {args.budgets!r}: expected fractions separated by commas like '0.01,0.1,1'"
            ) from None
    try:
        s["budgets"] = check_budgets(budgets)
    except ValueError as e:
        raise ValueError(f"--{e}") from None
    return s


def stems(task: str) -> tuple[str, str]:
    return f"circuit_{task}", f"circuit_{task}_faithfulness"


def check(args) -> None:
    """Everything ``interp circuit`` can refuse before loading the model: output files and numbers."""
    main, curves = stems(args.task)
    output_files(args.out, main, args.overwrite)
    output_files(args.out, curves, args.overwrite)
    edges = Path(args.out) / f"{main}_edges.json"
    if edges.exists() and not args.overwrite:
        raise FileExistsError(f"{edges} already exists; pass --overwrite or choose another --out")
    check_positive(args, "n", "steps", "sample", "top")
    settings(args)


def sample_edges(scores, k: int, seed: int) -> list[int]:
    """``k`` edge indices: the top half by ``|score|``, the rest drawn at random from the others (seeded)."""
    order = torch.argsort(-scores.scores.detach().float().abs(), stable=True).tolist()
    k = min(k, len(order))
    top = order[: (k + 1) // 2]
    rest = random.Random(seed).sample(order[len(top) :], k - len(top))
    return sorted(top + rest)


def pearson(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Pearson r, or None (null in the JSON) where it is undefined: one edge, or no spread in either."""
    x = torch.stack([a.detach().double().flatten().cpu(), b.detach().double().flatten().cpu()])
    r = float(torch.corrcoef(x)[0, 1]) if x.shape[1] > 1 else math.nan
    return r if math.isfinite(r) else None


def run(args) -> dict:
    s = settings(args)
    out = Path(args.out)
    main, curves_stem = stems(args.task)
    png, js = output_files(out, main, args.overwrite)
    curves_png, _ = output_files(out, curves_stem, args.overwrite)
    t_start = time.perf_counter()
    lm = interp.load(args.model)
    pairs, _ = registry.get(args.task, "patch")(s["n"], seed=args.seed)
    graph = Graph.of(lm)
    methods = {"eap": eap(lm, pairs, graph=graph), "eap-ig": eap(lm, pairs, graph=graph, steps=s["steps"])}

    t0 = time.perf_counter()
    idx = sample_edges(methods["eap-ig"], s["sample"], args.seed)
    exact = exact_edge_effects(lm, pairs, graph, [graph.edges[i] for i in idx])
    check_seconds = time.perf_counter() - t0
    r = {name: pearson(sc.scores[idx], exact) for name, sc in methods.items()}

    found = faithfulness(lm, pairs, list(methods.values()), budgets=s["budgets"], ablation=args.ablation)
    curves = dict(zip(methods, found))
    out.mkdir(parents=True, exist_ok=True)
    best = methods["eap-ig"]
    top = args.top or max(1, len(graph) // 100)
    circuit = circuit_at(best, min(top, len(graph)))
    edges_json = out / f"{main}_edges.json"
    circuit.save(edges_json, overwrite=args.overwrite)
    name = lm.spec.architecture
    viz.save(
        viz.plot_circuit(graph.edges, best.scores, keep=circuit.keep,
                         title=f"{args.task.upper()} circuit, {name}: top {int(circuit.keep.sum())} of "
                         f"{len(graph)} edges by EAP-IG ({s['steps']} steps)"),
        png,
    )  # fmt: skip
    viz.save(
        viz.plot_faithfulness(
            [c.to_dict() | {"method": label(k)} for k, c in curves.items()],
            title=f"{args.task.upper()} faithfulness ({args.ablation} ablation), {name}, {len(pairs)} pairs",
        ),
        curves_png,
    )
    result = {
        "task": args.task,
        "model": name,
        "n_pairs": len(pairs),
        "n_edges": len(graph),
        "n_nodes": len(graph.nodes),
        "eap_seconds": round(methods["eap"].seconds, 2),
        "eap_ig_seconds": round(methods["eap-ig"].seconds, 2),
        "eap_ig_steps": s["steps"],
        "exact_check_edges": len(idx),
        "exact_check_seconds": round(check_seconds, 2),
        "exact_check_r_eap": None if r["eap"] is None else round(r["eap"], 4),
        "exact_check_r_eap_ig": None if r["eap-ig"] is None else round(r["eap-ig"], 4),
        "ablation": args.ablation,
    }
    for key, c in curves.items():
        k = key.replace("-", "_")
        result |= {f"{k}_cpr": round(c.cpr, 4), f"{k}_cmd": round(c.cmd, 4), f"{k}_curve": c.points()}
    result |= {
        "faithfulness_seconds": round(sum(c.seconds for c in curves.values()), 1),
        "seconds": round(time.perf_counter() - t_start, 1),
        "faithfulness": [c.to_dict() for c in curves.values()],
        "exact_check": [
            {
                "edge": graph.edge_name(graph.edges[i]),
                "exact": float(e),
                "eap": float(methods["eap"].scores[i]),
                "eap_ig": float(methods["eap-ig"].scores[i]),
            }
            for i, e in zip(idx, exact.tolist())
        ],  # fmt: skip
        "png": str(png),
        "faithfulness_png": str(curves_png),
        "circuit_json": str(edges_json),
        "json": str(js),
    }
    write_json(js, result, args.overwrite)
    return result


def label(method: str) -> str:
    return {"eap": "EAP", "eap-ig": "EAP-IG"}.get(method, method)
