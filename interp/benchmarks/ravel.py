"""RAVEL (Huang et al., ACL 2024) on city / Country: Cause, Isolate and Disentangle per featurizer and layer.

Example:
    >>> check_options(layers=[6, 9], methods=["das", "mdas", "random"])      # what run() takes, checked first
    ('das', 'mdas', 'random')
    >>> result = run(quick=True, progress=False)        # interp bench ravel --quick --json   # doctest: +SKIP
    >>> sorted(result["table"][0])                                                            # doctest: +SKIP
    ['cause', 'disentangle', 'isolate', 'layer', 'method', 'n_cause', 'n_isolate', 'rank']

An interchange on the features found for a city's Country should make the model say the *source* city's
country on a Country prompt (**Cause**) and leave another attribute (Continent, Language) at the *base* city's
value on a prompt about that attribute (**Isolate**); **Disentangle** is their mean. The data is RAVEL's
(``explanare/ravel``, ``data.tgz``), filtered to the prompts the model answers right; pairs, splits and the
entity position are built by :mod:`interp.benchmarks.ravel_pairs`. Methods, all at the last token of the entity
mention in the residual stream after a layer, all with the same number of rows (``rank``):

- ``das``: a rank-``rank`` rotation trained for Cause only (:func:`interp.das.fit_das`);
- ``mdas``: the same, trained on cause and isolation pairs (:func:`interp.mdas.fit_mdas`, RAVEL's MDAS);
- ``dbm``: a learned mask over the neurons (:class:`interp.featurizers.Mask`), trained for Cause (opt-in);
- ``diffmean`` / ``probe``: the differences of class means / a logistic probe's directions over the
  ``rank + 1`` most frequent countries of the training cities; ``pca``: the top ``rank`` principal axes of the
  entity activations; ``random``: ``rank`` random directions (the control);
- ``full``: the whole vector (every coordinate of the residual stream; Isolate near 0 is expected).

Scores are the argmax over the whole vocabulary against the first token of the value (RAVEL's first-token
accuracy). Trained methods stop early on the validation cities; the scores are on the test cities.
"""

from __future__ import annotations

import time
from dataclasses import fields

from interp.das import DASConfig, fit_das
from interp.featurizers import Mask, diff_means, pca, probe_direction, random_basis
from interp.mdas import fit_mdas, mdas_pairs
from interp.metrics import iia
from interp.models import load
from interp.paircache import PairCache
from interp.sites import Site

from . import data
from .ravel_data import load_city
from .ravel_pairs import FULL, QUICK, Instance, build

NAME = "ravel"
METHODS = ("das", "mdas", "dbm", "diffmean", "probe", "pca", "random", "full")
DEFAULT_METHODS = ("das", "mdas", "diffmean", "probe", "pca", "random", "full")
TRAINED = ("das", "mdas", "dbm")
# fixed up front (never tuned on the test cities): rank, layers of Gemma-3-270M's 18, DAS training
SETTINGS = {
    "quick": {"rank": 8, "layers": (6,), "steps": 8, "batch_size": 8, "lr": 1e-2, "eval_every": 4},
    "full": {"rank": 16, "layers": (6, 10), "steps": 60, "batch_size": 16, "lr": 1e-2, "eval_every": 10},
}
PUBLISHED = {
    "source": "explanare/ravel demo notebook (scripts/demos/demo_run_benchmark_gemma_2_2b.ipynb), as quoted in "
    "shared/benchmarks/README.md; paper: Huang et al. 2024, arXiv 2402.17700",
    "model": "Gemma-2-2B, layer 13 (of 26), city / Country",
    "rows": [
        {"method": "das", "dims": 72, "cause": 0.97, "isolate": 0.04, "disentangle": 0.51},
        {"method": "mdas", "dims": 72, "cause": 0.70, "isolate": 0.70, "disentangle": 0.70},
        {"method": "mdas", "dims": 144, "disentangle": 0.71},
        {"method": "sae", "dims": 9216, "cause": 0.92, "isolate": 0.07, "disentangle": 0.49},
    ],
    "lesson": "a featurizer trained for Cause alone barely isolates; MDAS (cause + isolation losses) fixes it",
}


def check_options(*, layers, methods, n_layers: int | None = None) -> tuple:
    """The methods to run (default :data:`DEFAULT_METHODS`); BenchmarkOptionError for unknown methods or bad
    layers, before any work."""
    methods = DEFAULT_METHODS if methods is None else methods
    data.check_options(NAME, layers=layers, methods=methods, known=METHODS, n_layers=n_layers)
    return tuple(dict.fromkeys(methods))


def top_classes(values: list, k: int) -> set:
    """The ``k`` most frequent values (ties: alphabetical)."""
    counts: dict = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return set(sorted(counts, key=lambda v: (-counts[v], v))[:k])


def featurize(method: str, inst: Instance, acts, rank: int, seed: int):
    """The basis of an unsupervised / label-only method from the training cities' activations (N, d)."""
    if method == "pca":
        return pca(acts, rank)
    if method == "random":
        return random_basis(acts.shape[1], rank, seed=seed)
    keep = top_classes(inst.acts_values, rank + 1)
    idx = [i for i, v in enumerate(inst.acts_values) if v in keep]
    labels = [inst.acts_values[i] for i in idx]
    fn = diff_means if method == "diffmean" else probe_direction
    return fn(acts[idx], labels)


def fit(method: str, lm, inst: Instance, site: Site, *, rank: int, cfg: dict, cache: PairCache, seed: int,
        progress: bool):  # fmt: skip
    """A trained basis: DAS (Cause), MDAS (Cause + Isolate) or DBM (a neuron mask, Cause)."""
    options = {"steps": cfg["steps"], "batch_size": cfg["batch_size"], "lr": cfg["lr"], "seed": seed,
               "eval_every": cfg["eval_every"], "progress": progress, "cache": cache}  # fmt: skip
    if "score_train" in {f.name for f in fields(DASConfig)}:
        options["score_train"] = False
    t = inst.target
    if method == "mdas":
        held = mdas_pairs({t: inst.cause["val"]}, {t: inst.isolate["val"]})
        return fit_mdas(lm, {t: inst.cause["train"]}, {t: inst.isolate["train"]}, at=site, rank=rank,
                        held_out=held, **options).basis  # fmt: skip
    via = Mask("neurons", d_model=lm.d_model) if method == "dbm" else None
    return fit_das(lm, inst.cause["train"], at=site, via=via, rank=None if via is not None else rank,
                   held_out=inst.cause["val"], **options).basis  # fmt: skip


def score(lm, inst: Instance, site: Site, via, cache: PairCache) -> dict:
    """Cause, Isolate, Disentangle of one basis (None: the whole vector) on the test cities."""
    out = {}
    for name, pairs in (("cause", inst.cause["test"]), ("isolate", inst.isolate["test"])):
        out[name] = iia(lm, pairs, at=site, via=via, sources=cache.sources(pairs, site),
                        prefix=cache.prefix(pairs.base, layer=site.layer))  # fmt: skip
    out["disentangle"] = (out["cause"] + out["isolate"]) / 2
    return out


def lesson(table: list[dict]) -> dict:
    """The best layer (by MDAS's, else DAS's, Disentangle) and MDAS's Disentangle minus DAS's there."""
    by = {(r["method"], r["layer"]): r for r in table}
    ref = "mdas" if any(m == "mdas" for m, _ in by) else "das"
    layers = sorted({layer for m, layer in by if m == ref})
    if not layers:
        return {"best_layer": None, "mdas_minus_das_disentangle": None}
    best = max(layers, key=lambda layer: (by[(ref, layer)]["disentangle"], -layer))
    both = ("mdas", best) in by and ("das", best) in by
    gap = round(by[("mdas", best)]["disentangle"] - by[("das", best)]["disentangle"], 4) if both else None
    return {"best_layer": best, "mdas_minus_das_disentangle": gap}


def run(lm=None, *, data=None, quick: bool = False, layers=None, seed: int = 0, progress: bool = True,
        methods=None) -> dict:  # fmt: skip
    """Build the RAVEL city instance for ``lm`` (default: the embedded Gemma-3-270M) and score each method at
    each layer; see the module. Returns ``table`` (rows: method, layer, rank, cause, isolate, disentangle,
    n_cause, n_isolate), ``sizes``, ``published``, ``lesson``, ``settings`` and ``seconds``."""
    t0 = time.time()
    methods = check_options(layers=layers, methods=methods)
    city = load_city(data)  # a missing archive names explanare/ravel before the model loads
    lm = lm if lm is not None else load()
    mode = "quick" if quick else "full"
    cfg = dict(SETTINGS[mode])
    layers = tuple(layers) if layers is not None else tuple(x for x in cfg["layers"] if x < lm.n_layers)
    check_options(layers=layers, methods=methods, n_layers=lm.n_layers)
    clock = {"build": time.process_time()}
    inst = build(lm, city, sizes=QUICK if quick else FULL, seed=seed, progress=progress)
    clock["build"] = time.process_time() - clock["build"]
    cache = PairCache(lm, batch_size=64)
    rank = cfg["rank"]
    table = []
    for layer in layers:
        site = Site("resid_post", layer, inst.pos)
        acts = cache.rows(inst.acts_prompts, site)[:, 0] if set(methods) - set(TRAINED) - {"full"} else None
        for method in methods:
            c0 = time.process_time()
            if method == "full":
                via = None
            elif method in TRAINED:
                via = fit(method, lm, inst, site, rank=rank, cfg=cfg, cache=cache, seed=seed, progress=progress)
            else:
                via = featurize(method, inst, acts, rank, seed)
            clock[method] = clock.get(method, 0.0) + time.process_time() - c0
            c0 = time.process_time()
            s = score(lm, inst, site, via, cache)
            clock["score"] = clock.get("score", 0.0) + time.process_time() - c0
            table.append({
                "method": method, "layer": layer, "rank": lm.d_model if via is None else int(via.rank),
                "cause": round(s["cause"], 4), "isolate": round(s["isolate"], 4),
                "disentangle": round(s["disentangle"], 4),
                "n_cause": len(inst.cause["test"]), "n_isolate": len(inst.isolate["test"]),
            })  # fmt: skip
    out_lesson = lesson(table)
    return {
        "benchmark": NAME,
        "model": getattr(lm, "name", None) or type(lm.model).__name__,
        "mode": mode,
        "table": table,
        "lesson": out_lesson,
        "mdas_minus_das_disentangle": out_lesson["mdas_minus_das_disentangle"],
        "sizes": inst.sizes | {"layers": list(layers), "rank": rank, "templates_used": inst.templates},
        "settings": {k: v for k, v in cfg.items() if k != "layers"} | {"seed": seed, "methods": list(methods)},
        "published": PUBLISHED,
        "seconds": round(time.time() - t0, 1),
        "cpu_seconds": {k: round(v, 1) for k, v in clock.items()},  # this process's CPU time per phase
    }


__all__ = ["DEFAULT_METHODS", "METHODS", "NAME", "PUBLISHED", "SETTINGS", "check_options", "lesson", "run"]
