"""ReFT cost against the physical floor, on the embedded Gemma-3-270M, as ratios measured in one run.

    python bench/bench_reft.py                 # batch 8 x 64 tokens (32 prompt + 32 response), rank 4, layer 9, f1+l1
    python bench/bench_reft.py --reps 3 --new-tokens 32      # more repetitions: steadier on a busy CPU

1. training step (both in one process, interleaved, best of --reps): a LoReFT step (logits and loss on
   the response tokens only, backward down to the intervened layer) over a bare forward+backward of the
   frozen model with logits at every position and backward to the embeddings (what a naive ReFT trainer
   pays). Aim: <= 0.8x.
2. generation: with a trained intervention over plain ``generate``, per decoded token (aim <= 1.02x) and
   for the prompt pass.
3. peak memory: each training variant runs in its own process; the growth of peak RSS over the RSS after
   loading the model, ReFT over bare.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _setup(args):
    import interp
    import reft
    from interp import Site
    from reft.data import Tokenized, collate

    torch.manual_seed(0)
    lm = interp.load()
    g = torch.Generator().manual_seed(0)
    half = args.tokens // 2
    rows = []
    for _ in range(args.batch):
        body = torch.randint(1000, 20000, (args.tokens,), generator=g).tolist()
        rows.append(Tokenized([2] + body[: half - 1], body[half - 1 : args.tokens - 1]))  # BOS + prompt, response
    rb = collate(lm, rows)
    site = Site("resid_post", args.layer, reft.parse_positions(args.positions))
    rlm = reft.attach(lm, {site: reft.LoReFT(lm.d_model, args.rank)})
    with torch.no_grad():
        for name, p in rlm.interventions.named_parameters():  # a "trained" intervention: nonzero W, b
            if "original" not in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return lm, rlm, rb


def _bare_step(lm, rb):
    """Frozen model, logits at every position, backward to the embeddings (full depth)."""
    emb = lm.hf.get_input_embeddings()
    handle = emb.register_forward_hook(lambda m, i, o: o.detach().requires_grad_(True))
    try:
        logits = lm.hf(**rb.batch.forward_kwargs(), use_cache=False).logits  # (B, T, V)
        rows = torch.arange(len(rb))[:, None]
        sel = logits[rows, rb.pred_at]  # (B, k, V)
        loss = torch.nn.functional.cross_entropy(sel[rb.label_mask], rb.labels[rb.label_mask])
        loss.backward()
    finally:
        handle.remove()


def _reft_step(rlm, rb, opt):
    from reft.train import response_loss

    opt.zero_grad(set_to_none=True)
    loss = response_loss(rlm.logits(rb), rb)  # logits only at the response columns
    loss.backward()
    opt.step()


def variant(args) -> dict:
    """One training step of one variant in this process: peak RSS growth over the loaded model."""
    lm, rlm, rb = _setup(args)
    base = _rss_mb()
    opt = torch.optim.AdamW(rlm.interventions.parameters(), lr=1e-3, weight_decay=0.0)
    _bare_step(lm, rb) if args.variant == "bare" else _reft_step(rlm, rb, opt)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_growth_mb": peak - base}


def timing(args) -> dict:
    """Both training steps in one process, interleaved, best of ``reps`` each (fair under a noisy CPU)."""
    lm, rlm, rb = _setup(args)
    opt = torch.optim.AdamW(rlm.interventions.parameters(), lr=1e-3, weight_decay=0.0)
    steps = {"bare": lambda: _bare_step(lm, rb), "reft": lambda: _reft_step(rlm, rb, opt)}
    best = {k: float("inf") for k in steps}
    for _ in range(args.reps):
        for name, step in steps.items():
            t = time.perf_counter()
            step()
            best[name] = min(best[name], time.perf_counter() - t)
    return {f"{k}_seconds": v for k, v in best.items()}


def _gen_time(fn, reps):
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def generation(args) -> dict:
    import reft

    lm, rlm, rb = _setup(args)
    half = args.tokens // 2
    prompts = {"input_ids": rb.batch.input_ids[:, :half], "attention_mask": rb.batch.attention_mask[:, :half]}
    n = args.new_tokens

    def run(model, new):
        reft.generate_ids(model, prompts, max_new_tokens=new, min_new_tokens=new)

    run(lm, 2), run(rlm, 2)  # warm-up
    t = {}
    for _ in range(args.reps):  # interleave, keep the best of each, to be fair to both under a noisy CPU
        for name, model in (("plain", lm), ("reft", rlm)):
            for new in (1, n + 1):
                key = (name, new)
                t[key] = min(t.get(key, float("inf")), _gen_time(lambda m=model, k=new: run(m, k), 1))
    per_token = {name: (t[(name, n + 1)] - t[(name, 1)]) / n for name in ("plain", "reft")}
    return {
        "prompt_plain_s": t[("plain", 1)],
        "prompt_reft_s": t[("reft", 1)],
        "per_token_plain_s": per_token["plain"],
        "per_token_reft_s": per_token["reft"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--layer", type=int, default=9)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--positions", default="f1+l1")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--variant", choices=("bare", "reft", "timing", "generation"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:
        fn = {"generation": generation, "timing": timing}.get(args.variant, variant)
        print(json.dumps(fn(args)))
        return
    passthrough = [a for a in sys.argv[1:]]
    out = {}
    for v in ("timing", "bare", "reft", "generation"):
        proc = subprocess.run([sys.executable, __file__, *passthrough, "--variant", v], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"variant {v} failed:\n{proc.stderr[-3000:]}")
        out[v] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{v}: {out[v]}", file=sys.stderr)
    tim, bare, rft, gen = out["timing"], out["bare"], out["reft"], out["generation"]
    print(
        f"setup: Gemma-3-270M, batch {args.batch} x {args.tokens} tokens (half prompt, half response), "
        f"LoReFT rank {args.rank} at resid_post layer {args.layer}, positions {args.positions}, CPU "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"train step  bare {tim['bare_seconds']:.2f} s  reft {tim['reft_seconds']:.2f} s  "
        f"ratio {tim['reft_seconds'] / tim['bare_seconds']:.3f}x  (aim <= 0.8x)"
    )
    print(
        f"generation  per token plain {gen['per_token_plain_s'] * 1e3:.1f} ms  reft "
        f"{gen['per_token_reft_s'] * 1e3:.1f} ms  ratio {gen['per_token_reft_s'] / gen['per_token_plain_s']:.3f}x"
        "  (aim <= 1.02x)"
    )
    print(
        f"            prompt plain {gen['prompt_plain_s'] * 1e3:.0f} ms  reft {gen['prompt_reft_s'] * 1e3:.0f} ms  "
        f"ratio {gen['prompt_reft_s'] / gen['prompt_plain_s']:.3f}x"
    )
    print(
        f"peak memory growth  bare {bare['peak_growth_mb']:.0f} MB  reft {rft['peak_growth_mb']:.0f} MB  "
        f"ratio {rft['peak_growth_mb'] / max(bare['peak_growth_mb'], 1e-9):.3f}x"
    )


if __name__ == "__main__":
    main()
