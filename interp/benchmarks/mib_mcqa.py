"""MIB causal variable track, simple MCQA: where are the answer and the answer pointer? IIA per method and layer.

Example:
    >>> result = run(lm, quick=True, progress=False)  # interp bench mib-mcqa --quick  # doctest: +SKIP
    >>> sorted({row["method"] for row in result["table"]})  # doctest: +SKIP
    ['DAS', 'full_vector']
    >>> result["layer_average"]["DAS"]["answer"]  # IIA averaged over the layers run  # doctest: +SKIP
    0.5

The task (Mueller et al. 2025, MIB; ``aaronmueller/MIB``, ``MIB-causal-variable-track/tasks/simple_MCQA``): a
prompt states an object's colour and asks for it among four lettered choices::

    Question: The lemon is yellow. What color is the lemon?
    A. red
    B. yellow
    C. blue
    D. green
    Answer:

Its causal model (:func:`causal_model`): ``answer_pointer`` = the index of the choice equal to the question's
colour; ``answer`` = " " + the symbol at that index. Counterfactual sets, as MIB's ``copycolors_mcqa``:
``answerPosition`` (the same question, the correct colour moved to another choice), ``randomLetter`` (the same
choices under four random letters) and both. An interchange of ``answer_pointer`` from a source makes the label
the *base's* symbol at the source's pointer; one of ``answer`` makes it the source's letter. Featurizers are fitted
on the three training sets together and scored on each test set: IIA at the last token's residual stream after a
layer, averaged over the three sets, then over layers (MIB's ``aggregate_results``). Examples are filtered to
those the model answers right on base and source (MIB's ``FilterExperiment``), unless that leaves too few: see
``sizes["filter"]``. DAS has 16 rows for the pointer and ``d_model // 2`` for the answer, as in MIB's baselines.
"""

from __future__ import annotations

import json
import random
import string
import time

import torch

from interp.causal import CausalModel
from interp.errors import BenchmarkDataError
from interp.featurizers import Mask, pca
from interp.inputs import token_ids
from interp.models import load
from interp.subspace import LowRankRotation

from .data import check_options, data_root, require
from .mib_engine import (
    Prepared,
    ce_loss,
    default_layers,
    evaluate,
    groups_of,
    layer_average,
    progress_bar,  # fmt: skip
    train_basis,
)

NAME = "mib-mcqa"
METHODS = ("full_vector", "DAS", "DBM", "DBM+PCA")
VARIABLES = ("answer_pointer", "answer")
SETS = ("answerPosition", "randomLetter", "answerPosition_randomLetter")
N_CHOICES = 4
LETTERS = string.ascii_uppercase
MIN_KEPT = 0.25  # MIB's filter is applied when every set keeps at least this fraction; else scored unfiltered

PUBLISHED = {
    "source": "MIB (Mueller et al. 2025, arXiv 2504.13151) Table 3, as transcribed in ../shared/benchmarks/README.md",
    "metric": "IIA in %, averaged over layers (best token position per layer)",
    "Qwen-2.5-0.5B": {"DAS": {"answer": 86, "answer_pointer": 78}, "DBM": 46, "DBM+PCA": 22, "full_vector": 35},
    "Gemma-2-2B": {"DAS": {"answer": 95, "answer_pointer": 77}, "DBM": 84, "DBM+PCA": 57, "DBM+SAE": 73,
                   "full_vector": 61},
}  # fmt: skip


def causal_model() -> CausalModel:
    """MIB's simple-MCQA causal model: inputs question (colour, object), choice0..3, symbol0..3.

    Example:
        >>> m = causal_model()
        >>> s = {"question": ("yellow", "lemon"), **{f"choice{i}": c for i, c in enumerate(["red", "yellow",
        ...      "blue", "green"])}, **{f"symbol{i}": x for i, x in enumerate("ABCD")}}
        >>> m.run(s)["answer"], m.run(s)["answer_pointer"]
        (' B', 1)
    """
    choices = [f"choice{i}" for i in range(N_CHOICES)]
    symbols = [f"symbol{i}" for i in range(N_CHOICES)]
    spec = {"question": None, **{c: None for c in choices}, **{s: None for s in symbols}}
    spec["answer_pointer"] = (("question", *choices), lambda q, *cs: next(i for i, c in enumerate(cs) if c == q[0]))
    spec["answer"] = (("answer_pointer", *symbols), lambda p, *ss: " " + ss[p])
    return CausalModel(spec, output="answer")


def prompt(s: dict) -> str:
    """MIB's prompt format (``copycolors_mcqa``) for one input setting."""
    color, obj = s["question"]
    lines = "".join(f"{s[f'symbol{i}']}. {s[f'choice{i}']}\n" for i in range(N_CHOICES))
    return f"Question: The {obj} is {color}. What color is the {obj}?\n{lines}Answer:"


def load_pairs(root) -> list[dict]:
    """The object-colour pairs, checked."""
    path = require(root, NAME, "simple_MCQA/object_color_pairs.json")
    items = json.loads(path.read_text())
    if not items or not all(isinstance(x, dict) and {"object", "color"} <= set(x) for x in items):
        raise BenchmarkDataError(f"{path} is not a list of {{'object', 'color'}} records (MIB's format)")
    return items


def sample_base(rng: random.Random, items: list[dict]) -> dict:
    """A base: an object, its colour among four distinct colours at a random place, symbols A-D."""
    colors = sorted({x["color"] for x in items})
    it = rng.choice(items)
    others = rng.sample([c for c in colors if c != it["color"]], N_CHOICES - 1)
    where = rng.randrange(N_CHOICES)
    chosen = others[:where] + [it["color"]] + others[where:]
    return {"question": (it["color"], it["object"]), **{f"choice{i}": c for i, c in enumerate(chosen)},
            **{f"symbol{i}": LETTERS[i] for i in range(N_CHOICES)}}  # fmt: skip


def counterfactual(rng: random.Random, base: dict, kind: str) -> dict:
    """The source of one counterfactual set for ``base`` (MIB's answerPosition / randomLetter / both)."""
    src = dict(base)
    if "answerPosition" in kind:
        m = causal_model()
        p = m.run(base)["answer_pointer"]
        new = rng.choice([i for i in range(N_CHOICES) if i != p])
        rest = [base[f"choice{i}"] for i in range(N_CHOICES) if i != p]
        rng.shuffle(rest)
        rest.insert(new, base[f"choice{p}"])
        src.update({f"choice{i}": c for i, c in enumerate(rest)})
    if "randomLetter" in kind:
        src.update({f"symbol{i}": x for i, x in enumerate(rng.sample(LETTERS, N_CHOICES))})
    return src


def datasets(items, n: int, seed: int) -> dict[str, list[tuple[dict, dict]]]:
    """``{set: [(base, source)]}``: ``n`` bases shared by the three sets, one source each."""
    rng = random.Random(seed)
    bases = [sample_base(rng, items) for _ in range(n)]
    return {kind: [(b, counterfactual(rng, b, kind)) for b in bases] for kind in SETS}


def run(lm=None, *, data=None, quick=False, layers=None, seed=0, progress=True, methods=None) -> dict:
    """Run the benchmark; see the module docstring. Returns the JSON-able result (``table``, ``sizes``, ...)."""
    check_options(NAME, layers=layers, methods=methods, known=METHODS, n_layers=lm.n_layers if lm else None)
    t0 = time.time()
    items = load_pairs(data_root(data))  # missing data: an error naming the repository, before the model loads
    lm = lm if lm is not None else load()
    check_options(NAME, layers=layers, methods=None, known=METHODS, n_layers=lm.n_layers)
    methods = list(methods) if methods else (["full_vector", "DAS"] if quick else list(METHODS))
    layers = list(layers) if layers else default_layers(lm.n_layers, quick)
    n_train, n_test = (6, 6) if quick else (64, 48)
    steps = 3 if quick else 40
    model = causal_model()
    sets = datasets(items, n_train + n_test, seed)
    letters = token_ids(lm, [" " + x for x in LETTERS])  # the answer space: IIA and the loss over these tokens

    # one forward per distinct prompt: bases (kept for the cells) and the sources of every set
    base_settings = [b for b, _ in sets[SETS[0]]]
    base = Prepared.of(lm, [prompt(b) for b in base_settings], layers=layers, keep=True, progress=progress,
                       desc="MCQA bases")  # fmt: skip
    src = {k: Prepared.of(lm, [prompt(s) for _, s in sets[k]], layers=layers, progress=progress, desc=f"MCQA {k}")
           for k in SETS}  # fmt: skip
    truth = token_ids(lm, [model.run(b)["answer"] for b in base_settings])
    base_ok = base.top == truth
    kept = {}
    for k in SETS:
        src_truth = token_ids(lm, [model.run(s)["answer"] for _, s in sets[k]])
        kept[k] = (base_ok & (src[k].top == src_truth)).tolist()
    share = {k: sum(v) / len(v) for k, v in kept.items()}
    filtered = all(share[k] >= MIN_KEPT for k in SETS)
    rows_of = {k: [i for i, ok in enumerate(kept[k]) if ok or not filtered] for k in SETS}
    train_rows = {k: [i for i in rows_of[k] if i < n_train] for k in SETS}
    test_rows = {k: [i for i in rows_of[k] if i >= n_train] for k in SETS}

    table = []
    jobs = [(layer, var) for layer in layers for var in VARIABLES]
    for layer, var in progress_bar(jobs, progress, "MCQA layer x variable"):
        labels = {k: token_ids(lm, [model.interchange(b, {var: s})["answer"] for b, s in sets[k]]) for k in SETS}
        tr = any(train_rows[k] for k in SETS)  # training: the three sets' training pairs together (MIB)
        for method in methods:
            basis = None
            if method != "full_vector" and tr:
                basis = _fit(lm, method, var, layer, base, src, labels, train_rows, letters, steps, seed, progress)
            per_set = {}
            for k in SETS:
                rows = test_rows[k]
                if not rows:
                    continue
                hits = _iia(lm, base, src[k].vectors[layer], labels[k], letters, layer, basis, rows)
                per_set[k] = (hits, len(rows))
                table.append({"method": method, "variable": var, "layer": layer, "counterfactual": k,
                              "iia": round(hits, 4), "n": len(rows)})  # fmt: skip
            if per_set:
                mean = sum(h for h, _ in per_set.values()) / len(per_set)
                table.append({"method": method, "variable": var, "layer": layer, "counterfactual": "all",
                              "iia": round(mean, 4), "n": sum(n for _, n in per_set.values())})  # fmt: skip
    return {
        "benchmark": NAME,
        "model": lm.spec.architecture,
        "table": table,
        "layer_average": layer_average(table, "iia"),
        "sizes": {
            "bases": {"train": n_train, "test": n_test},
            "layers": layers,
            "methods": methods,
            "steps": steps,
            "das_rank": {"answer_pointer": 16, "answer": lm.d_model // 2},
            "position": "last token, resid_post",
            "task_accuracy": round(float(base_ok.float().mean()), 4),
            "filter": {
                "applied": filtered,
                "kept_share": {k: round(v, 4) for k, v in share.items()},
                "rule": f"MIB keeps pairs the model answers right on base and source; applied when every "
                f"set keeps >= {MIN_KEPT:.0%}, else every pair is scored (the model is near chance)",
            },
            "answer_space": "IIA and loss over the 26 tokens ' A'..' Z' (MIB: the whole vocabulary)",
        },  # fmt: skip
        "published": PUBLISHED,
        "seconds": round(time.time() - t0, 1),
    }


def _targets(labels: torch.Tensor, letters: torch.Tensor) -> torch.Tensor:
    """Label token ids as indices into the answer space."""
    return (labels[:, None] == letters[None].to(labels.device)).float().argmax(-1)


def _fit(lm, method, var, layer, base, src, labels, train_rows, letters, steps, seed, progress):
    d = lm.d_model
    if method == "DAS":
        basis = LowRankRotation(d, 16 if var == "answer_pointer" else d // 2)
    elif method == "DBM":
        basis = Mask("neurons", d_model=d, sparsity=0.0)  # MIB: regularization_coefficient 0
    else:  # DBM+PCA: a mask over all principal components of the training bases' and sources' vectors
        rows = sorted({i for k in SETS for i in train_rows[k]})
        acts = torch.cat([base.vectors[layer][rows]] + [src[k].vectors[layer][train_rows[k]] for k in SETS])
        basis = Mask(pca(acts, min(acts.shape[0], d)), sparsity=0.0)
    groups = []
    for k in SETS:
        target = _targets(labels[k], letters)
        groups += groups_of(base, src[k].vectors[layer], train_rows[k], lambda r, chosen, t=target: (t[r], chosen))

    def loss(logits, payload):
        target, chosen = payload
        return ce_loss(logits[chosen], target[chosen])

    return train_basis(lm, base, groups, layer=layer, basis=basis, loss=loss, steps=steps, lr=1e-2, seed=seed,
                       progress=progress, desc=f"{method} {var} L{layer}", vocab=letters)  # fmt: skip


def _iia(lm, base, sources, labels, letters, layer, basis, rows) -> float:
    target = _targets(labels, letters)
    groups = groups_of(base, sources, rows, lambda r, chosen: (target[r], chosen))

    def score(logits, payload):
        t, chosen = payload
        return (logits.argmax(-1) == t).float()[chosen]

    return float(evaluate(lm, base, groups, layer=layer, basis=basis, score=score, vocab=letters).mean())
