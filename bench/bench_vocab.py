"""Benchmark restricted vocabularies on Gemma-3-270M: ``interp.intervene`` reading 4 label words vs the whole
262,144-word vocabulary, as a ratio measured in one run.

    python bench/bench_vocab.py                # 32 IOI pairs, one batch, layer 6 at the last token
    python bench/bench_vocab.py --n 64 --repeats 9

Prints the median seconds of each and of the unembedding alone (hidden states (n, 1, d) -> logits), their
ratios, and the largest |difference| between the 4 columns of each. Sources are collected once, outside the
timing; the variants are interleaved so background load hits them alike.
"""

from __future__ import annotations

import argparse

import torch
from bench_dii import timed

import interp
from interp import Site, collect, intervene, last
from interp.engine import readout
from interp.tasks import ioi_pairs


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=32, help="IOI pairs in the batch")
    ap.add_argument("--layer", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    lm = interp.load()
    pairs = ioi_pairs(args.n, seed=0)
    site = Site("resid_post", args.layer, last())
    src = collect(lm, pairs.source, at=site)
    words = sorted(set(pairs.base_answer) | set(pairs.source_answer))[:2] + [" the", " a"]
    ids = interp.inputs.token_ids(lm, words)
    with torch.no_grad():
        full = lambda: intervene(lm, pairs.base, at=site, sources=[src])  # noqa: E731
        few = lambda: intervene(lm, pairs.base, at=site, sources=[src], vocab=ids)  # noqa: E731
        hidden = torch.randn(args.n, 1, lm.d_model)  # the unembedding alone, at one position per row
        t = timed(
            {
                "full": full,
                "vocab4": few,
                "unembed_full": lambda: readout(lm, hidden),
                "unembed4": lambda: readout(lm, hidden, ids),
            },
            args.repeats,
        )
        err = (full().logits[:, ids] - few().logits).abs().max().item()
    out = {
        "pairs": args.n,
        "threads": torch.get_num_threads(),
        "full_vocab_s": round(t["full"], 4),
        "vocab4_s": round(t["vocab4"], 4),
        "full_over_vocab4": round(t["full"] / t["vocab4"], 2),
        "unembed_full_s": round(t["unembed_full"], 4),
        "unembed4_s": round(t["unembed4"], 5),
        "max_abs_diff": err,
    }
    print(out)
    return out


if __name__ == "__main__":
    main()
