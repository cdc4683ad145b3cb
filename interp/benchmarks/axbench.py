"""AxBench Concept10 (``interp bench axbench-concept10``): concept detection AUROC per concept and method, and a
stated proxy for steering.

Example:
    >>> result = run(lm, quick=True, progress=False)                     # doctest: +SKIP
    >>> sorted(result["means"][0])                                       # doctest: +SKIP
    ['auroc_max', 'auroc_mean', 'layer', 'method']

Per concept (Wu, Arora, Geiger et al., ICML 2025, arXiv 2501.17148; stanfordnlp/axbench): each method gives one
direction ``w`` from the concept's training texts (positives against genre-matched negatives); a text's tokens
(BOS excluded) are scored by ``h . w`` and the text by the max (AxBench's detector) or the mean over them; the
metric is the ROC AUC of those scores over the evaluation texts, positives against negatives. Methods:

- ``diffmean``: the positives' mean token activation minus the negatives' (:func:`interp.featurizers.diff_means`);
- ``probe``: a logistic-regression probe on the tokens, labelled by text (:func:`~interp.featurizers.probe_direction`);
- ``pca``: the first principal axis of the positives' tokens (:func:`~interp.featurizers.pca`), its sign turned
  toward the positives on the training tokens (AxBench leaves the sign as it falls);
- ``random``: a random unit direction (the control; :func:`~interp.featurizers.random_basis`);
- ``reft-r1``: ReFT-r1 trained jointly to detect and to steer (:func:`reft.r1.train_r1`); its score is its latent
  ``ReLU(h . w)``.

The activations are collected once per layer (:mod:`.axbench_detect`) and serve every method and ReFT-r1's
training. Steering (:mod:`.axbench_steer`) adds ``factor x max_act x w`` of DiffMean and of ReFT-r1 at every token
and reports a PROXY of AxBench's LLM judge: the log-likelihood of held-out concept texts and the perplexity of the
steered continuations under the frozen model. Sizes are CPU-sized (``sizes`` in the result).
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from interp.errors import BenchmarkOptionError
from interp.featurizers import diff_means, pca, probe_direction, random_basis
from interp.models import load as load_model
from reft.r1 import AXBENCH, train_r1
from reft.train import TrainConfig, prepare

from .axbench_data import SUBSETS, load, paths
from .axbench_detect import roc_auc, streams, strip_bos, text_scores
from .axbench_steer import steering_proxy
from .data import data_root

METHODS = ("diffmean", "probe", "pca", "random", "reft-r1")
STEERED = ("diffmean", "reft-r1")
QUICK = dict(n_concepts=2, n_train=6, n_eval=8, prompt_tokens=8, response_tokens=16, r1_steps=3, r1_batch=4,
             steer_concepts=1, factors=(1.0,), steer_texts=2, new_tokens=8)  # fmt: skip
FULL = dict(n_concepts=10, n_train=24, n_eval=24, prompt_tokens=16, response_tokens=32, r1_steps=None, r1_batch=6,
            steer_concepts=3, factors=(0.5, 1.0, 2.0), steer_texts=4, new_tokens=24)  # fmt: skip
R1 = dict(k=8, l1=0.005, lr=AXBENCH["lr"], epochs=1, vocab="seen")

PUBLISHED = {
    "source": "Wu, Arora, Geiger et al., AxBench (ICML 2025, arXiv 2501.17148), concept detection on Concept500; "
    "/work/shared/benchmarks/README.md",
    "models": "Gemma-2-2B-IT (layers 10, 20) and Gemma-2-9B-IT (layers 20, 31)",
    "metric": "ROC AUC of the max-over-tokens score, mean over concepts",
    "auroc": {
        "diffmean": "about 0.9 and above",
        "probe": "about 0.9 and above",
        "reft-r1": "about 0.9 and above",
        "sae": "trails the supervised directions",
    },  # fmt: skip
    "lesson": "DiffMean, a linear probe and ReFT-r1 detect concepts best; SAEs trail",
    "steering": "judged by an LLM (concept, instruction, fluency); not reproduced offline: see the proxy rows",
}


def check_methods(methods) -> tuple[str, ...]:
    """The methods to run (default all), checked before any work."""
    if methods is None:
        return METHODS
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    methods = tuple(methods)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        known = ", ".join(METHODS)
        raise BenchmarkOptionError(f"axbench-concept10 methods {list(methods)!r}: unknown {bad}; known: {known}")
    return methods


def run(lm=None, *, data=None, quick=False, layers=None, seed=0, progress=True, methods=None, subset=SUBSETS[0]):
    """Detection AUROC per concept and method (``table``), their means, steering proxy rows; see the module."""
    t0 = time.time()
    methods = check_methods(methods)
    root = data_root(data)
    paths(root, subset)  # a missing file is an error naming the public repository and path, before the model loads
    size = QUICK if quick else FULL
    concepts = load(root, subset=subset, n_concepts=size["n_concepts"], n_train=size["n_train"], n_eval=size["n_eval"])
    lm = load_model() if lm is None else lm
    layers = [lm.n_layers // 2] if layers is None else list(layers)
    bad = [x for x in layers if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x < lm.n_layers]
    if bad or not layers:
        raise BenchmarkOptionError(f"axbench-concept10 layers {layers!r}: each must be 0..{lm.n_layers - 1}")
    cfg = TrainConfig(max_prompt_tokens=size["prompt_tokens"], max_response_tokens=size["response_tokens"])
    texts, index = [], {}
    for c in concepts:  # each distinct text once (the genre negatives are shared by concepts)
        for t in c.train_pos + c.train_neg + c.eval_pos + c.eval_neg:
            index.setdefault((t.prompt, t.response), len(texts))
            if len(texts) < len(index):
                texts.append(t)
    rows = prepare(lm, [t.example() for t in texts], cfg)
    seqs = [r.prompt + r.response for r in rows]
    ids = lambda ts: [index[(t.prompt, t.response)] for t in ts]  # noqa: E731
    table, means, steering = [], [], []
    for layer in layers:
        bar = tqdm(total=len(seqs), desc=f"collect layer {layer}", disable=not progress, leave=False)
        S = streams(lm, seqs, layer, progress=bar)
        bar.close()
        tokens = [h[strip_bos(lm, s) :] for h, s in zip(S, seqs)]  # the scored tokens: BOS excluded
        for c in tqdm(concepts, desc="concepts", disable=not progress, leave=False):
            pos, neg = ids(c.train_pos), ids(c.train_neg)
            offsets: dict[str, float] = {}
            dirs = directions(lm, methods, layer, seed, c.concept_id, tokens, pos, neg, rows, S, size, offsets)
            ev_pos, ev_neg = ids(c.eval_pos), ids(c.eval_neg)
            labels = torch.tensor([1] * len(ev_pos) + [0] * len(ev_neg))
            for m, w in dirs.items():
                off = offsets.get(m, 0.0)
                mx, mn = text_scores([tokens[i] for i in ev_pos + ev_neg], w, relu=m == "reft-r1", offset=off)
                table.append({"layer": layer, "concept_id": c.concept_id, "concept": c.concept, "method": m,
                              "auroc_max": round(float(roc_auc(mx, labels)), 4),
                              "auroc_mean": round(float(roc_auc(mn, labels)), 4)})  # fmt: skip
            if concepts.index(c) < size["steer_concepts"] and any(m in dirs for m in STEERED):
                chosen = {m: (dirs[m], max_act(tokens, pos, neg, dirs[m])) for m in STEERED if m in dirs}
                held = [rows[i] for i in ev_pos[: size["steer_texts"]]]
                prompts = [rows[i].prompt for i in ev_neg[: size["steer_texts"]]]
                for r in steering_proxy(lm, layer=layer, directions=chosen, held_out=held, prompts=prompts,
                                        factors=size["factors"], max_new_tokens=size["new_tokens"]):  # fmt: skip
                    steering.append({"layer": layer, "concept_id": c.concept_id, "concept": c.concept, **r})
        for m in methods:
            got = [r for r in table if r["layer"] == layer and r["method"] == m]
            means.append({"layer": layer, "method": m,
                          "auroc_max": round(sum(r["auroc_max"] for r in got) / len(got), 4),
                          "auroc_mean": round(sum(r["auroc_mean"] for r in got) / len(got), 4)})  # fmt: skip
    return {
        "benchmark": "axbench-concept10",
        "table": table,
        "means": means,
        "steering": steering,
        "steering_note": "PROXY, not AxBench's LLM judge: concept_ll = mean log-likelihood per token of held-out "
        "concept texts under steering (concept_ll_delta: its change from unsteered); fluency_ppl = perplexity of the "
        "steered greedy continuations of held-out instructions under the frozen model",
        "sizes": sizes(lm, subset, layers, concepts, size, seqs),
        "published": PUBLISHED,
        "seconds": round(time.time() - t0, 1),
    }


def directions(lm, methods, layer, seed, cid, tokens, pos, neg, rows, S, size, offsets) -> dict[str, torch.Tensor]:
    """One unit direction per method from the concept's training texts (token activations, labelled by text);
    ``offsets`` receives ReFT-r1's latent origin ``mu . w`` (its score is ``ReLU(h . w - mu . w)``)."""
    p = torch.cat([tokens[i] for i in pos])
    n = torch.cat([tokens[i] for i in neg])
    acts, labels = torch.cat([p, n]), [1] * len(p) + [0] * len(n)
    out = {}
    if "diffmean" in methods:
        out["diffmean"] = diff_means(acts, labels).weight[0]
    if "probe" in methods:
        out["probe"] = probe_direction(acts, labels).weight[0]
    if "pca" in methods:
        w = pca(p, 1).weight[0]
        out["pca"] = w if float(p.mean(0) @ w) >= float(n.mean(0) @ w) else -w
    if "random" in methods:
        out["random"] = random_basis(lm.d_model, 1, seed=seed * 1000 + cid).weight[0]
    if "reft-r1" in methods:
        train = pos + neg
        steps = size["r1_steps"]
        cfg = TrainConfig(steps=steps, epochs=R1["epochs"], batch_size=size["r1_batch"], lr=R1["lr"],
                          warmup_ratio=0.0, seed=seed, progress=False)  # fmt: skip
        fit = train_r1(lm, [rows[i] for i in train], layer=layer, config=cfg, k=R1["k"], l1=R1["l1"],
                       vocab=R1["vocab"], streams=[S[i] for i in train])  # fmt: skip
        out["reft-r1"] = fit.direction
        offsets["reft-r1"] = float(fit.intervention.center.float() @ fit.direction)
    return {m: w.detach().float() for m, w in out.items()}


def max_act(tokens, pos, neg, w) -> float:
    """The steering unit: the largest projection ``h . w`` on the training positives' tokens above the mean one on
    the negatives' (AxBench's unit is the largest latent; a raw projection has no zero to count from)."""
    top = max(float((tokens[i] @ w).max()) for i in pos)
    return top - float(torch.cat([tokens[i] @ w for i in neg]).mean())


def sizes(lm, subset, layers, concepts, size, seqs) -> dict:
    return {
        "model": repr(lm),
        "subset": subset,
        "layers": layers,
        "concepts": len(concepts),
        "train_texts_per_class": size["n_train"],
        "eval_texts_per_class": size["n_eval"],
        "prompt_tokens_max": size["prompt_tokens"],
        "response_tokens_max": size["response_tokens"],
        "texts": len(seqs),
        "tokens": sum(len(s) for s in seqs),
        "reft_r1": {**R1, "steps": size["r1_steps"] or f"{R1['epochs']} epoch", "batch_size": size["r1_batch"]},
        "steering": {
            "concepts": size["steer_concepts"],
            "factors": list(size["factors"]),
            "held_out_texts": size["steer_texts"],
            "new_tokens": size["new_tokens"],
        },  # fmt: skip
    }


__all__ = ["METHODS", "PUBLISHED", "check_methods", "run"]
