"""ReFT cost against the physical floor, on the embedded Gemma-3-270M, as ratios measured in one run.

    python bench/bench_reft.py                 # batch 8 x 64 tokens (32 prompt + 32 response), rank 4, layer 9, f1+l1
    python bench/bench_reft.py --reps 3 --new-tokens 32      # more repetitions: steadier on a busy CPU

1. training step (in one process, interleaved, best of --reps): a LoReFT step as ``train_reft`` runs it
   (the stream entering the intervened layer replayed from the prefix cache, so only the layers from there
   up run; logits and loss on the response tokens only; backward down to the intervened layer) over a bare
   forward+backward of the frozen model with logits at every position and backward to the embeddings (what
   a naive ReFT trainer pays): ``train_step_ratio``, aim <= 0.4x. Also the same step through the whole model
   (``train_step_ratio_uncached``) and the unembedding alone at the response columns, part of the floor.
   ``--only train`` skips generation; ``--json`` prints one JSON object.
2. generation (``--only gen`` alone): a trained prompt-only LoReFT over plain ``generate``, per decoded token
   (``prompt_only_per_token_ratio``, aim <= 1.02x) and for the prompt pass (``prompt_pass_ratio``); a decode-time
   LoReFT (``--decode-positions``, default f1+l1+g: it edits every new token) per decoded token
   (``decode_time_per_token_ratio``, aim <= 1.10x). Interleaved; per token the median step, on CPU time.
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


def _reft_step(rlm, rb, opt, cache=None):
    from reft.cache import replaying
    from reft.train import response_loss

    opt.zero_grad(set_to_none=True)
    with replaying(cache, range(len(rb)), rb):  # with a cache: layers below the intervened one are replayed
        loss = response_loss(rlm.logits(rb), rb)  # logits only at the response columns
    loss.backward()
    opt.step()


def _head_step(lm, rb, hidden):
    """The unembedding alone: logits at the response columns from final hidden states, loss, backward to them."""
    from interp.engine import readout
    from reft.train import response_loss

    h = hidden.detach().requires_grad_(True)  # (B, k, d)
    response_loss(readout(lm, h), rb).backward()


def variant(args) -> dict:
    """One training step of one variant in this process: peak RSS growth over the loaded model."""
    lm, rlm, rb = _setup(args)
    base = _rss_mb()
    opt = torch.optim.AdamW(rlm.interventions.parameters(), lr=1e-3, weight_decay=0.0)
    _bare_step(lm, rb) if args.variant == "bare" else _reft_step(rlm, rb, opt)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_growth_mb": peak - base}


def timing(args) -> dict:
    """The training steps in one process, interleaved, best of ``reps`` each (fair under a noisy CPU): bare, ReFT
    through the whole model, ReFT from the prefix cache (filled once, before timing: training fills it once per
    example), and the unembedding alone at the response columns (part of the cached step's floor)."""
    from reft.cache import StreamCache
    from reft.data import Tokenized

    lm, rlm, rb = _setup(args)
    opt = torch.optim.AdamW(rlm.interventions.parameters(), lr=1e-3, weight_decay=0.0)
    rows = [  # the batch's examples, for the cache to collate again
        Tokenized(rb.batch.input_ids[b, :n].tolist(), rb.labels[b, rb.label_mask[b]].tolist())
        for b, n in enumerate(rb.lengths)
    ]
    cache = StreamCache.for_model(rlm, rows)
    cache.fill(range(len(rows)))
    hidden = torch.randn(*rb.pred_at.shape, lm.d_model, dtype=next(lm.hf.parameters()).dtype)
    steps = {
        "bare": lambda: _bare_step(lm, rb),
        "reft": lambda: _reft_step(rlm, rb, opt),
        "cached": lambda: _reft_step(rlm, rb, opt, cache),
        "head": lambda: _head_step(lm, rb, hidden),
    }
    best = {k: float("inf") for k in steps}
    cpu = dict(best)  # this process's CPU time: steadier than wall time when other work shares the cores
    for _ in range(args.reps):
        for name, step in steps.items():
            t, c = time.perf_counter(), time.process_time()
            step()
            best[name] = min(best[name], time.perf_counter() - t)
            cpu[name] = min(cpu[name], time.process_time() - c)
    return {f"{k}_seconds": v for k, v in best.items()} | {f"{k}_cpu_seconds": v for k, v in cpu.items()}


def _clocks():
    return time.perf_counter(), time.process_time()


def generation(args) -> dict:
    """Plain ``generate``, a prompt-only LoReFT (``--positions``) and a decode-time one (``--decode-positions``,
    the same weights), same decoding settings (greedy, ``--new-tokens`` + 1 tokens), interleaved in a rotating
    order, ``--gen-reps`` times each. A pre-hook on the model stamps the start of each forward (the same for all
    three): the prompt pass is the first interval (best of the repetitions), a decoded token one of the later
    ones (the median of all of them, which a burst of load on a shared CPU does not move). Ratios use this
    process's CPU time (one thread: time taken by other processes does not count); wall-clock ratios come too.
    """
    import copy
    import statistics

    import reft
    from interp import Site

    lm, rlm, rb = _setup(args)
    (pl,) = rlm.placements
    site = Site(pl.site.component, pl.site.layer, reft.parse_positions(args.decode_positions))
    rlm_g = reft.attach(lm, {site: copy.deepcopy(pl.intervention)})  # the same "trained" weights, edits every token
    half = args.tokens // 2
    prompts = {"input_ids": rb.batch.input_ids[:, :half], "attention_mask": rb.batch.attention_mask[:, :half]}
    n = args.new_tokens
    models = {"plain": lm, "reft": rlm, "decode": rlm_g}
    stamps: list = []

    def run(model, new):
        stamps.clear()
        reft.generate_ids(model, prompts, max_new_tokens=new, min_new_tokens=new)
        return list(stamps)

    handle = lm.hf.register_forward_pre_hook(lambda mod, args: stamps.append(_clocks()))
    try:
        for m in models.values():  # warm-up
            run(m, 2)
        names = list(models)
        prompt = {(c, k): float("inf") for c in (0, 1) for k in names}
        steps: dict = {(c, k): [] for c in (0, 1) for k in names}
        for rep in range(args.gen_reps):
            for name in names[rep % 3 :] + names[: rep % 3]:
                st = run(models[name], n + 1)  # n + 1 forwards: the prompt pass, then n cached steps
                for c in (0, 1):  # 0: wall, 1: CPU
                    prompt[(c, name)] = min(prompt[(c, name)], st[1][c] - st[0][c])
                    steps[(c, name)] += [b[c] - a[c] for a, b in zip(st[1:], st[2:])]
    finally:
        handle.remove()
    out = {"generation_clock": "process CPU time; *_wall_s: wall clock", "generation_reps": args.gen_reps}
    for c, suffix in ((1, "s"), (0, "wall_s")):
        for name in names:
            out[f"prompt_{name}_{suffix}"] = prompt[(c, name)]
            out[f"per_token_{name}_{suffix}"] = statistics.median(steps[(c, name)])
    out["decode_edit_s"] = _step_edit_seconds(rlm_g, len(rb), lm.d_model)
    out["prompt_only_per_token_ratio"] = out["per_token_reft_s"] / out["per_token_plain_s"]
    out["decode_time_per_token_ratio"] = out["per_token_decode_s"] / out["per_token_plain_s"]
    out["prompt_pass_ratio"] = out["prompt_reft_s"] / out["prompt_plain_s"]
    out["prompt_only_per_token_ratio_wall"] = out["per_token_reft_wall_s"] / out["per_token_plain_wall_s"]
    out["decode_time_per_token_ratio_wall"] = out["per_token_decode_wall_s"] / out["per_token_plain_wall_s"]
    return out


def _step_edit_seconds(rlm, B: int, d: int, reps: int = 500) -> float:
    """CPU seconds of the decode-time edit of one step alone (the new token of each of ``B`` rows), as
    ``generate_ids`` runs it: the noise-free part of ``decode_time_per_token_ratio`` above 1."""
    from torch.nn.utils import parametrize

    from interp.engine import apply_ops

    ops = rlm.step_ops(B)
    h = torch.randn(B, 1, d)
    with torch.no_grad(), parametrize.cached():
        apply_ops(h, list(enumerate(ops)), {})
        t = time.process_time()
        for _ in range(reps):
            apply_ops(h, list(enumerate(ops)), {})
        return (time.process_time() - t) / reps


def _generation_lines(gen: dict) -> str:
    ms = {k: v * 1e3 for k, v in gen.items() if isinstance(v, float)}
    return (
        f"generation  per token (CPU time) plain {ms['per_token_plain_s']:.1f} ms  prompt-only reft "
        f"{ms['per_token_reft_s']:.1f} ms  ratio {gen['prompt_only_per_token_ratio']:.3f}x  (aim <= 1.02x)\n"
        f"            decode-time reft {ms['per_token_decode_s']:.1f} ms  ratio "
        f"{gen['decode_time_per_token_ratio']:.3f}x  (aim <= 1.10x); the edit alone {ms['decode_edit_s']:.2f} ms\n"
        f"            wall: per token plain {ms['per_token_plain_wall_s']:.1f} ms  ratios prompt-only "
        f"{gen['prompt_only_per_token_ratio_wall']:.3f}x  decode-time {gen['decode_time_per_token_ratio_wall']:.3f}x\n"
        f"            prompt pass plain {ms['prompt_plain_s']:.0f} ms  reft {ms['prompt_reft_s']:.0f} ms  "
        f"ratio {gen['prompt_pass_ratio']:.3f}x"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--layer", type=int, default=9)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--positions", default="f1+l1")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--only", choices=("all", "train", "gen"), default="all", help="train or gen: that section alone")
    p.add_argument("--decode-positions", default="f1+l1+g", help="the decode-time LoReFT's positions (generation)")
    p.add_argument("--gen-reps", type=int, default=5, help="repetitions of each generation run")
    p.add_argument("--json", action="store_true", help="print one JSON object of the measured numbers")
    p.add_argument("--variant", choices=("bare", "reft", "timing", "generation"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:
        fn = {"generation": generation, "timing": timing}.get(args.variant, variant)
        print(json.dumps(fn(args)))
        return
    passthrough = [a for a in sys.argv[1:]]
    out = {}
    if args.only == "gen":  # the generation section alone: its JSON object, or its lines
        proc = subprocess.run([sys.executable, __file__, *passthrough, "--variant", "generation"], capture_output=True,
                              text=True)  # fmt: skip
        if proc.returncode != 0:
            sys.exit(f"variant generation failed:\n{proc.stderr[-3000:]}")
        gen = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(gen) if args.json else _generation_lines(gen))
        return
    for v in ("timing", "bare", "reft") + (("generation",) if args.only == "all" else ()):
        proc = subprocess.run([sys.executable, __file__, *passthrough, "--variant", v], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"variant {v} failed:\n{proc.stderr[-3000:]}")
        out[v] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{v}: {out[v]}", file=sys.stderr)
    tim, bare, rft, gen = out["timing"], out["bare"], out["reft"], out.get("generation")
    train = {  # the cached step is what train_reft runs (TrainConfig.cache_prefix); the uncached one for comparison
        "train_step_ratio": tim["cached_seconds"] / tim["bare_seconds"],
        "train_step_ratio_uncached": tim["reft_seconds"] / tim["bare_seconds"],
        "train_step_head_floor_ratio": tim["head_seconds"] / tim["bare_seconds"],  # unembedding at response columns
        "train_step_ratio_cpu": tim["cached_cpu_seconds"] / tim["bare_cpu_seconds"],  # the same, in CPU time
        "train_step_ratio_uncached_cpu": tim["reft_cpu_seconds"] / tim["bare_cpu_seconds"],
        "train_step_head_floor_ratio_cpu": tim["head_cpu_seconds"] / tim["bare_cpu_seconds"],
        **tim,
    }
    if args.json:
        memory = {"peak_growth_bare_mb": bare["peak_growth_mb"], "peak_growth_reft_mb": rft["peak_growth_mb"]}
        print(json.dumps({**train, **memory, **(gen or {})}))
        return
    print(
        f"setup: Gemma-3-270M, batch {args.batch} x {args.tokens} tokens (half prompt, half response), "
        f"LoReFT rank {args.rank} at resid_post layer {args.layer}, positions {args.positions}, CPU "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"train step  bare {tim['bare_seconds']:.2f} s  reft cached {tim['cached_seconds']:.2f} s  "
        f"ratio {train['train_step_ratio']:.3f}x  (aim <= 0.4x)"
    )
    print(
        f"            uncached {tim['reft_seconds']:.2f} s  ratio {train['train_step_ratio_uncached']:.3f}x;  "
        f"unembedding alone at the response columns {tim['head_seconds']:.2f} s  "
        f"ratio {train['train_step_head_floor_ratio']:.3f}x"
    )
    if gen is None:  # --only train
        print(
            f"peak memory growth  bare {bare['peak_growth_mb']:.0f} MB  reft {rft['peak_growth_mb']:.0f} MB  "
            f"ratio {rft['peak_growth_mb'] / max(bare['peak_growth_mb'], 1e-9):.3f}x"
        )
        return
    print(_generation_lines(gen))
    print(
        f"peak memory growth  bare {bare['peak_growth_mb']:.0f} MB  reft {rft['peak_growth_mb']:.0f} MB  "
        f"ratio {rft['peak_growth_mb'] / max(bare['peak_growth_mb'], 1e-9):.3f}x"
    )


if __name__ == "__main__":
    main()
