"""MIB causal variable track, IOI: output token and output position, scored by the MSE of a linear model.

Example:
    >>> result = run(lm, quick=True, progress=False)  # interp bench mib-ioi --quick  # doctest: +SKIP
    >>> result["linear_model"]  # fitted on the training pairs  # doctest: +SKIP
    {'bias': 1.2, 'token_coeff': 2.1, 'position_coeff': 0.3, 'r2': 0.8, 'layer': 12}
    >>> result["layer_average"]["DAS"]["output_token"]  # MSE over layers (lower is better)  # doctest: +SKIP
    1.9

The task (MIB, ``aaronmueller/MIB``, ``MIB-causal-variable-track/tasks/IOI_task``): prompts from MIB's templates,
names, places and objects, e.g. "After Mary and John went to the store, John gave a ring to" (answer " Mary",
the indirect object). MIB's causal model (:func:`causal_model`): ``output_token`` (the name that is not
repeated) and ``output_position`` (1 when the repeated name came first, else 0), and ``logit_diff = bias +
token_coeff * token_signal + position_coeff * position_signal``, where a signal is +1 when the variable's value
(after an interchange) still points at the base's indirect object and -1 when it points at the subject. The
neural quantity is logit(base IO) - logit(base S) at the last token. Counterfactual sources: ``same``,
``s1_io_flip`` (the two names of the first clause swapped: position flips, token stays), ``s2_io_flip`` (the
repeated name replaced by the other: both flip) and ``s1_ioi_flip_s2_ioi_flip`` (both: token flips).

The coefficients are fitted as MIB's ``ioi_learn_linear_params.py`` does: ordinary least squares (with an
intercept) of the logit difference measured under a full-vector interchange at a reference site, on the four
training sets, against the (position, token) signals of each set: same (1, 1), s1_io_flip (-1, 1), s2_io_flip
(-1, -1), both (1, -1). MIB's reference site is GPT-2's heads 7.3, 7.9, 8.6, 8.10 (its S-inhibition heads,
three quarters of the way up); here it is the residual stream at the last token after layer
``int(0.75 * n_layers) - 1``. A featurizer is then trained (MIB: the squared error of the logit difference
against the causal model's value, on the three flip sets together) and scored by that mean squared error on
each test set; a row's ``mse`` is the mean over the three sets. Examples are filtered to those the model
answers right on base and source (MIB's ``FilterExperiment``).
"""

from __future__ import annotations

import json
import random
import time

import numpy as np
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
    default_layers,
    evaluate,
    groups_of,
    layer_average,
    progress_bar,
    train_basis,  # fmt: skip
)

NAME = "mib-ioi"
METHODS = ("full_vector", "DAS", "DBM", "DBM+PCA")
VARIABLES = ("output_position", "output_token")
FLIPS = ("s1_io_flip", "s2_io_flip", "s1_ioi_flip_s2_ioi_flip")
SIGNALS = {"same": (1, 1), "s1_io_flip": (-1, 1), "s2_io_flip": (-1, -1), "s1_ioi_flip_s2_ioi_flip": (1, -1)}

PUBLISHED = {
    "source": "MIB (Mueller et al. 2025, arXiv 2504.13151) Table 3, as transcribed in ../shared/benchmarks/README.md",
    "metric": "MSE of the logit difference against MIB's linear causal model (lower is better)",
    "GPT-2 small": {"DAS": {"output_position": 2.20, "output_token": 2.08},
                    "DBM": {"output_position": 2.22, "output_token": 2.35},
                    "full_vector": {"output_position": 2.45, "output_token": 2.82}},
}  # fmt: skip


def causal_model(bias: float = 0.0, token_coeff: float = 0.0, position_coeff: float = 0.0) -> CausalModel:
    """MIB's IOI causal model with the linear model's coefficients.

    Example:
        >>> m = causal_model(0.5, 2.0, 1.0)
        >>> base = {"name_A": "Mary", "name_B": "John", "name_C": "John"}
        >>> m.run(base)["output_token"], m.run(base)["output_position"], m.run(base)["logit_diff"]
        ('Mary', 0, 3.5)
        >>> flip = {"name_A": "John", "name_B": "Mary", "name_C": "John"}      # s1_io_flip: position flips
        >>> m.interchange(base, {"output_position": flip})["logit_diff"]      # 0.5 + 2 - 1
        1.5
    """

    def token(a, b, c):
        return b if c == a else a if c == b else None

    def position(a, b, c):
        return 1 if c == a else 0 if c == b else None

    def logit_diff(a, b, c, tok, pos):
        t = 1 if tok == token(a, b, c) else -1
        p = 1 if pos == position(a, b, c) else -1
        return bias + token_coeff * t + position_coeff * p

    return CausalModel(
        {
            "name_A": None, "name_B": None, "name_C": None,
            "output_token": (("name_A", "name_B", "name_C"), token),
            "output_position": (("name_A", "name_B", "name_C"), position),
            "logit_diff": (("name_A", "name_B", "name_C", "output_token", "output_position"), logit_diff),
        },
        output="logit_diff",
    )  # fmt: skip


def signals(base: dict, source: dict) -> tuple[int, int]:
    """(position, token) signals of interchanging both variables from ``source``: MIB's regression inputs."""
    both = {"output_position": source, "output_token": source}
    pos = causal_model(0.0, 0.0, 1.0).interchange(base, both)["logit_diff"]
    tok = causal_model(0.0, 1.0, 0.0).interchange(base, both)["logit_diff"]
    return int(pos), int(tok)


def fit_linear(x: np.ndarray, y: np.ndarray) -> dict:
    """Ordinary least squares ``y ~ bias + position_coeff * x[:, 0] + token_coeff * x[:, 1]`` (MIB's fit).

    Example:
        >>> x = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]])
        >>> fit_linear(x, 0.5 + 2.0 * x[:, 1] + 1.0 * x[:, 0])
        {'bias': 0.5, 'token_coeff': 2.0, 'position_coeff': 1.0, 'r2': 1.0}
    """
    X = np.column_stack([np.ones(len(x)), np.asarray(x, dtype=float)])
    y = np.asarray(y, dtype=float)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / total if total > 0 else 1.0
    r = lambda v: round(float(v), 4)  # noqa: E731
    return {"bias": r(coef[0]), "token_coeff": r(coef[2]), "position_coeff": r(coef[1]), "r2": r(r2)}


def mse(diffs: torch.Tensor, targets: torch.Tensor) -> float:
    """MIB's IOI score: the mean squared error of the logit differences against the causal model's values.

    Example:
        >>> mse(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0]))
        1.0
    """
    return float(((diffs.float() - targets.float()) ** 2).mean())


def load_data(root) -> dict:
    """MIB's IOI names, objects, places and templates, checked."""
    out = {}
    for key in ("names", "objects", "places", "templates"):
        path = require(root, NAME, f"IOI_task/{key}.json")
        value = json.loads(path.read_text())
        if not value or not all(isinstance(v, str) for v in value):
            raise BenchmarkDataError(f"{path} is not a list of strings (MIB's format)")
        out[key] = value
    return out


def usable_templates(data: dict) -> list[str]:
    """Templates whose article fits MIB's objects ("a"/"an" before {object})."""
    vowel = any(o[0] in "aeiou" for o in data["objects"])
    return [t for t in data["templates"] if "an {object}" not in t or vowel]


def sample(rng: random.Random, data: dict, names: list[str]) -> dict:
    """A base: a template, a place, an object, subject S and indirect object IO in either order."""
    s, io = rng.sample(names, 2)
    a, b = (s, io) if rng.random() < 0.5 else (io, s)
    return {"template": rng.choice(usable_templates(data)), "place": rng.choice(data["places"]),
            "object": rng.choice(data["objects"]), "name_A": a, "name_B": b, "name_C": s}  # fmt: skip


def source(base: dict, kind: str) -> dict:
    """The counterfactual of ``kind`` for ``base`` (MIB's same / s1_io_flip / s2_io_flip / both)."""
    src = dict(base)
    if kind in ("s1_io_flip", "s1_ioi_flip_s2_ioi_flip"):
        src["name_A"], src["name_B"] = base["name_B"], base["name_A"]
    if kind in ("s2_io_flip", "s1_ioi_flip_s2_ioi_flip"):
        src["name_C"] = base["name_A"] if base["name_C"] == base["name_B"] else base["name_B"]
    return src


def prompt(s: dict) -> str:
    t = s["template"]
    fill = {k: s[k] for k in ("name_A", "name_B", "name_C", "place", "object")}
    return t.format(**fill) if "{name_C}" in t else t.format(**{k: v for k, v in fill.items() if k != "name_C"})


def run(lm=None, *, data=None, quick=False, layers=None, seed=0, progress=True, methods=None) -> dict:
    """Run the benchmark; see the module docstring. Returns the JSON-able result (``table``, ``sizes``, ...)."""
    check_options(NAME, layers=layers, methods=methods, known=METHODS, n_layers=lm.n_layers if lm else None)
    t0 = time.time()
    data = load_data(data_root(data))  # missing data: an error naming the repository, before the model loads
    lm = lm if lm is not None else load()
    check_options(NAME, layers=layers, methods=None, known=METHODS, n_layers=lm.n_layers)
    methods = list(methods) if methods else (["full_vector", "DAS"] if quick else list(METHODS))
    layers = list(layers) if layers else default_layers(lm.n_layers, quick)
    ref = int(0.75 * lm.n_layers) - 1
    n_train, n_test = (8, 8) if quick else (96, 48)
    steps = 3 if quick else 40
    names = [n for n in data["names"] if len(token_ids_or_none(lm, " " + n)) == 1]
    rng = random.Random(seed)
    bases = [sample(rng, data, names) for _ in range(n_train + n_test)]
    sets = {k: [source(b, k) for b in bases] for k in SIGNALS}
    vocab = token_ids(lm, [" " + n for n in names])
    col = {n: i for i, n in enumerate(names)}

    at = sorted(set(layers) | {ref})
    base = Prepared.of(lm, [prompt(b) for b in bases], layers=at, keep=True, progress=progress, desc="IOI bases")
    src = {"same": base}
    for k in FLIPS:
        src[k] = Prepared.of(lm, [prompt(s) for s in sets[k]], layers=at, progress=progress, desc=f"IOI {k}")
    unit = causal_model()
    io_ids = token_ids(lm, [" " + unit.run(b)["output_token"] for b in bases])
    ok = {k: [] for k in SIGNALS}
    for k in SIGNALS:
        want = token_ids(lm, [" " + unit.run(s)["output_token"] for s in sets[k]])
        ok[k] = ((base.top == io_ids) & (src[k].top == want)).tolist()
    rows = {k: [i for i, good in enumerate(ok[k]) if good] for k in SIGNALS}
    train = {k: [i for i in rows[k] if i < n_train] for k in SIGNALS}
    test = {k: [i for i in rows[k] if i >= n_train] for k in SIGNALS}
    io_col = torch.tensor([col[unit.run(b)["output_token"]] for b in bases])
    s_col = torch.tensor([col[b["name_C"]] for b in bases])

    def diffs(logits, r):
        r = torch.as_tensor(r)
        return logits.gather(1, io_col[r][:, None]).squeeze(1) - logits.gather(1, s_col[r][:, None]).squeeze(1)

    # the linear model: full-vector interchange at the reference layer, on the four training sets (MIB)
    xs, ys = [], []
    for k in SIGNALS:
        groups = groups_of(base, src[k].vectors[ref], train[k], lambda r, chosen: (r, chosen))
        got = evaluate(lm, base, groups, layer=ref, basis=None, vocab=vocab,
                       score=lambda lg, p: diffs(lg, p[0])[p[1]])  # fmt: skip
        ys += got.tolist()
        xs += [SIGNALS[k]] * len(got)
    linear = fit_linear(np.array(xs), np.array(ys)) | {"layer": ref, "n": len(ys)}
    model = causal_model(linear["bias"], linear["token_coeff"], linear["position_coeff"])

    table = []
    jobs = [(layer, var) for layer in layers for var in VARIABLES]
    for layer, var in progress_bar(jobs, progress, "IOI layer x variable"):
        targets = {k: torch.tensor([float(model.interchange(b, {var: s})["logit_diff"]) for b, s in
                                    zip(bases, sets[k])]) for k in FLIPS}  # fmt: skip

        def payload(k, targets=targets):
            return lambda r, chosen: (r, targets[k][r], chosen)

        for method in methods:
            basis = None
            if method != "full_vector":
                basis = _basis(method, lm.d_model, var, layer, base, src, train)
                groups = [g for k in FLIPS for g in groups_of(base, src[k].vectors[layer], train[k], payload(k))]

                def loss(logits, p):
                    r, target, chosen = p
                    return ((diffs(logits, r) - target) ** 2)[chosen].mean()

                if groups:
                    train_basis(lm, base, groups, layer=layer, basis=basis, loss=loss, steps=steps, lr=1e-2,
                                seed=seed, progress=progress, desc=f"{method} {var} L{layer}", vocab=vocab)  # fmt: skip
            per = {}
            for k in FLIPS:
                if not test[k]:
                    continue
                groups = groups_of(base, src[k].vectors[layer], test[k], payload(k))
                err = evaluate(lm, base, groups, layer=layer, basis=basis, vocab=vocab,
                               score=lambda lg, p: ((diffs(lg, p[0]) - p[1]) ** 2)[p[2]])  # fmt: skip
                per[k] = (float(err.mean()), len(err))
                table.append({"method": method, "variable": var, "layer": layer, "counterfactual": k,
                              "mse": round(per[k][0], 4), "n": per[k][1]})  # fmt: skip
            if per:
                table.append({"method": method, "variable": var, "layer": layer, "counterfactual": "all",
                              "mse": round(sum(m for m, _ in per.values()) / len(per), 4),
                              "n": sum(n for _, n in per.values())})  # fmt: skip
    return {
        "benchmark": NAME,
        "model": lm.spec.architecture,
        "table": table,
        "layer_average": layer_average(table, "mse"),
        "linear_model": linear,
        "sizes": {
            "bases": {"train": n_train, "test": n_test},
            "layers": layers,
            "methods": methods,
            "steps": steps,
            "das_rank": 32,
            "position": "last token, resid_post",
            "names": len(names),
            "task_accuracy": round(float((base.top == io_ids).float().mean()), 4),
            "kept": {k: {"train": len(train[k]), "test": len(test[k])} for k in SIGNALS},
        },  # fmt: skip
        "published": PUBLISHED,
        "seconds": round(time.time() - t0, 1),
    }


def token_ids_or_none(lm, word: str) -> list[int]:
    """The token ids of ``word`` (MIB keeps single-token names)."""
    return lm.tokenizer(word, add_special_tokens=False)["input_ids"]


def _basis(method, d, var, layer, base, src, train):
    if method == "DAS":
        return LowRankRotation(d, 32)  # MIB's IOI baselines: n_features 32
    if method == "DBM":
        return Mask("neurons", d_model=d, sparsity=0.0)
    rows = sorted({i for k in FLIPS for i in train[k]})
    acts = torch.cat([base.vectors[layer][rows]] + [src[k].vectors[layer][train[k]] for k in FLIPS])
    return Mask(pca(acts, min(acts.shape[0], d)), sparsity=0.0)
