"""Benchmark DII and collection on Gemma-3-270M against plain full forwards, as ratios measured in one run.

    python bench/bench_dii.py                 # all of it (includes a fresh GGUF conversion, ~1-2 min)
    python bench/bench_dii.py --skip-convert  # only the cached load

Prints, for 32 IOI base/source pairs:
  (a) DII (interchange at one site) / two plain full forwards (base + source, logits at every position),
      which is what a naive implementation pays;
  (b) collect at a layer-6 site / one plain full forward;
plus peak extra memory of each, the max |difference| from the unoptimised reference, and load times.
Timings interleave the variants and keep the median of several repeats, so background load hits them alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import psutil
import torch

import interp
from interp import Site, collect, encode, interchange, last
from interp.engine import options
from interp.tasks import ioi_pairs


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every millisecond."""

    def __enter__(self):
        self.proc = psutil.Process()
        self.start = self.peak = self.proc.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()

    @property
    def mb(self):
        return (self.peak - self.start) / 2**20


def timed(fns: dict, repeats: int) -> dict:
    """Median seconds per function, calling them round-robin so drift hits all alike."""
    times = {k: [] for k in fns}
    for f in fns.values():
        f()  # warm-up
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def peak_mb(f) -> float:
    with PeakRSS() as m:
        f()
    return m.mb


def load_times(skip_convert: bool) -> dict:
    out = {}
    code = "import time,interp; t=time.perf_counter(); interp.load(); print(time.perf_counter()-t)"
    if not skip_convert:
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "INTERP_CACHE": tmp}
            r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            out["first_load_s"] = float(r.stdout.strip().splitlines()[-1])
    interp.load()  # make sure the default cache exists
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    out["cached_load_s"] = float(r.stdout.strip().splitlines()[-1])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--layer", type=int, default=15, help="DII site: resid_post of this layer, last token")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-convert", action="store_true", help="don't time a fresh GGUF conversion")
    args = ap.parse_args()

    loads = load_times(args.skip_convert)
    lm = interp.load()
    pairs = ioi_pairs(args.pairs)
    base, source = encode(lm, pairs.base), encode(lm, pairs.source)
    site = Site("resid_post", args.layer, last())
    site6 = Site("resid_post", 6, last())

    def full(batch):
        return lm.hf(**batch.forward_kwargs()).logits  # plain HF forward: logits at every position

    with torch.no_grad():
        fns = {
            "two_full_forwards": lambda: (full(base), full(source)),
            "dii": lambda: interchange(lm, base, source, at=site),
            "one_full_forward": lambda: full(base),
            "collect_layer6": lambda: collect(lm, base, at=site6),
        }
        t = timed(fns, args.repeats)
        mem = {k: peak_mb(f) for k, f in fns.items()}
        with options(backend="hooks", full=True):  # nothing skipped
            reference = interchange(lm, base, source, at=site).logits
        diff = (interchange(lm, base, source, at=site).logits - reference).abs().max()

    T = base.input_ids.shape[1]
    print(f"Gemma-3-270M, {args.pairs} IOI pairs x {T} tokens, CPU threads={torch.get_num_threads()}")
    for k, v in loads.items():
        print(f"  {k:<28} {v:8.2f} s")
    for k in fns:
        print(f"  {k:<28} {t[k] * 1000:8.1f} ms   peak +{mem[k]:7.1f} MB")
    print(
        f"(a) DII at layer {args.layer} / two full forwards:   {t['dii'] / t['two_full_forwards']:.3f}x  (aim <= 0.6)"
    )
    print(
        f"(b) collect at layer 6 / one full forward:  {t['collect_layer6'] / t['one_full_forward']:.3f}x  (aim <= 0.5)"
    )
    print(
        f"    peak memory: DII {mem['dii']:.0f} MB vs two forwards {mem['two_full_forwards']:.0f} MB; "
        f"collect {mem['collect_layer6']:.0f} MB vs forward {mem['one_full_forward']:.0f} MB"
    )
    print(f"    max |DII - unoptimised reference| = {diff.item():.2e}")


if __name__ == "__main__":
    main()
