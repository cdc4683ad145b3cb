"""The frozen model's own forward: ``interp.load`` freezes every parameter; its calls must stay on the fast path.

    python bench/bench_frozen.py            # table
    python bench/bench_frozen.py --json     # one JSON object

Times, interleaved over repeats (median), on Gemma-3-270M:
  forward: ``lm.hf(**batch, logits_to_keep=1)`` on 32 IOI prompts, frozen (as loaded) over the same model with
      ``requires_grad`` switched back on (the path torch takes for trainable weights);
  generate: ``lm.hf.generate`` (8 prompts, 16 new tokens, greedy), frozen over unfrozen.
Both ratios should be about 1.0: a frozen unembedding fed a non-contiguous (B, 1, d) slice once took a batched
matmul path about 2x slower (issue 13, item 6); :class:`interp.LM` feeds it a contiguous input. Also prints the
largest |logit difference| between the two (0 up to float rounding).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch

import interp
from interp import encode
from interp.tasks import ioi_pairs


@contextlib.contextmanager
def unfrozen(model):
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(False)


def timed(f) -> tuple[float, object]:
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    lm = interp.load()
    batch = encode(lm, ioi_pairs(32).base)
    prompts = encode(lm, ioi_pairs(8).base)

    def forward():
        with torch.no_grad():
            return lm.hf(**batch.forward_kwargs(), logits_to_keep=1).logits

    def generate():
        with torch.no_grad():
            return lm.hf.generate(
                input_ids=prompts.input_ids,
                attention_mask=prompts.attention_mask,
                max_new_tokens=16,
                min_new_tokens=16,
                do_sample=False,
                pad_token_id=lm.tokenizer.pad_token_id,
            )

    times = {k: [] for k in ("forward_frozen", "forward_unfrozen", "generate_frozen", "generate_unfrozen")}
    forward(), generate()  # warm up
    for _ in range(args.reps):  # interleaved
        t, frozen_logits = timed(forward)
        times["forward_frozen"].append(t)
        with unfrozen(lm.hf):
            t, logits = timed(forward)
        times["forward_unfrozen"].append(t)
        times["generate_frozen"].append(timed(generate)[0])
        with unfrozen(lm.hf):
            times["generate_unfrozen"].append(timed(generate)[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    result = dict(
        threads=torch.get_num_threads(),
        **{f"{k}_s": v for k, v in med.items()},
        forward_frozen_over_unfrozen=med["forward_frozen"] / med["forward_unfrozen"],
        generate_frozen_over_unfrozen=med["generate_frozen"] / med["generate_unfrozen"],
        max_abs_logit_diff=(frozen_logits - logits).abs().max().item(),
    )
    if args.json:
        print(json.dumps(result))
        return
    print(f"Gemma-3-270M, CPU threads={result['threads']}, median of {args.reps} interleaved repeats")
    print(
        f"  forward, 32 IOI prompts, logits_to_keep=1: frozen {med['forward_frozen']:.2f} s, unfrozen "
        f"{med['forward_unfrozen']:.2f} s -> {result['forward_frozen_over_unfrozen']:.3f}x"
    )
    print(
        f"  generate, 8 prompts x 16 tokens:          frozen {med['generate_frozen']:.2f} s, unfrozen "
        f"{med['generate_unfrozen']:.2f} s -> {result['generate_frozen_over_unfrozen']:.3f}x"
    )
    print(f"max |frozen - unfrozen| logits = {result['max_abs_logit_diff']:.2e}")


if __name__ == "__main__":
    main()
