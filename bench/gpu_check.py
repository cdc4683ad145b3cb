"""GPU check: the behaviour checks and the three benches on CUDA, in float32 and bf16, with ratios and a JSON summary.

    python bench/gpu_check.py                        # everything on cuda:0, float32 then bfloat16 (~10 min on one GPU)
    python bench/gpu_check.py --quick                # fewer pairs and steps, benches with fewer repeats
    python bench/gpu_check.py --skip-benches --json  # behaviour checks only, one JSON object on stdout
    python bench/gpu_check.py --device cpu --dry     # the script's own logic on a tiny random Gemma-3 (seconds)

Checks (each in every dtype; the model is the embedded Gemma-3-270M, loaded with ``interp.load(device=...,
dtype=...)``):

* ``ioi_flip``: 32 IOI pairs; the clean run solves them, full-rank interchange at layer 16's last token flips
  the answer to the source name (accuracy > 0.9, logit difference < 0), and ``patch_grid`` finds the name-mover
  hand-off (layer 3: at the IO name; layer 16: at the last token), as in tests/test_gemma_dii.py.
* ``das_gender``: rank-1 DAS at layer 14's last token on the gender task (README: IIA 1.00), IIA > 0.9.
* ``reft_overfit``: LoReFT rank 4 at layer 9 (first(1)+last(1)) overfits four examples: loss drops tenfold;
  its parameters stay float32 on a bf16 model.

Benches: bench/bench_dii.py, bench_das.py (``--json``) and bench_reft.py run as subprocesses with the model
moved to the device and dtype (a ``sitecustomize`` on ``PYTHONPATH`` wraps ``interp.load``, and makes
``time.perf_counter`` synchronise CUDA first, so the benches' timers measure finished GPU work). Their ratios
are parsed from the printed lines. The summary prints, per dtype, each check's numbers and seconds, each bench's
ratios, and bf16 / float32 time ratios.

With no CUDA device the script exits with status 2 and says so (unless ``--device cpu``). ``--dry`` runs the
same code on a tiny random Gemma-3 with the embedded model's tokenizer: the thresholds are reported, not judged,
and the benches are only started with ``--help``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
BENCHES = {
    "bench_dii": ["--skip-convert"],
    "bench_das": ["--json"],
    "bench_reft": [],
}
QUICK = {
    "bench_dii": ["--repeats", "3", "--pairs", "16"],
    "bench_das": ["--repeats", "2"],
    "bench_reft": ["--reps", "1"],
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# Imported by every Python process the benches start (PYTHONPATH): interp.load() puts the model where asked,
# and the benches' timers wait for CUDA.
SITECUSTOMIZE = """
import os
if os.environ.get("INTERP_GPU_CHECK_DEVICE"):
    import functools, time
    import torch
    import interp, interp.models
    _device, _dtype = os.environ["INTERP_GPU_CHECK_DEVICE"], getattr(torch, os.environ["INTERP_GPU_CHECK_DTYPE"])
    _load = interp.models.load

    @functools.wraps(_load)
    def load(name_or_path=None, **kw):
        kw.setdefault("dtype", _dtype)
        if "device_map" not in kw:
            kw.setdefault("device", _device)
        return _load(name_or_path, **kw)

    interp.models.load = interp.load = load
    if _device.startswith("cuda"):
        _clock = time.perf_counter

        def perf_counter():
            torch.cuda.synchronize()
            return _clock()

        time.perf_counter = perf_counter
"""


def no_cuda_message(device: str) -> str:
    """Why the check cannot run here, and what to do instead."""
    built = torch.version.cuda or "none (a CPU-only build)"
    return (
        f"gpu_check: no CUDA device for --device {device}: torch.cuda.is_available() is False (torch "
        f"{torch.__version__}, CUDA {built}). Run it on a machine with an NVIDIA GPU and a CUDA build of torch, or "
        "use --device cpu --dry to exercise the script's own logic on a tiny model."
    )


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(device: str, fn):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t


# ---- the model -------------------------------------------------------------------------------------------------


def load_model(device: str, dtype: torch.dtype, dry: bool):
    import interp

    if not dry:
        return interp.load(device=device, dtype=dtype)
    import transformers as tf
    from transformers import AutoTokenizer

    from interp.models import DEFAULT_MODEL, cache_dir

    path = cache_dir() / DEFAULT_MODEL
    if not (path / "tokenizer.json").exists():
        path = interp.models.embedded_model_path()  # converts the embedded model once (about a minute)
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    cfg = tf.Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=18,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=8, sliding_window=4,
                              layer_types=["sliding_attention", "full_attention"] * 9)  # fmt: skip
    return interp.LM(tf.Gemma3ForCausalLM(cfg).eval().to(device=device, dtype=dtype), tok)


# ---- behaviour checks ------------------------------------------------------------------------------------------


def ioi_flip(lm, quick: bool) -> dict:
    from interp import Site, interchange, last, run
    from interp.patching import patch_grid
    from interp.tasks import IOI_POSITIONS, ioi_pairs

    pairs = ioi_pairs(16 if quick else 32, seed=0)
    clean = run(lm, pairs.base)
    out = interchange(lm, pairs.base, pairs.source, at=Site("resid_post", 16, last()))
    positions = {k: IOI_POSITIONS[k] for k in ("IO", "S2", "end")}
    grid = patch_grid(lm, pairs[:8], layers=[3, 16], positions=positions, progress=False)
    effect = dict(zip(grid.positions, grid.effect.T.tolist()))
    res = {
        "clean_accuracy": clean.accuracy(pairs.base_answer),
        "flipped_accuracy": out.accuracy(pairs.source_answer),
        "flipped_logit_diff": float(out.logit_diff(pairs.base_answer, pairs.source_answer).float().mean()),
        "grid_end": effect["end"],
        "grid_IO": effect["IO"],
    }
    res["ok"] = (
        res["clean_accuracy"] > 0.9
        and res["flipped_accuracy"] > 0.9
        and res["flipped_logit_diff"] < 0
        and effect["end"][1] > 0.8
        and abs(effect["end"][0]) < 0.2
        and effect["IO"][0] > 0.8
        and abs(effect["IO"][1]) < 0.2
    )
    return res


def das_gender(lm, quick: bool) -> dict:
    from interp import Site, last
    from interp.das import fit_das
    from interp.tasks.gender import gender_pairs

    train, test = gender_pairs(lm, n=128, seed=0).split(0.75, seed=0)
    das = fit_das(lm, train, at=Site("resid_post", 14, last()), rank=1, test=test, steps=20 if quick else 40,
                  lr=2e-2, progress=False)  # fmt: skip
    res = {"iia_test": das.iia_test, "iia_train": das.iia_train, "basis_dtype": str(das.basis.weight.dtype)}
    res["ok"] = das.iia_test > 0.9 and das.basis.weight.dtype == torch.float32
    return res


def reft_overfit(lm, quick: bool) -> dict:
    import reft
    from interp import Site, first, last

    torch.manual_seed(0)
    rlm = reft.attach(lm, {Site("resid_post", 9, first(1) + last(1)): reft.LoReFT(lm.d_model, rank=4)})
    examples = [
        {"prompt": "Who are you?", "response": " I am a small teapot."},
        {"prompt": "What is your favourite colour?", "response": " Blue, like the sea."},
        {"prompt": "Where do you live?", "response": " In a kitchen cupboard."},
        {"prompt": "What do you eat?", "response": " Only hot water."},
    ]
    cfg = reft.TrainConfig(steps=40 if quick else 80, lr=2e-2, batch_size=4, progress=False)
    hist = reft.train_reft(rlm, examples, cfg)
    dtypes = sorted({str(p.dtype) for p in rlm.interventions.parameters()})
    res = {"loss_first": hist.losses[0], "loss_last": hist.losses[-1], "drop": hist.losses[0] / max(hist.losses[-1],
           1e-12), "param_dtypes": dtypes, "seconds_per_step": hist.seconds_per_step}  # fmt: skip
    res["ok"] = res["drop"] > 10 and dtypes == ["torch.float32"]
    return res


CHECKS = {"ioi_flip": ioi_flip, "das_gender": das_gender, "reft_overfit": reft_overfit}


# ---- benches ---------------------------------------------------------------------------------------------------

RATIO = re.compile(r"([A-Za-z(][^\n:=]*?)[:=]\s*([0-9]+\.[0-9]+)x")


def parse_ratios(text: str) -> dict:
    """``{label: ratio}`` from a bench's printed lines such as ``(a) DII at layer 15 / two full forwards: 0.412x``;
    a JSON object on the last line is taken as it is.

    Example:
        >>> parse_ratios("(a) DII / two full forwards:   0.412x  (aim <= 0.6)")
        {'(a) DII / two full forwards': 0.412}
    """
    lines = text.strip().splitlines()
    if lines:
        try:
            obj = json.loads(lines[-1])
            if isinstance(obj, dict):
                return obj
        except ValueError:
            pass
    return {m.group(1).strip(): float(m.group(2)) for m in RATIO.finditer(text)}


def run_bench(name: str, device: str, dtype: str, *, quick: bool, dry: bool, timeout: float) -> dict:
    args = ["--help"] if dry else BENCHES[name] + (QUICK[name] if quick else [])
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env = dict(os.environ, INTERP_GPU_CHECK_DEVICE=device, INTERP_GPU_CHECK_DTYPE=dtype)
        env["PYTHONPATH"] = os.pathsep.join([tmp, str(HERE.parent), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        t = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, str(HERE / f"{name}.py"), *args], capture_output=True, text=True,
                                  env=env, timeout=timeout)  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"timed out after {timeout:.0f} s", "seconds": timeout}
    res = {"ok": proc.returncode == 0, "seconds": time.perf_counter() - t, "args": args}
    if proc.returncode != 0:
        res["error"] = proc.stderr.strip()[-2000:]
    elif not dry:
        res["ratios"] = parse_ratios(proc.stdout)
        res["stdout"] = proc.stdout.strip()[-3000:]
    return res


# ---- main ------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda, cuda:1, ... (cpu only with --dry or to compare)")
    ap.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated: float32, bfloat16")
    ap.add_argument("--quick", action="store_true", help="fewer pairs and steps; benches with fewer repeats")
    ap.add_argument("--skip-benches", action="store_true")
    ap.add_argument("--only", default=",".join(CHECKS), help=f"checks to run, comma-separated ({', '.join(CHECKS)})")
    ap.add_argument("--dry", action="store_true", help="a tiny random Gemma-3: the script's logic, not judged")
    ap.add_argument("--bench-timeout", type=float, default=900.0, help="seconds per bench subprocess")
    ap.add_argument("--json", action="store_true", help="print one JSON object (the summary) on stdout")
    args = ap.parse_args(argv)

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(no_cuda_message(args.device), file=sys.stderr)
        return 2
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    bad = [d for d in dtypes if d not in DTYPES]
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in only if c not in CHECKS]
    if bad or unknown or not dtypes:
        print(f"gpu_check: unknown dtypes {bad} or checks {unknown}; known: {list(DTYPES)}, {list(CHECKS)}",
              file=sys.stderr)  # fmt: skip
        return 2
    log = sys.stderr if args.json else sys.stdout
    summary: dict = {"device": args.device, "dry": args.dry, "quick": args.quick, "torch": torch.__version__,
                     "gpu": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else None,
                     "dtypes": {}}  # fmt: skip
    for name in dtypes:
        dtype = DTYPES[name]
        entry: dict = {"checks": {}, "benches": {}}
        lm, secs = timed(args.device, lambda dtype=dtype: load_model(args.device, dtype, args.dry))
        entry["load_seconds"] = secs
        print(f"[{name}] loaded {lm!r} on {lm.device} in {secs:.1f} s", file=log)
        for check in only:
            try:
                res, secs = timed(args.device, lambda check=check, lm=lm: CHECKS[check](lm, args.quick))
            except Exception as e:  # a failing check is reported, and the others still run
                res, secs = {"ok": False, "error": f"{type(e).__name__}: {e}"}, 0.0
            res["seconds"] = secs
            if args.dry:
                res["judged"], res["ok"] = False, None
            entry["checks"][check] = res
            print(f"[{name}] {check}: {json.dumps(res, default=str)}", file=log)
        if args.device.startswith("cuda"):
            entry["peak_memory_gb"] = torch.cuda.max_memory_allocated(args.device) / 2**30
        del lm
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(args.device)
        if not args.skip_benches:
            for bench in BENCHES:
                res = run_bench(bench, args.device, name, quick=args.quick, dry=args.dry, timeout=args.bench_timeout)
                entry["benches"][bench] = res
                shown = res.get("ratios", res.get("error", "ok"))
                print(f"[{name}] {bench}: {json.dumps(shown, default=str)[:1500]}", file=log)
        summary["dtypes"][name] = entry
    if "float32" in summary["dtypes"] and "bfloat16" in summary["dtypes"]:
        f32, b16 = summary["dtypes"]["float32"], summary["dtypes"]["bfloat16"]
        summary["bf16_over_float32_seconds"] = {
            k: b16["checks"][k]["seconds"] / f32["checks"][k]["seconds"]
            for k in f32["checks"]
            if f32["checks"][k].get("seconds") and b16["checks"].get(k, {}).get("seconds")
        }
    judged = [r["ok"] for e in summary["dtypes"].values() for r in [*e["checks"].values(), *e["benches"].values()]]
    summary["ok"] = None if args.dry else all(judged)
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        print(json.dumps({k: v for k, v in summary.items() if k != "dtypes"}, default=str))
        for name, e in summary["dtypes"].items():
            for check, r in e["checks"].items():
                print(f"{name:9s} {check:13s} ok={r['ok']} {r['seconds']:.1f} s")
            for bench, r in e["benches"].items():
                print(f"{name:9s} {bench:13s} ok={r['ok']} ratios={r.get('ratios', '-')}")
    return 0 if summary["ok"] in (True, None) else 1


if __name__ == "__main__":
    sys.exit(main())
