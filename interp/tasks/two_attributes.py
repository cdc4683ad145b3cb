"""Two correlated attributes of an entity, read out through overlapping directions: the planted model on which DAS
trained for Cause alone fails to isolate and MDAS (:func:`interp.mdas.fit_mdas`) does not.

Example:
    >>> net = TwoAttributes(seed=0)
    >>> lm = interp.LM(net)                              # a one-"layer" model; its hidden vector is "encoder"
    >>> cause, iso = attribute_pairs(net, 64, seed=1), attribute_pairs(net, 64, seed=2, ask="B")
    >>> cause.labels[:4], iso.labels == iso.base_labels  # cause: the source's A; isolation: the base's B
    ([0, 0, 0, 1], True)

Each entity ``e`` has attributes ``a, b`` in {0, 1}, equal for a fraction ``rho`` of the entities, stored at
orthonormal directions ``u, v`` of its hidden vector ``h = a u + b v`` (plus a little noise). Asked for A the
model thresholds ``h . (u + gamma v)`` (answer tokens 0 / 1); asked for B, ``h . (v + gamma u)`` (tokens 2 / 3):
each answer leans on the other attribute's direction, as a model that learned correlated facts would, yet is
always right. A prompt is one token ``2 e + question`` (question 0: A, 1: B).

The interchange along ``u`` alone moves A and nothing else. Along a direction tilted toward ``v`` it moves A
*more* on correlated pairs (``v`` carries A too there), so DAS trained for Cause alone tilts toward ``v``, and
then also moves B: Isolate near 0, as DAS on RAVEL. Isolation examples (interchange A, ask B, keep the base's B)
pull the direction back to ``u``. ``tests/test_mdas.py`` asserts it.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutput

from ..causal import Pairs
from ..positions import last
from ..sites import Site

HIDDEN_SITE = Site.module("encoder", last())


class EntityTable(nn.Module):
    """Entity id -> its hidden vector (a fixed table): the site the interchange edits."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table[ids]


class TwoAttributes(nn.Module):
    """The planted model (see the module docstring) with a language-model interface: ``input_ids`` -> ``.logits``.

    Example:
        >>> net = TwoAttributes(n_entities=8, seed=0)
        >>> net(torch.tensor([[0, 1]])).logits.shape          # entity 0 asked for A, then for B: (B, T, 4)
        torch.Size([1, 2, 4])
    """

    def __init__(self, *, n_entities: int = 40, width: int = 8, gamma: float = 0.5, rho: float = 1.0,
                 scale: float = 10.0, noise: float = 0.05, seed: int = 0):  # fmt: skip
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        a = torch.randint(0, 2, (n_entities,), generator=g)
        b = torch.where(torch.rand(n_entities, generator=g) < rho, a, 1 - a)
        q, _ = torch.linalg.qr(torch.randn(width, width, generator=g))
        u, v = q[:, 0], q[:, 1]
        table = a[:, None] * u + b[:, None] * v + noise * torch.randn(n_entities, width, generator=g)
        self.a, self.b = a.tolist(), b.tolist()
        self.encoder = EntityTable(table.float())
        self.register_buffer("readouts", torch.stack([u + gamma * v, v + gamma * u]))  # asked A, asked B
        self.register_buffer("directions", torch.stack([u, v]))
        self.threshold, self.scale = (1 + gamma) / 2, scale
        self.config = SimpleNamespace(hidden_size=width, num_attention_heads=1, num_hidden_layers=1, vocab_size=4)

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=None, **_):
        ids = input_ids.long()
        h, ask = self.encoder(torch.div(ids, 2, rounding_mode="floor")), ids % 2
        if isinstance(logits_to_keep, torch.Tensor):
            h, ask = h[:, logits_to_keep], ask[:, logits_to_keep]
        elif isinstance(logits_to_keep, int) and logits_to_keep > 0:
            h, ask = h[:, -logits_to_keep:], ask[:, -logits_to_keep:]
        z = self.scale * (h @ self.readouts.T - self.threshold) / 2  # (B, T, 2): evidence for A = 1, B = 1
        z = torch.where(ask.bool(), z[..., 1], z[..., 0])
        off = torch.full_like(z, -30.0)  # the other attribute's answer tokens
        asked_a = torch.stack([-z, z, off, off], -1)
        asked_b = torch.stack([off, off, -z, z], -1)
        return CausalLMOutput(logits=torch.where(ask.bool()[..., None], asked_b, asked_a))


def attribute_pairs(net: TwoAttributes, n: int, *, seed: int = 0, interchange: str = "A", ask: str | None = None,
                    changed_only: bool = True) -> Pairs:  # fmt: skip
    """``n`` pairs interchanging ``interchange`` (A or B) between two random entities, the base prompt asking for
    ``ask`` (default: the same attribute: cause pairs, labelled with the source's value; the other one: isolation
    pairs, labelled with the base's value). ``changed_only``: only entity pairs whose interchanged attribute
    differs (so every cause label differs from the base's answer).

    Example:
        >>> iso = attribute_pairs(TwoAttributes(seed=0), 8, ask="B")   # interchange A, ask B: keep the base's B
        >>> iso.variables, iso.labels == iso.base_labels
        (('A',), True)
    """
    ask = ask or interchange
    if {interchange, ask} - {"A", "B"}:
        raise ValueError(f"interchange and ask must be 'A' or 'B'; got {interchange!r}, {ask!r}")
    values = {"A": net.a, "B": net.b}
    q, offset = (0, 0) if ask == "A" else (1, 2)  # question token, first answer token
    rng, rows = random.Random(seed), []
    while len(rows) < n:
        e, s = rng.randrange(len(net.a)), rng.randrange(len(net.a))
        if changed_only and values[interchange][e] == values[interchange][s]:
            continue
        base_answer = offset + values[ask][e]
        label = offset + values[ask][s] if ask == interchange else base_answer
        rows.append(([2 * e + q], [2 * s + q], label, base_answer))
    base, source, labels, base_labels = (list(x) for x in zip(*rows))
    return Pairs((interchange,), base, [source], labels, base_labels)


__all__ = ["HIDDEN_SITE", "TwoAttributes", "attribute_pairs"]
