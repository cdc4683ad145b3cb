"""Set-ups of the built-in tasks: the model, the pairs, the grid of sites and per-task defaults (no CLI here).

Example:
    >>> from interp.tasks import registry, setups
    >>> setups.POSITIONS["gender"]                       # the named positions the gender set-up offers
    ('name', 'verb', 'last')
    >>> registry.get("gender", "das") is setups.gender_setup
    True
    >>> ts = setups.TaskSetup(lm, train, test, {"last": last()}, layers=[0, 1], layer=1, position="last", rank=4)
    >>> ts.site(1, "last")
    Site('resid_post', 1, last())
    >>> ts.site(1, "name")
    Traceback (most recent call last):
    ValueError: position 'name': this task has positions ['last']

``interp das`` and ``interp sweep`` build a task with :func:`setup` (through :mod:`interp.tasks.registry`), and
so can a script: ``setup("gender", n=64, seed=0, model=None)`` loads the embedded model and splits the pairs.
The language-model tasks load their model with :func:`interp.load`; hierarchical-equality trains its own MLP.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from ..metrics import task_accuracy
from ..models import load
from ..sites import Site
from . import capitals, gender, ioi_position, registry
from . import hierarchical_equality as he
from .ioi import IOI_POSITIONS, ioi_pairs

# The names of the positions each built-in set-up offers (the set-ups below pick their positions by these names),
# known before a task is built so a command line can check its options first.
POSITIONS = {
    "hierarchical-equality": ("hidden",),
    "ioi": ("IO", "S2", "end"),
    "gender": ("name", "verb", "last"),
    "capitals": ("of", "country", "last"),
}
OWN_MODEL = ("hierarchical-equality",)  # tasks with their own MLP (sites by module path), not the language model


@dataclass
class TaskSetup:
    """Everything a DAS run on a task needs: model, pairs, the grid of sites, and per-task defaults."""

    lm: object
    train: object
    test: object
    positions: dict
    layers: list
    layer: int
    position: str
    rank: int
    component: str = "resid_post"
    basis: str = "lowrank"
    splits: tuple | None = None
    config: dict = field(default_factory=dict)
    task_accuracy: float = float("nan")
    extra: dict = field(default_factory=dict)
    threads: int | None = None  # tiny models run faster on one thread
    causal: object = None  # the task's CausalModel (probe targets are its variables' values)
    sweep_positions: list | None = None  # default positions of `interp sweep` (all when None)

    def site(self, layer: int, position: str) -> Site:
        """The site at ``layer`` and the task's named ``position``."""
        if position not in self.positions:
            raise ValueError(f"position {position!r}: this task has positions {list(self.positions)}")
        if self.component == "module":
            return Site.module(f"layers.{layer}", self.positions[position])
        return Site(self.component, layer, self.positions[position])


@contextlib.contextmanager
def threads(n: int | None):
    """Run the block on ``n`` torch threads (unchanged when ``n`` is None), restoring the count after."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def setup(task: str, *, n: int | None, seed: int, model: str | None) -> TaskSetup:
    """Build a task's model and train/test pairs (test is held out from training and early stopping).

    The task's loader comes from :mod:`interp.tasks.registry` (kind ``"das"``).
    """
    return registry.get(task, "das")(n=n, seed=seed, model=model)


def hierarchical_equality_setup(*, n: int | None, seed: int, model: str | None = None) -> TaskSetup:
    """Train the hierarchical-equality MLP (its own model: ``model`` is not used) and make its pairs."""
    with threads(1):
        mlp, acc = he.train_equality_mlp(seed=seed)
    pairs = he.equality_pairs(mlp, n=n or 20_000, seed=seed + 1)
    train, test = pairs.split(0.5, seed=seed)
    return TaskSetup(
        mlp, train, test, {POSITIONS["hierarchical-equality"][0]: he.FIRST_HIDDEN.pos}, list(range(he.N_LAYERS)), 0,
        "hidden", he.HIDDEN,
        component="module", basis="full", splits=(he.HIDDEN // 2, he.HIDDEN // 2),
        config=dict(steps=2000, batch_size=256, lr=5e-3, eval_every=250, patience=0, eval_batch_size=4096),
        task_accuracy=acc, threads=1, causal=he.causal_model(),
    )  # fmt: skip


def gender_setup(*, n: int | None, seed: int, model: str | None) -> TaskSetup:
    """The pronoun's gender (G) of "Emma laughed because" -> " she" on the language model."""
    lm = load(model)
    # layer 14 / last: rank-1 DAS and whole-vector patching both move G there (notebook 03). At layer 10 / last
    # rank-1 DAS reaches 1.00 but patching the whole vector 0.00: a direction that acts, not where G is kept
    return _lm_setup(
        lm, gender.gender_pairs(lm, n=n or 256, seed=seed), seed,
        {k: gender.GENDER_POSITIONS[k] for k in POSITIONS["gender"]}, 14, "last", 1,
        config=dict(steps=80, batch_size=32, lr=2e-2, eval_every=40, patience=0), causal=gender.causal_model(),
    )  # fmt: skip


def ioi_setup(*, n: int | None, seed: int, model: str | None) -> TaskSetup:
    """The indirect object's position in IOI prompts on the language model."""
    lm = load(model)
    positions = {k: ioi_position.IOI_POSITIONS[k] for k in POSITIONS["ioi"]}
    # sweep defaults sized for a few minutes on a 2-core CPU: the long IOI/capitals prompts get fewer cells
    return _lm_setup(
        lm, ioi_position.ioi_position_pairs(lm, n=n or 256, seed=seed), seed, positions, 9, "end", 1,
        config=dict(steps=60, batch_size=16, lr=5e-3, eval_every=20, patience=2), causal=ioi_position.causal_model(),
        sweep_positions=["end"],
    )  # fmt: skip


def capitals_setup(*, n: int | None, seed: int, model: str | None) -> TaskSetup:
    """The country of "The capital of France is" -> " Paris" on the language model (countries it knows)."""
    lm = load(model)
    known = capitals.known_countries(lm)
    pairs = capitals.capital_pairs(lm, n=n or 1024, seed=seed, countries=known)  # 84 values need more pairs
    positions = capitals.capital_positions(lm)
    # the country's identity (84 values) needs a wide subspace: rank 16 / 192 pairs gave test IIA 0.0-0.25
    # (train 0.8: memorised); rank 64 on 768 train pairs at layer 8's country token: test 0.52 at 80 steps
    return _lm_setup(
        lm, pairs, seed, {k: positions[k] for k in POSITIONS["capitals"]}, 8, "country", 64,
        config=dict(steps=80, batch_size=16, lr=1e-2, eval_every=20, patience=2),
        causal=capitals.causal_model(known), sweep_positions=["country", "last"],
    )  # fmt: skip


def _lm_setup(lm, pairs, seed, positions, layer, position, rank, *, config, causal, sweep_positions=None):
    """The part every language-model task shares: the split, the task accuracy and the layer grid."""
    train, test = pairs.split(0.75, seed=seed)
    acc = task_accuracy(lm, pairs.base, pairs.base_labels, candidates=pairs.candidates)
    layers = list(range(0, lm.n_layers, 3))
    return TaskSetup(
        lm, train, test, positions, layers, layer, position, rank, config=config, task_accuracy=acc, causal=causal,
        sweep_positions=sweep_positions,
    )  # fmt: skip


def ioi_patch_task(n: int, *, seed: int):
    """The ``ioi`` patching task (kind ``"patch"``): ``n`` pairs and the positions to patch."""
    return ioi_pairs(n, seed=seed), IOI_POSITIONS


__all__ = [
    "POSITIONS",
    "OWN_MODEL",
    "TaskSetup",
    "threads",
    "setup",
    "hierarchical_equality_setup",
    "gender_setup",
    "ioi_setup",
    "capitals_setup",
    "ioi_patch_task",
]
