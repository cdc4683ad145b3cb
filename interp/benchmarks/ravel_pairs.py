"""A RAVEL instance for one model: the city prompts it gets right, and Cause / Isolate pairs per split.

Example:
    >>> sorted(QUICK["pairs"]), QUICK["templates"]
    (['test', 'train', 'val'], 1)
    >>> inst = build(gemma, load_city(), sizes=QUICK, seed=0, progress=False)                  # doctest: +SKIP
    >>> inst.cause["train"].variables, len(inst.cause["train"]), len(inst.isolate["train"])     # doctest: +SKIP
    (('Country',), 48, 48)

RAVEL's protocol (``explanare/ravel``, ``src/utils/generate_ravel_instance.py``), sized for a CPU:

- entities: sampled from RAVEL's entity splits (train to fit, val to stop early, test to score); templates:
  RAVEL's *train* prompt split (its entity-split evaluation: unseen entities, known templates): per attribute,
  the ``templates`` the model answers best on ``probe_entities`` train cities among the ``candidates`` shortest;
- filter: a prompt ``template % entity`` is kept when the model's next token is the first token of the entity's
  value (the model knows it), as RAVEL keeps only the examples the model gets right;
- Cause pair (target attribute, e.g. Country): base ``t % e1`` with ``t`` a target template, source any kept
  template about ``e2``; label: the first token of ``e2``'s value under ``t`` (both prompts known, tokens differ);
- Isolate pair (another attribute B): base ``t_B % e1``, the same kind of source; label: ``e1``'s own B token; the
  source has a different B token (the interchange could change it) and a different target value;
- sources are drawn with weights ``1 / (c + count)`` of their value (RAVEL's balancing), so frequent countries do
  not dominate; the interchange is at the last token of the entity mention in both prompts (:class:`EntityEnd`).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from interp.batches import chunks, rows
from interp.causal import Pairs
from interp.dii import run
from interp.errors import BenchmarkDataError

from .ravel_data import City, EntityEnd, answer_token

SPLITS = ("train", "val", "test")
# entities per split, templates per attribute, pairs per split and task (cause, and each isolate attribute)
# (templates kept out of the ``candidates`` shortest, chosen on ``probe_entities`` train cities)
QUICK = {"entities": {"train": 30, "val": 12, "test": 20}, "templates": 1, "candidates": 3, "probe_entities": 6,
         "pairs": {"train": 32, "val": 16, "test": 16}}  # fmt: skip
FULL = {"entities": {"train": 240, "val": 60, "test": 100}, "templates": 2, "candidates": 6, "probe_entities": 12,
        "pairs": {"train": 256, "val": 64, "test": 128}}  # fmt: skip


@dataclass
class Instance:
    """What :func:`build` made: pairs per split, the prompts and labels featurizers read, and the counts."""

    target: str
    others: tuple
    pos: EntityEnd
    templates: dict  # attribute -> kept templates
    cause: dict  # split -> Pairs (labels: the source entity's target value)
    isolate: dict  # split -> Pairs (labels = base_labels: the base entity's value of another attribute)
    acts_prompts: list  # train prompts (kept templates x train entities) for unsupervised featurizers
    acts_values: list  # their entities' target values (labels for DiffMean, the probe)
    sizes: dict = field(default_factory=dict)


@torch.no_grad()
def predictions(lm, prompts: list[str], *, batch_size: int = 64, progress: bool = False) -> list[int]:
    """The model's next-token argmax after each prompt."""
    out = []
    it = chunks(len(prompts), batch_size)
    if progress:
        it = tqdm(list(it), desc="RAVEL: what the model knows", leave=False)
    for sl in it:
        out += run(lm, rows(lm, prompts[sl])).predictions().tolist()
    return out


def pick_templates(lm, city: City, attribute: str, entities: list[str], k: int, shortest: int,
                   progress: bool = False) -> list[str]:  # fmt: skip
    """The ``k`` templates the model answers best on ``entities`` (ties: the shorter) among the ``shortest``
    train-split templates of ``attribute`` (short prompts keep a CPU run small)."""
    cands = sorted(city.templates(attribute, "train"), key=lambda t: (len(t), t))[:shortest]
    if not cands:
        raise BenchmarkDataError(f"RAVEL city has no train-split template for {attribute!r}")
    prompts = [t % e for t in cands for e in entities]
    preds = predictions(lm, prompts, progress=progress)
    want = [answer_token(lm.tokenizer, t, city.attributes[e][attribute]) for t in cands for e in entities]
    m = len(entities)
    hits = [sum(preds[j * m + i] == want[j * m + i] for i in range(m)) for j in range(len(cands))]
    order = sorted(range(len(cands)), key=lambda j: (-hits[j], j))  # cands are sorted by length
    return [cands[j] for j in order[:k] if hits[j] > 0]


def _draw(rng, base_keys, candidates, n, weight):
    """``n`` (base, source) entity draws: a base uniformly, then a source among its candidates by weight."""
    out = []
    usable = [b for b in base_keys if candidates(b)]
    for _ in range(n if usable else 0):
        b = rng.choice(usable)
        cands = candidates(b)
        s = rng.choices(cands, weights=[weight(c) for c in cands], k=1)[0]
        out.append((b, s))
    return out


def build(lm, city: City, *, target: str = "Country", others=("Continent", "Language"), sizes=QUICK, seed: int = 0,
          progress: bool = True) -> Instance:  # fmt: skip
    """Sample entities, keep the templates and prompts the model knows, and draw Cause / Isolate pairs."""
    rng = random.Random(seed)
    tok = lm.tokenizer
    attrs = (target, *others)
    ents = {}
    for s in SPLITS:
        pool = [e for e in city.entities(s) if all(city.attributes[e].get(a) for a in attrs)]
        ents[s] = rng.sample(pool, min(sizes["entities"][s], len(pool)))
    probe = ents["train"][: sizes["probe_entities"]]
    templates = {a: pick_templates(lm, city, a, probe, sizes["templates"], sizes["candidates"], progress)
                 for a in attrs}  # fmt: skip
    for a, ts in templates.items():
        if not ts:
            raise BenchmarkDataError(f"the model answers no RAVEL template of {a!r} on {len(probe)} train cities")
    every = [e for s in SPLITS for e in ents[s]]
    grid = [(a, t, e) for a in attrs for t in templates[a] for e in every]
    preds = predictions(lm, [t % e for _, t, e in grid], progress=progress)
    token = {(t, e): answer_token(tok, t, city.attributes[e][a]) for a, t, e in grid}
    known = {(t, e) for (a, t, e), p in zip(grid, preds) if p == token[(t, e)]}
    accuracy = {a: sum((t, e) in known for t in templates[a] for e in every) / (len(templates[a]) * len(every))
                for a in attrs}  # fmt: skip

    pos = EntityEnd(tok)
    all_templates = [t for a in attrs for t in templates[a]]
    counts = Counter(city.attributes[e][target] for e in every)

    def pairs_for(split: str, attr: str, n: int) -> Pairs:
        es = ents[split]
        bases = [(t, e) for t in templates[attr] for e in es if (t, e) in known]

        def candidates(b):
            t, e1 = b
            return [e2 for e2 in es if e2 != e1 and (t, e2) in known and token[(t, e2)] != token[(t, e1)]
                    and city.attributes[e2][target] != city.attributes[e1][target]]  # fmt: skip

        draws = _draw(rng, bases, candidates, n, lambda e2: 1.0 / (5 + counts[city.attributes[e2][target]]))
        base, source, labels, base_labels = [], [], [], []
        for (t, e1), e2 in draws:
            base.append(pos.add(t, e1))
            source.append(pos.add(rng.choice(all_templates), e2))
            base_labels.append(token[(t, e1)])
            labels.append(token[(t, e2)] if attr == target else token[(t, e1)])
        return Pairs((target,), base, [source], labels, base_labels)

    cause, isolate = {}, {}
    for s in SPLITS:
        n = sizes["pairs"][s]
        cause[s] = pairs_for(s, target, n)
        parts = [pairs_for(s, b, n // len(others) + (j < n % len(others))) for j, b in enumerate(others)]
        isolate[s] = Pairs.concat(*[p for p in parts if len(p)])
        if not len(cause[s]) or not len(isolate[s]):
            raise BenchmarkDataError(
                f"RAVEL {s}: no pairs the model knows ({len(cause[s])} cause, {len(isolate[s])} isolate) among "
                f"{len(ents[s])} cities; give more entities"
            )
    acts = [(t, e) for t in all_templates for e in ents["train"]]
    acts_prompts = [pos.add(t, e) for t, e in acts]
    sizes_out = {
        "entities": {s: len(ents[s]) for s in SPLITS},
        "templates": {a: len(templates[a]) for a in attrs},
        "model_accuracy": {a: round(v, 3) for a, v in accuracy.items()},
        "cause_pairs": {s: len(cause[s]) for s in SPLITS},
        "isolate_pairs": {s: len(isolate[s]) for s in SPLITS},
        "featurizer_prompts": len(acts_prompts),
    }
    return Instance(target, tuple(others), pos, templates, cause, isolate, acts_prompts,
                    [city.attributes[e][target] for _, e in acts], sizes_out)  # fmt: skip


__all__ = ["FULL", "QUICK", "SPLITS", "Instance", "build", "pick_templates", "predictions"]
