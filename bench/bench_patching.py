"""Benchmark the demo's patching grid on Gemma-3-270M: the cached exact path against today's and a naive one.

    python bench/bench_patching.py            # the demo grid: ioi_pairs(16), all 18 layers x 15 IOI positions
    python bench/bench_patching.py --json     # one JSON object instead of the table

Prints, for the same grid (resid_post, whole-vector activation patching):
  exact_over_today: patch_grid(method="cached") wall time / patch_grid(method="full") (a whole base forward per
      cell, logits at the last token only);
  exact_over_naive: the cached grid / what a plain implementation pays: two full forwards per cell (source and
      base, logits at every position); timed on a few cells and extrapolated to the grid;
  atp_over_today: interp.attribution_patch on the same grid / today's path (null when it is not available);
  max_abs_diff: the largest |effect difference| between the cached and the full grid.
Each grid runs once (the full one takes minutes); the naive cell cost is the median of several repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import interp
from interp import encode
from interp.patching import patch_grid
from interp.tasks import IOI_POSITIONS, ioi_pairs


def seconds(f) -> tuple[float, object]:
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=16, help="IOI pairs (the demo's `interp patch --n`: 16)")
    ap.add_argument("--naive-cells", type=int, default=5, help="cells timed for the naive path (then extrapolated)")
    ap.add_argument("--component", default="resid_post")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    lm = interp.load()
    pairs = ioi_pairs(args.pairs)
    layers, positions = list(range(lm.n_layers)), IOI_POSITIONS
    n_cells = len(layers) * len(positions)
    kw = dict(layers=layers, positions=positions, component=args.component, progress=False)
    base, source = encode(lm, pairs.base), encode(lm, pairs.source)

    t_cached, cached = seconds(lambda: patch_grid(lm, pairs, **kw))
    t_today, today = seconds(lambda: patch_grid(lm, pairs, method="full", **kw))
    with torch.no_grad():  # naive: two plain HF forwards per cell, logits at every position
        full = lambda b: lm.hf(**b.forward_kwargs()).logits  # noqa: E731
        full(base)
        cell = [seconds(lambda: (full(source), full(base)))[0] for _ in range(args.naive_cells)]
    t_naive = statistics.median(cell) * n_cells
    t_atp = None
    try:
        from interp.attribution import attribution_patch

        atp = lambda: attribution_patch(lm, pairs, layers=layers, positions=positions, component=args.component)  # noqa: E731
        t_atp, _ = seconds(atp)
    except (ImportError, TypeError) as e:  # not built yet, or another signature
        atp_error = f"{type(e).__name__}: {e}"
    else:
        atp_error = None
    diff = (cached.effect - today.effect).abs().max().item()

    result = dict(
        model=lm.spec.architecture,
        pairs=args.pairs,
        tokens=int(base.input_ids.shape[1]),
        cells=n_cells,
        component=args.component,
        threads=torch.get_num_threads(),
        method=cached.meta["method"],
        cached_s=t_cached,
        today_s=t_today,
        naive_s=t_naive,
        naive_extrapolated_from_cells=args.naive_cells,
        atp_s=t_atp,
        exact_over_today=t_cached / t_today,
        exact_over_naive=t_cached / t_naive,
        atp_over_today=None if t_atp is None else t_atp / t_today,
        max_abs_diff=diff,
    )
    if atp_error:
        result["atp_error"] = atp_error
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{result['model']}, {args.pairs} IOI pairs x {result['tokens']} tokens, {len(layers)} layers x "
        f"{len(positions)} positions = {n_cells} cells ({args.component}), CPU threads={result['threads']}"
    )
    print(f"  cached grid (method={result['method']}) {t_cached:8.1f} s  ({t_cached / n_cells * 1000:6.1f} ms/cell)")
    print(f"  today's grid (method=full)    {t_today:8.1f} s  ({t_today / n_cells * 1000:6.1f} ms/cell)")
    print(f"  naive grid (2 full forwards)  {t_naive:8.1f} s  (extrapolated from {args.naive_cells} cells)")
    if t_atp is not None:
        print(f"  attribution_patch (AtP)       {t_atp:8.1f} s")
    print(f"exact (cached) / today:  {result['exact_over_today']:.3f}x")
    print(f"exact (cached) / naive:  {result['exact_over_naive']:.3f}x")
    if t_atp is not None:
        print(f"AtP / today:             {result['atp_over_today']:.3f}x")
    print(f"max |cached - full| over effects = {diff:.2e}")


if __name__ == "__main__":
    main()
