"""Steering baselines for ReFT: a direction from contrastive activations, added with :class:`interp.Steer`.

Example:
    >>> site = Site("resid_post", 0, last())
    >>> v = diff_in_means(lm, prompts[:4], prompts[4:], site)            # mean(pos) - mean(neg) at the site
    >>> v.shape
    torch.Size([32])
    >>> steered = steer(lm, Site("resid_post", 0, all_tokens()), v, scale=4.0)   # every prompt token
    >>> interp.run(steered, prompts).logits.shape                         # any interp call takes it, as a ReftModel
    torch.Size([8, 97])
    >>> reft.generate_ids(lm, prompts, serve=[steered] * 8, max_new_tokens=3).new_ids.shape
    torch.Size([8, 3])

Two directions, both means of activations over contrastive inputs:

- :func:`diff_in_means`: the mean activation at a site over positive inputs minus that over negative inputs
  (where a site's position holds several tokens, each input's tokens are averaged first);
- :func:`caa`, contrastive activation addition (Rimsky et al., ACL 2024, "Steering Llama 2 via Contrastive
  Activation Addition"): each item is a question with two answers, one showing the behaviour; it is written
  as an A/B multiple-choice prompt, completed once with the behaviour's letter and once with the other's, and
  the direction is the mean difference of the activations at that answer letter (the letters alternate
  between items so that the direction does not learn "A" against "B"). Being a mean of paired differences,
  it equals :func:`diff_in_means` on the two completions at the letter's position, which is how it is computed.

:func:`steer` returns a :class:`Steering`: ``h + scale * vector`` at a site's positions, served like a
:class:`reft.ReftModel` (it builds the same engine ops), so it runs under :func:`reft.generate_ids` (``serve=``),
:func:`reft.train.evaluate` (through :func:`reft.model.serve_logits`) and interp's analysis calls. Positions are
prompt positions (``last()``, ``all_tokens()``, ...) and, where :func:`interp.positions.generated` or ``recent(k)``
is part of them, every generated token too (each new token is edited as it is decoded; in teacher forcing, every
response token).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from interp import sites as _sites
from interp.dii import collect
from interp.engine import Op, options
from interp.interventions import Steer
from interp.position_text import parse_positions
from interp.positions import Position, all_tokens, last
from interp.sites import Site

from .interventions import ReftError
from .model import position_inputs, serve_logits, step_index


def all_prompt() -> Position:
    """Deprecated: :func:`interp.positions.all_tokens` (every prompt token), a kind that saves and loads."""
    warnings.warn("reft.steering.all_prompt() is now interp.positions.all_tokens()", DeprecationWarning, stacklevel=2)
    return all_tokens()


def parse_steer_positions(text: str) -> Position:
    """Deprecated: :func:`reft.parse_positions`, the one parser of positions, reads ``"all"`` and ``"all+g"`` too."""
    warnings.warn("reft.steering.parse_steer_positions is now reft.parse_positions", DeprecationWarning, stacklevel=2)
    return parse_positions(text)


def activations(lm, inputs, site: Site, *, batch_size: int = 16) -> torch.Tensor:
    """``(N, width)``: each input's activation at ``site``, averaged over the site's positions in that input.

    Example:
        >>> activations(lm, prompts, Site("resid_post", 1, first(2))).shape
        torch.Size([8, 32])
    """
    if site.pos.decodes:
        raise ReftError(f"{site!r}: a direction is read from fixed inputs, which have no generated tokens")
    inputs = list(inputs) if not isinstance(inputs, torch.Tensor) else inputs
    if len(inputs) == 0:
        raise ReftError("no inputs to read activations from")
    with options(backend="hooks"):
        return collect(lm, inputs, at=site, batch_size=batch_size, mean=True)


def diff_in_means(lm, pos_prompts, neg_prompts, site: Site, *, batch_size: int = 16) -> torch.Tensor:
    """``mean(activations(pos)) - mean(activations(neg))`` at ``site``, a (width,) float32 vector.

    Example:
        >>> site = Site("resid_post", 1, last())
        >>> v = diff_in_means(lm, prompts[:3], prompts[3:], site)
        >>> mean = lambda x: collect(lm, x, at=site)[:, 0].mean(0)      # (B, 1, d) -> (d,)
        >>> torch.allclose(v, mean(prompts[:3]) - mean(prompts[3:]), atol=1e-5)
        True
    """
    return activations(lm, pos_prompts, site, batch_size=batch_size).mean(0) - activations(
        lm, neg_prompts, site, batch_size=batch_size
    ).mean(0)


CAA_TEMPLATE = "{question}\n\nChoices:\n(A) {a}\n(B) {b}\nAnswer: ("


def caa_prompts(items: Sequence[dict], *, template: str = CAA_TEMPLATE) -> tuple[list[str], list[str]]:
    """A/B prompts for :func:`caa`: ``(matching, other)``, each an item's question completed with a letter.

    ``items``: dicts with ``question``, ``matching`` (the answer showing the behaviour) and ``other``. Item ``i``
    puts the matching answer under (A) when ``i`` is even, under (B) when odd.

    Example:
        >>> pos, neg = caa_prompts([{"question": "Hi?", "matching": "Squawk!", "other": "Hello."}])
        >>> pos[0][-21:], neg[0][-1:]
        ('(B) Hello.\\nAnswer: (A', 'B')
    """
    pos, neg = [], []
    for i, it in enumerate(items):
        missing = [k for k in ("question", "matching", "other") if k not in it]
        if missing:
            raise ReftError(f"CAA item {i} lacks {missing}; expected question, matching and other")
        a, b, letter = (it["matching"], it["other"], "A") if i % 2 == 0 else (it["other"], it["matching"], "B")
        text = template.format(question=it["question"], a=a, b=b)
        pos.append(text + letter)
        neg.append(text + ("B" if letter == "A" else "A"))
    return pos, neg


def caa(lm, items: Sequence[dict], *, layer: int, component: str = "resid_post", batch_size: int = 16) -> torch.Tensor:
    """The CAA direction at ``component`` of ``layer``: mean over items of the activation at the answer letter
    (the last token) after the matching letter minus after the other letter. Needs a tokenizer (the items are
    text); on token ids, call :func:`diff_in_means` at ``last()`` on your own completions.
    """
    if lm.tokenizer is None:
        raise ReftError("caa() writes A/B prompts as text and needs a tokenizer; use diff_in_means on token ids")
    pos, neg = caa_prompts(items)
    return diff_in_means(lm, pos, neg, Site(component, layer, last()), batch_size=batch_size)


class Steering:
    """``h + scale * vector`` (:class:`interp.Steer`) at ``site``'s positions: served like a ReftModel.

    Positions count over each row's prompt (the ``prompt_mask`` of a ReFT batch, else the whole input); a
    decode-time part (``generated()``, ``recent(k)``) also takes the response tokens in teacher forcing and every
    new token while generating.
    """

    def __init__(self, lm, site: Site, vector: torch.Tensor, scale: float = 1.0):
        if not isinstance(site, Site) or not isinstance(site.pos, Position):
            raise ReftError(f"steer(): expected an interp.Site with a typed position; got {site!r}")
        self.lm = lm
        self.site = site
        self.target = _sites.resolve(lm, site)
        self.steer = Steer(torch.as_tensor(vector, dtype=torch.float32).detach(), scale)  # checked where it is
        self.steer.check(self.target.width)
        self.steer.vector = self.steer.vector.to(lm.device)

    @property
    def vector(self) -> torch.Tensor:
        return self.steer.vector

    @property
    def scale(self) -> float:
        return self.steer.scale

    @property
    def decodes(self) -> bool:
        return self.site.pos.decodes

    def __repr__(self):
        return f"Steering({self.site!r}, |vector|={float(self.vector.norm()):.4g}, scale={self.scale})"

    def edit_ops(self, batch, prompt_mask: torch.Tensor | None = None, rows: torch.Tensor | None = None) -> list[Op]:
        """Engine ops adding ``scale * vector`` at the positions of ``batch`` (the ReftModel protocol)."""
        mask, ids, gen = position_inputs(batch, prompt_mask, rows, decodes=self.decodes)
        loc = self.site.pos.locate(mask, ids, self.lm.tokenizer, generated=gen)
        if not loc.index.shape[1]:
            return []
        return [Op(self.site, self.target, loc.index, fn=self.steer, valid=loc.valid, rows=rows)]

    def step_ops(self, n_rows: int, rows: torch.Tensor | None = None, device=None) -> list[Op]:
        """Ops for one cached decoding step: each served row's new token, when the positions decode."""
        if not self.decodes:
            return []
        return [Op(self.site, self.target, step_index(n_rows, rows, device), fn=self.steer, rows=rows)]

    def logits(self, rb) -> torch.Tensor:
        """Logits (B, k, V) of a :class:`reft.data.ReftBatch` at its ``pred_at`` columns, steered (for evaluate)."""
        return serve_logits(self.lm, rb, [self] * len(rb))


def steer(lm, site: Site, vector: torch.Tensor, scale: float = 1.0) -> Steering:
    """A :class:`Steering`: ``h + scale * vector`` at ``site`` (its positions are prompt and decode positions).

    Example:
        >>> s = steer(lm, Site("resid_post", 1, last()), torch.ones(32), scale=0.0)
        >>> torch.allclose(interp.run(s, prompts).logits, interp.run(lm, prompts).logits, atol=1e-6)
        True
    """
    return Steering(lm, site, vector, scale)


__all__ = [
    "diff_in_means",
    "activations",
    "caa",
    "caa_prompts",
    "CAA_TEMPLATE",
    "steer",
    "Steering",
]
