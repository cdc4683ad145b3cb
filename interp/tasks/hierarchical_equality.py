"""Hierarchical equality (Geiger et al. 2023): does ``(a == b) == (c == d)``, and where are the two equalities?

Example:
    >>> mlp, acc = train_equality_mlp(seed=0, steps=100)   # 3 hidden layers of 16, 4-dim entities
    >>> train, test = equality_pairs(mlp, n=200, seed=1).split(0.5)
    >>> das = fit_das(mlp, train, at=FIRST_HIDDEN, via=Rotation(16), splits=(8, 8), test=test, steps=5)
    >>> das.iia_test, iia(mlp, test, at=FIRST_HIDDEN, via=neuron_aligned(16, (8, 8)))   # DAS, neurons
    (0.57, 0.49)

Runs this short leave everything near chance; the experiment itself trains the MLP at the default length
(``train_equality_mlp(seed=0)``, 40 s, accuracy 1.0) and fits DAS on ``equality_pairs(mlp, n=20_000, seed=1)``
with the default steps.

The causal model has inputs W, X, Y, Z (entities), intermediate variables WX = (W == X) and YZ = (Y == Z), and
output O = (WX == YZ). Entities are random 4-dim vectors (a fixed pool, so inputs are ids); the network sees the
four vectors concatenated. DAS with a full rotation of the first hidden layer aligns WX with rotated dims
0..7 and YZ with dims 8..15; the neuron-aligned baseline interchanges the raw neurons 0..7 and 8..15 instead.

The MLP runs through the same nnsight path as a language model: it takes ``input_ids`` where each "token" is one
whole example (the four entity ids packed into one integer), returns ``.logits`` over the two answers
(0 = False, 1 = True), and its hidden layers are ``layers.0`` .. ``layers.2`` (addressed with
``Site.module``). ``interp.LM(mlp)`` wraps it; its spec reads ``mlp.config``.
"""

from __future__ import annotations

import itertools
import random
from types import SimpleNamespace

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutput

from .. import optim
from ..causal import CausalModel, Pairs
from ..models import LM
from ..positions import last
from ..sites import Site

ENTITY_DIM = 4
HIDDEN = 16
N_LAYERS = 3
N_ENTITIES = 2**15  # a large pool: the network must learn equality itself, not memorise entities
FIRST_HIDDEN = Site.module("layers.0", last())
VARIABLES = ("WX", "YZ")


class EqualityMLP(nn.Module):
    """A 3-hidden-layer ReLU MLP over four concatenated entity vectors, with a language-model interface.

    Example:
        >>> mlp = EqualityMLP(seed=0)
        >>> mlp(torch.tensor([[pack(1, 1, 2, 2)]])).logits.shape      # (B, T, 2)
        torch.Size([1, 1, 2])
    """

    def __init__(self, *, n_entities: int = N_ENTITIES, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.n_entities = n_entities
        self.register_buffer("entities", torch.rand(n_entities, ENTITY_DIM, generator=g) * 2 - 1)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            dims = [4 * ENTITY_DIM] + [HIDDEN] * N_LAYERS
            self.layers = nn.ModuleList(nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in zip(dims, dims[1:]))
            self.head = nn.Linear(HIDDEN, 2)
        # what interp.ModelSpec reads: width of the hidden layers, depth and the answer "vocabulary"
        self.config = SimpleNamespace(
            hidden_size=HIDDEN, num_attention_heads=1, num_hidden_layers=N_LAYERS, vocab_size=2
        )

    def unpack(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) packed ids -> (B, T, 16) concatenated entity vectors."""
        n, ids, parts = self.n_entities, input_ids.long(), []
        for _ in range(4):
            ids, r = torch.div(ids, n, rounding_mode="floor"), ids % n
            parts.append(self.entities[r])
        return torch.cat(parts[::-1], dim=-1)

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=None, **_):
        h = self.unpack(input_ids)  # (B, T, 16); each position is one independent example
        for layer in self.layers:
            h = layer(h)
        if isinstance(logits_to_keep, torch.Tensor):
            h = h[:, logits_to_keep]
        elif isinstance(logits_to_keep, int) and logits_to_keep > 0:
            h = h[:, -logits_to_keep:]
        return CausalLMOutput(logits=self.head(h))  # (B, T', 2)

    def classify(self, vectors: torch.Tensor) -> torch.Tensor:
        """Logits (..., 2) straight from concatenated entity vectors (..., 16): the training path."""
        h = vectors
        for layer in self.layers:
            h = layer(h)
        return self.head(h)


def pack(w: int, x: int, y: int, z: int, n: int = N_ENTITIES) -> int:
    """One integer for the four entity ids (the MLP's single input token)."""
    return ((w * n + x) * n + y) * n + z


def causal_model() -> CausalModel:
    """W, X, Y, Z -> WX = (W == X), YZ = (Y == Z) -> O = (WX == YZ)."""
    return CausalModel(
        {
            "W": None,
            "X": None,
            "Y": None,
            "Z": None,
            "WX": (("W", "X"), lambda w, x: w == x),
            "YZ": (("Y", "Z"), lambda y, z: y == z),
            "O": (("WX", "YZ"), lambda a, b: a == b),
        }
    )


def sample(rng: random.Random, n: int = N_ENTITIES) -> dict:
    """Inputs with each equality true half the time (so O is balanced)."""
    w, y = rng.randrange(n), rng.randrange(n)
    x = w if rng.random() < 0.5 else (w + rng.randrange(1, n)) % n  # a different entity
    z = y if rng.random() < 0.5 else (y + rng.randrange(1, n)) % n
    return {"W": w, "X": x, "Y": y, "Z": z}


def _render(s: dict) -> list[int]:
    return [pack(s["W"], s["X"], s["Y"], s["Z"])]


def train_equality_mlp(
    *,
    seed: int = 0,
    steps: int = 20_000,
    batch_size: int = 512,
    lr: float = 3e-3,
    l1: float = 0.0,
    n_test: int = 10_000,
) -> tuple[LM, float]:
    """Train the MLP on fresh random entity vectors; returns the wrapped model and its held-out accuracy.

    Each training example draws new uniform [-1, 1]^4 vectors (as in Geiger et al. 2023 and pyvene's tutorial),
    with each equality true half the time, so the network must learn equality itself. The default length
    (10M examples, about 40 s on one CPU thread) reaches accuracy 1.0000 for seeds 0-3; 1.5M examples (the old
    default) left it at 0.999. Accuracy is measured through the LM path, on entities from the model's pool.

    Example:
        >>> train_equality_mlp(seed=0)[1]                    # the default length: 40 s  # doctest: +SKIP
        1.0
        >>> mlp, acc = train_equality_mlp(seed=0, steps=100)  # a short run stays near chance
        >>> mlp, round(acc, 2)
        (LM(EqualityMLP, n_layers=3, d_model=16, n_heads=1, head_dim=16), 0.51)
    """
    net = EqualityMLP(seed=seed)
    g = torch.Generator().manual_seed(seed)

    def batch(size):  # (size, 16) vectors w|x|y|z and labels O = (w == x) == (y == z)
        w, x, y, z = torch.rand(4, size, ENTITY_DIM, generator=g) * 2 - 1
        same = torch.rand(2, size, 1, generator=g) < 0.5
        x, z = torch.where(same[0], w, x), torch.where(same[1], y, z)
        return torch.cat([w, x, y, z], -1), (same[0, :, 0] == same[1, :, 0]).long()

    def loss(b):
        vectors, ys = b
        value = nn.functional.cross_entropy(net.classify(vectors), ys)
        if l1:  # sparse input weights: each first-layer unit tends to read fewer entities
            value = value + l1 * net.layers[0][0].weight.abs().sum()
        return value

    with torch.random.fork_rng():
        torch.manual_seed(seed)  # Adam (no weight decay), the learning rate annealed to 0 on a cosine
        batches = (batch(batch_size) for _ in itertools.count())
        optim.train(list(net.parameters()), loss, batches, steps=steps, lr=lr, schedule="cosine")
    net.eval()
    rng = random.Random(seed + 10_000)
    settings = [sample(rng, net.n_entities) for _ in range(n_test)]
    ids = torch.tensor([[pack(s["W"], s["X"], s["Y"], s["Z"], net.n_entities)] for s in settings])
    ys = torch.tensor([int((s["W"] == s["X"]) == (s["Y"] == s["Z"])) for s in settings])
    with torch.no_grad():
        acc = float((net(ids).logits[:, 0].argmax(-1) == ys).float().mean())
    return LM(net), acc


def equality_pairs(
    lm: LM | None = None, *, n: int = 20_000, seed: int = 0, variables=VARIABLES, changed_only: bool = False
) -> Pairs:
    """Counterfactual pairs interchanging WX, YZ or both (each a third of the examples), rendered as ids.

    Example:
        >>> pairs = equality_pairs(n=1000, seed=0)
        >>> pairs.variables, pairs.base[0], pairs.labels[0]
        (('WX', 'YZ'), [888326951789734365], 0)
    """
    variables = tuple(variables)
    subsets = [(v,) for v in variables] + ([variables] if len(variables) > 1 else [])
    data = causal_model().counterfactuals(
        sample, variables=variables, n=n, seed=seed, subsets=subsets, changed_only=changed_only
    )
    return data.render(_render, int)
