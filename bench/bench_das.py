"""Benchmark one DAS training step on Gemma-3-270M against a bare forward+backward, as ratios in one run.

    python bench/bench_das.py               # IOI, batch 32, rank 4, last position of layer 13
    python bench/bench_das.py --repeats 5 --json

Variants, on the same 32 IOI prompts (each timed as the median of interleaved repeats):
  bare   a plain full forward + backward of the frozen model: logits at every position, loss at the last, a
         backward to the input embeddings (the floor any step that trains through the model pays);
  naive  the unoptimised DAS step (about what pyvene pays): the source run through the whole model, unembedding
         included, then the base run with the edit (plain PyTorch hooks), logits everywhere, backward, step;
  das    source vectors cached once (run stopping at the site), logits only at the last token, a backward that
         stops at the site (the model is frozen), AdamW on R;
  fit    the step fit_das takes: das, plus the base rows' stream entering the site's layer cached once
         (interp.replay), so layers below the site are not recomputed each step;
  dbm_*  fit's step with a DBM mask (interp.featurizers.Mask) as the basis: over the neurons, and over the
         top min(64, B - 1) principal axes of the source vectors (a featurizer fit's step time against the floor).
Prints das/bare, fit/bare and naive/bare, the one-off caching costs, peak extra RSS of each, and the difference
between fit and naive (loss and gradient of R), which must be zero up to float error.

``--fits`` also times whole ``fit_das`` calls as a sweep makes them (ranks 1, 2, 4 at the site; 64 training and 32
test IOI pairs, 10 steps each): "fresh", each fit collecting its own sources and streams and scoring the whole
training set (what every fit did before issue 23), against "shared", one :class:`interp.paircache.PairCache` for
the three fits and ``score_train=False``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch
from bench_dii import peak_mb, timed
from torch.nn import functional as F

import interp
from interp import LowRankRotation, Site, collect, encode, interchange, last
from interp.das import Alignment, fit_das
from interp.engine import options
from interp.featurizers import Mask, pca
from interp.inputs import token_ids
from interp.metrics import das_loss
from interp.paircache import PairCache
from interp.replay import PrefixCache
from interp.tasks import ioi_pairs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--layer", type=int, default=13)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--fits", action="store_true", help="also time whole fit_das calls: fresh vs one shared cache")
    args = ap.parse_args()

    lm = interp.load()
    pairs = ioi_pairs(args.batch, seed=0)
    base, source = encode(lm, pairs.base), encode(lm, pairs.source)
    labels = token_ids(lm, pairs.source_answer)
    site = Site("resid_post", args.layer, last())
    torch.manual_seed(0)
    R = LowRankRotation(lm.d_model, args.rank)
    opt = torch.optim.AdamW(R.parameters(), lr=1e-3, weight_decay=0.0)
    iv = Alignment(R)
    cache = collect(lm, source, at=site)  # (B, 1, d), once per dataset
    param = R.proj.parametrizations.weight.original
    every = range(len(base))
    prefix = PrefixCache.collect(lm, pairs.base, layer=args.layer)  # (B, T, d) entering the site's layer, once

    def bare():
        emb = lm.hf.get_input_embeddings()(base.input_ids).detach().requires_grad_(True)
        out = lm.hf(inputs_embeds=emb, attention_mask=base.attention_mask, position_ids=base.position_ids)
        F.cross_entropy(out.logits[:, -1], labels).backward()

    def das_step(replay=False):
        opt.zero_grad(set_to_none=True)
        with prefix.replay(lm, every, base) if replay else contextlib.nullcontext():
            loss = das_loss(lm, base, cache, labels, at=site, via=iv)
        loss.backward()
        opt.step()
        return loss

    def naive_loss():  # the reference path: source through the whole model, every logit, no replay
        with options(backend="hooks", full=True):
            out = interchange(lm, base, source, at=site, via=iv, grad=True)
        return F.cross_entropy(out.logits, labels)

    def naive_step():
        opt.zero_grad(set_to_none=True)
        loss = naive_loss()
        loss.backward()
        opt.step()

    # parity before any timing step changes R: same loss, same gradient
    opt.zero_grad(set_to_none=True)
    with prefix.replay(lm, every, base):
        fast = das_loss(lm, base, cache, labels, at=site, via=iv)
    fast.backward()
    g_fast = param.grad.clone()
    opt.zero_grad(set_to_none=True)
    slow = naive_loss()
    slow.backward()
    g_slow = param.grad.clone()
    opt.zero_grad(set_to_none=True)
    diff = {"loss": abs((fast - slow).item()), "grad": (g_fast - g_slow).abs().max().item()}

    fit_step = lambda: das_step(replay=True)  # noqa: E731
    # DBM: the same fit step with a learned mask as the basis (over the neurons, and over the top principal
    # axes of the sources' vectors), its penalty added as fit_das adds it
    n_axes = min(64, len(cache) - 1)  # PCA of B vectors has at most B - 1 axes
    masks = {"dbm_neurons": Mask(lm.d_model), "dbm_pca": Mask(pca(cache[:, 0], n_axes))}
    mask_opts = {k: torch.optim.AdamW([m.logits], lr=1e-2, weight_decay=0.0) for k, m in masks.items()}

    def dbm_step(name):
        mask, mopt = masks[name], mask_opts[name]
        mopt.zero_grad(set_to_none=True)
        with prefix.replay(lm, every, base):
            loss = das_loss(lm, base, cache, labels, at=site, via=Alignment(mask)) + mask.penalty()
        loss.backward()
        mopt.step()

    steps = {"bare": bare, "naive": naive_step, "das": das_step, "fit": fit_step}
    steps |= {k: (lambda k=k: dbm_step(k)) for k in masks}
    once = {
        "cache": lambda: collect(lm, source, at=site),
        "prefix": lambda: PrefixCache.collect(lm, pairs.base, layer=args.layer),
    }
    secs = timed(steps | once, args.repeats)
    mem = {k: peak_mb(f) for k, f in steps.items()}
    res = {
        "model": lm.spec.architecture,
        "batch": args.batch,
        "tokens": int(base.input_ids.shape[1]),
        "site": repr(site),
        "rank": args.rank,
        "seconds": {k: round(v, 4) for k, v in secs.items()},
        "das_over_bare": round(secs["das"] / secs["bare"], 3),
        "fit_over_bare": round(secs["fit"] / secs["bare"], 3),
        "naive_over_bare": round(secs["naive"] / secs["bare"], 3),
        "dbm_neurons_over_bare": round(secs["dbm_neurons"] / secs["bare"], 3),
        "dbm_pca_over_bare": round(secs["dbm_pca"] / secs["bare"], 3),
        "dbm_pca_axes": n_axes,
        "cache_over_bare": round(secs["cache"] / secs["bare"], 3),
        "prefix_over_bare": round(secs["prefix"] / secs["bare"], 3),
        "peak_extra_rss_mb": {k: round(v, 1) for k, v in mem.items()},
        "max_abs_diff_vs_naive": diff,
    }
    if args.fits:
        res["fits"] = fit_times(lm, site)
    if args.json:
        print(json.dumps(res))
        return
    print(f"Gemma-3-270M DAS step, IOI batch {args.batch} x {res['tokens']} tokens, {site!r}, rank {args.rank}")
    for k in ("bare", "naive", "das", "fit", "dbm_neurons", "dbm_pca"):
        print(f"  {k:6s} {secs[k]:.3f} s   peak +{mem[k]:.0f} MB")
    print(f"  das / bare   = {res['das_over_bare']:.2f}x   (sources cached)")
    print(f"  fit / bare   = {res['fit_over_bare']:.2f}x   (sources and the stream below the site cached; aim <= 0.5x)")
    print(f"  naive / bare = {res['naive_over_bare']:.2f}x")
    print(f"  DBM fit step / bare = {res['dbm_neurons_over_bare']:.2f}x over the neurons, "
          f"{res['dbm_pca_over_bare']:.2f}x over {n_axes} principal axes (a featurizer's step against the floor)")
    print(f"  source cache (once per dataset) = {res['cache_over_bare']:.2f}x a bare step")
    print(f"  base-stream cache (once per dataset) = {res['prefix_over_bare']:.2f}x a bare step")
    print(f"  fit vs naive: |loss diff| {diff['loss']:.2e}, max |grad diff| {diff['grad']:.2e}")
    if args.fits:
        f = res["fits"]
        print(
            f"  3 fits (ranks 1, 2, 4): fresh {f['fresh_s']:.1f} s, shared cache + score_train=False "
            f"{f['shared_s']:.1f} s ({f['fresh_s'] / f['shared_s']:.2f}x); per fit {f['per_fit']}"
        )


def fit_times(lm, site) -> dict:
    """Seconds for three fits at ``site`` collecting everything each time vs sharing one PairCache."""
    pairs = ioi_pairs(96, seed=0)
    train, test = pairs[:64], pairs[64:]
    kw = dict(steps=10, eval_every=5, batch_size=32, progress=False, val_fraction=0.0)
    out, per_fit = {}, {}
    for mode in ("fresh", "shared"):
        cache, t0 = (PairCache(lm) if mode == "shared" else None), time.perf_counter()
        for rank in (1, 2, 4):
            t = time.perf_counter()
            fit_das(lm, train, at=site, rank=rank, test=test, cache=cache, score_train=mode == "fresh", **kw)
            per_fit[f"{mode}_rank{rank}"] = round(time.perf_counter() - t, 2)
        out[f"{mode}_s"] = round(time.perf_counter() - t0, 2)
    return out | {"per_fit": per_fit}


if __name__ == "__main__":
    main()
