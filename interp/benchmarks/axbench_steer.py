"""Steering as an objective, offline: a stated PROXY for AxBench's LLM judge.

Example:
    >>> rows = steering_proxy(lm, layer=9, directions={"diffmean": (w, max_act)}, held_out=rows,
    ...                       prompts=prompts, factors=(1.0,))                                   # doctest: +SKIP

AxBench steers by adding ``factor * max_act * w`` at every token (prompt and generated; ``max_act`` the largest
latent the direction reaches on the concept) and asks an LLM judge to rate the generations for the concept,
for following the instruction and for fluency. No judge runs here, so two numbers stand in for it, both read
from the frozen model itself:

- **concept score (proxy)**: the mean per-token log-likelihood of held-out concept texts (the evaluation split's
  positives: instruction -> generation that shows the concept) with the steering on every token, and its change
  from the unsteered model (``concept_ll_delta`` > 0: the steered model finds the concept's text more likely);
- **fluency (proxy)**: the perplexity, under the unsteered model, of the steered model's greedy continuations of
  held-out instructions (lower is more fluent; degenerate repetition can also score low, so read it with the
  sample text).

They are proxies, not AxBench's steering score: likelihood of a reference text is not the judge's rating of a
generation, and the judge also scores instruction following, which nothing here measures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from interp.positions import all_tokens, generated
from interp.sites import Site
from reft.data import Tokenized, collate
from reft.generate import generate_ids
from reft.model import serve_logits
from reft.steering import steer


@torch.no_grad()
def loglik(lm, rows: Sequence[Tokenized], served=None) -> float:
    """Mean log-probability per response token of ``rows`` (prompt -> response), with ``served`` steering or none."""
    rb = collate(lm, list(rows))
    logits = serve_logits(lm, rb, [served] * len(rows)).float()  # (B, k, V): full vocabulary, normalised
    lp = torch.log_softmax(logits, -1).gather(-1, rb.labels[..., None])[..., 0]
    return float(lp[rb.label_mask].mean())


@torch.no_grad()
def continuations(lm, prompts: Sequence[Sequence[int]], served, max_new_tokens: int) -> list[Tokenized]:
    """Greedy continuations of ``prompts`` (token ids) under ``served`` (or none), cut at the first EOS or pad."""
    g = generate_ids(lm, [list(p) for p in prompts], serve=[served] * len(prompts), max_new_tokens=max_new_tokens)
    tok = lm.tokenizer
    stop = {t for t in (getattr(tok, "eos_token_id", None), getattr(tok, "pad_token_id", None)) if t is not None}
    out = []
    for p, new in zip(prompts, g.new_ids.tolist()):
        cut = next((i for i, t in enumerate(new) if t in stop), len(new))
        if cut:
            out.append(Tokenized(list(p), new[:cut]))
    return out


def steering_proxy(
    lm,
    *,
    layer: int,
    directions: Mapping[str, tuple[torch.Tensor, float]],
    held_out: Sequence[Tokenized],
    prompts: Sequence[Sequence[int]],
    factors: Sequence[float] = (0.5, 1.0, 2.0),
    max_new_tokens: int = 24,
) -> list[dict]:
    """One row per method and factor (and one unsteered row, method ``"none"``): strength, concept_ll (and its
    change from unsteered), fluency_ppl and a sample continuation. ``directions``: name -> (unit w, max_act)."""
    site = Site("resid_post", layer, all_tokens() + generated())
    tok = lm.tokenizer

    def row(method, factor, strength, served):
        gens = continuations(lm, prompts, served, max_new_tokens)
        ppl = float(torch.exp(torch.tensor(-loglik(lm, gens, None)))) if gens else float("nan")
        sample = tok.decode(gens[0].response) if gens and tok is not None else ""
        return {"method": method, "factor": factor, "strength": round(strength, 3),
                "concept_ll": round(loglik(lm, held_out, served), 4), "fluency_ppl": round(ppl, 2),
                "sample": sample}  # fmt: skip

    base = row("none", 0.0, 0.0, None)
    base["concept_ll_delta"] = 0.0
    out = [base]
    for name, (w, max_act) in directions.items():
        for f in factors:
            strength = float(f) * float(max_act)
            r = row(name, float(f), strength, steer(lm, site, w.float(), scale=strength))
            r["concept_ll_delta"] = round(r["concept_ll"] - base["concept_ll"], 4)
            out.append(r)
    return out


__all__ = ["continuations", "loglik", "steering_proxy"]
