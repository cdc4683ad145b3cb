"""Serving trained edits in vLLM: throughput with and without ReFTs, as ratios measured in one run (Gemma-3-270M).

    .venv-serve/bin/python bench/bench_serve.py                  # 16 requests x (32 prompt + 32 new tokens), 3 reps
    .venv-serve/bin/python bench/bench_serve.py --batch 32 --new-tokens 64 --json

Needs the serving environment (``make serve-venv``); runs on one thread. One :class:`reft.serve.Server` (float32,
eager, prefix caching off so that every repetition prefills again) serves the same batch of random-token prompts,
greedy, every request generating exactly ``--new-tokens`` (vLLM's ``min_tokens`` and ``reft.generate``'s
``min_new_tokens`` both mask end-of-sequence until then), in these variants:

1. ``plain``: vLLM with the editor's hooks taken off (:meth:`VllmEditor.remove`): vLLM as it ships;
2. ``unedited``: the hooks on, no request naming an edit (what serving edits costs requests that use none);
3. ``prompt_only``: every request with one rank-4 LoReFT at ``first(1)+last(1)`` (edits prefill only), aim >= 0.95x;
4. ``decode_time``: every request with a LoReFT at ``first(1)+last(1)+generated()`` (every new token), aim >= 0.85x;
5. ``per_request``: a different prompt-only LoReFT on every request of the batch (``--batch`` of them);

and the same batch through :func:`reft.generate_ids` on the Hugging Face model, unedited, with the prompt-only
LoReFT and with a different one per request. Throughput is generated tokens per second of wall time (the median of
``--reps`` interleaved repetitions after a warm-up, so that background load hits every variant alike), and each
ratio is over ``plain`` of the same run. Greedy tokens of vLLM and of reft.generate are compared row by row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
from bench_dii import timed

import interp
import reft
from interp import Site, first, generated, last
from reft.serve import Server


def _randomized(rlm, seed: int, scale: float = 0.1):
    """A "trained" intervention: nonzero W and b, drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in rlm.interventions.named_parameters():
            if "original" not in name:
                p.add_(scale * torch.randn(p.shape, generator=g))
    return rlm


def _loreft(lm, layer: int, rank: int, pos, seed: int):
    return _randomized(reft.attach(lm, {Site("resid_post", layer, pos): reft.LoReFT(lm.d_model, rank)}), seed)


def setup(args):
    lm = interp.load()
    g = torch.Generator().manual_seed(0)
    prompts = [[2] + torch.randint(1000, 20000, (args.prompt_tokens - 1,), generator=g).tolist()
               for _ in range(args.batch)]  # fmt: skip
    edits = {
        "prompt_only": _loreft(lm, args.layer, args.rank, first(1) + last(1), 1),
        "decode_time": _loreft(lm, args.layer, args.rank, first(1) + last(1) + generated(), 2),
        **{f"r{i}": _loreft(lm, args.layer, args.rank, first(1) + last(1), 100 + i) for i in range(args.batch)},
    }
    server = Server(None, edits, lm=lm, enable_prefix_caching=False)
    return lm, prompts, edits, server


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16, help="requests in the batch")
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--layer", type=int, default=9)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--no-hf", action="store_true", help="skip reft.generate on the Hugging Face model")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    # One thread, as the other benchmarks: vLLM's CPU worker (this process) pins its threads to one core, and more
    # threads on that core oversubscribe it (reft.generate ran 10x slower in this process with two)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    lm, prompts, edits, server = setup(args)
    B, N = args.batch, args.new_tokens
    # min_tokens masks EOS as HF's min_new_tokens does; ignore_eos alone lets vLLM pick an EOS that HF has masked
    sampling = {"max_tokens": N, "min_tokens": N, "temperature": 0.0, "ignore_eos": True}
    names = {
        "plain": [None] * B,
        "unedited": [None] * B,
        "prompt_only": ["prompt_only"] * B,
        "decode_time": ["decode_time"] * B,
        "per_request": [f"r{i}" for i in range(B)],
    }
    outs = {}

    def served(variant):
        def run():
            if variant == "plain":
                server.editor.remove()  # vLLM as it ships: no hook at all
            try:
                outs[variant] = server.generate(prompts, names[variant], sampling)
            finally:
                if variant == "plain":
                    server.editor.install()

        return run

    ids = torch.tensor(prompts)
    hf_serve = {
        "hf_unedited": None,
        "hf_prompt_only": [edits["prompt_only"]] * B,
        "hf_per_request": [edits[f"r{i}"] for i in range(B)],
    }
    hf_out = {}

    def hf(variant):
        def run():
            hf_out[variant] = reft.generate_ids(lm, ids, serve=hf_serve[variant], max_new_tokens=N, min_new_tokens=N)

        return run

    fns = {v: served(v) for v in names}
    if not args.no_hf:
        fns.update({v: hf(v) for v in hf_serve})
    seconds = timed(fns, args.reps)
    tps = {v: B * N / s for v, s in seconds.items()}
    result = {
        "batch": B, "prompt_tokens": args.prompt_tokens, "new_tokens": N, "reps": args.reps, "layer": args.layer,
        "rank": args.rank, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "tokens_per_s": {v: round(t, 1) for v, t in tps.items()},
        "ratio_over_plain": {v: round(t / tps["plain"], 3) for v, t in tps.items()},
    }  # fmt: skip
    for variant, hf_variant in (("plain", "hf_unedited"), ("prompt_only", "hf_prompt_only"),
                                ("per_request", "hf_per_request")):  # fmt: skip
        if hf_variant in hf_out:
            new = hf_out[hf_variant].new_ids
            diverge = {i: _first_difference(o.token_ids, new[i].tolist()) for i, o in enumerate(outs[variant])}
            diverge = {i: d for i, d in diverge.items() if d is not None}
            where = "".join(f"; row {i} from new token {d}" for i, d in diverge.items())
            result[f"tokens_equal_{variant}_vs_hf"] = f"{B - len(diverge)}/{B}{where}"
    print_result(result, args.json)
    return result


def _first_difference(a: list[int], b: list[int]) -> int | None:
    return next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))


def print_result(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    r = result
    print(
        f"batch {r['batch']} x ({r['prompt_tokens']} prompt + {r['new_tokens']} new tokens), LoReFT rank {r['rank']} "
        f"at layer {r['layer']}, median of {r['reps']} ({r['machine']})"
    )
    aims = {"prompt_only": ">= 0.95", "decode_time": ">= 0.85"}
    for v, t in result["tokens_per_s"].items():
        aim = f"  (aim {aims[v]})" if v in aims else ""
        print(f"{v:<16} {t:>9.1f} tokens/s  {result['ratio_over_plain'][v]:>6.3f}x plain{aim}")
    for k, v in result.items():
        if k.startswith("tokens_equal"):
            print(f"{k}: {v}")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"wall {time.perf_counter() - started:.0f} s (including loading)")
