"""The MIB runners' shared engine: last-token interchanges that run one token, collected once per example.

Example:
    >>> cells = Prepared.of(lm, prompts, layers=[0, 1], keep=True)     # one clean forward per prompt
    >>> cells.vectors[1].shape                                           # last-token resid_post vectors (N, d)
    torch.Size([8, 32])
    >>> clean = cells.logits(lm, 0, layer=1, edit=lambda h: h)          # chunk 0, an identity edit: clean logits
    >>> torch.equal(clean.argmax(-1), cells.top)
    True

Every MIB intervention here is an interchange at the residual stream after layer ``l`` at the last token. Such an
edit changes nothing below layer ``l`` and nothing before the last token, so one clean forward per base prompt
(:class:`interp.fastpatch.CleanRun`: its key/value cache and its layers' outputs) serves every method, every
layer and every training step: a step runs the last token alone through layers ``l+1..L-1`` against the cached
keys and values (about ``1/T`` of a forward, exactly the same numbers up to float rounding). The same forward
gives the last-token vectors of every layer (the sources) and the clean prediction (the filter).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from interp import optim
from interp.engine import Op
from interp.fastpatch import CleanRun
from interp.inputs import encode
from interp.sites import Site, resolve
from interp.subspace import Basis

CHUNK = 16  # prompts per cached batch (a training step takes one chunk)


def progress_bar(items, progress: bool, desc: str):
    """``items`` wrapped in a tqdm bar when ``progress`` (tqdm is a dependency of transformers)."""
    return tqdm(items, desc=desc, leave=False) if progress else items


@dataclass
class Prepared:
    """Prompts run once: last-token vectors per layer, clean top-1 ids, and (``keep``) cached chunks.

    Attributes:
        vectors: ``{layer: (N, d)}`` resid_post at the last token.
        top: (N,) the clean argmax over the whole vocabulary at the last token.
        runs: per chunk of ``CHUNK`` prompts, the trimmed :class:`CleanRun` (None unless ``keep``).
    """

    vectors: dict[int, torch.Tensor]
    top: torch.Tensor
    runs: list | None
    n: int

    @classmethod
    def of(cls, lm, prompts: Sequence[str], *, layers: Sequence[int], keep: bool = False, progress: bool = False,
           desc: str = "forward") -> Prepared:  # fmt: skip
        """Run ``prompts`` once (chunks of ``CHUNK``); keep the caches the training steps need when ``keep``."""
        n_layers = lm.n_layers
        layers = sorted(set(int(x) for x in layers))
        vectors = {layer: [] for layer in layers}
        tops, runs = [], [] if keep else None
        starts = list(range(0, len(prompts), CHUNK))
        for s in progress_bar(starts, progress, desc):
            batch = encode(lm, list(prompts[s : s + CHUNK]))
            run = CleanRun.of(lm, batch, upto=n_layers)
            with torch.no_grad():
                tops.append(_cell(lm, run, n_layers - 1, lambda h: h).argmax(-1))
            for layer in layers:
                vectors[layer].append(run.outputs[layer][:, -1].detach())
            if keep:  # only the last column of the layers asked for is ever read (the window is the last token)
                outs = [None] * n_layers
                for layer in layers:
                    last = run.outputs[layer][:, -1:]
                    outs[layer] = last.expand(-1, run.outputs[layer].shape[1], -1)
                runs.append(CleanRun(run.batch, run.keys, run.values, outs))
        vecs = {layer: torch.cat(v) for layer, v in vectors.items()}
        return cls(vecs, torch.cat(tops) if tops else torch.zeros(0, dtype=torch.long), runs, len(prompts))

    def chunk_rows(self, j: int) -> list[int]:
        return list(range(j * CHUNK, min(self.n, (j + 1) * CHUNK)))

    def logits(self, lm, j: int, *, layer: int, edit: Callable, vocab: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, V) at the last token of chunk ``j`` with ``edit`` on resid_post ``layer`` (last token)."""
        return _cell(lm, self.runs[j], layer, edit, vocab)


def _cell(lm, run: CleanRun, layer: int, edit: Callable, vocab=None) -> torch.Tensor:
    B, T = run.batch.input_ids.shape
    last = torch.full((B, 1), T - 1, dtype=torch.long, device=run.batch.input_ids.device)  # left padding
    site = Site("resid_post", layer)
    op = Op(site, resolve(lm, site), last, fn=edit)
    return run.logits(lm, [op], layer=layer + 1, logits_at=last, vocab=vocab)


def interchange_fn(basis: Basis | None, source: torch.Tensor) -> Callable:
    """The edit of one method: the whole vector (``basis`` None) or the basis's interchange, from ``source``."""
    src = source[:, None, :]
    if basis is None:
        return lambda h: src.to(h.dtype).expand_as(h)
    return lambda h: basis.interchange(h, src)


def ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the counterfactual label tokens (MIB's loss for MCQA)."""
    return F.cross_entropy(logits.float(), labels)


def groups_of(base: Prepared, sources: torch.Tensor, rows: Sequence[int], payload: Callable) -> list[tuple]:
    """``(chunk, sources of the chunk's rows, payload)`` for every chunk of ``base`` holding some of ``rows``.

    ``sources`` (N, d) is one source vector per base row; ``payload(chunk_rows, chosen)`` builds what the loss or
    score reads (``chosen`` a (B,) bool tensor: the chunk rows among ``rows``).
    """
    want, out = set(rows), []
    for j in range(len(base.runs)):
        r = base.chunk_rows(j)
        chosen = torch.tensor([i in want for i in r])
        if chosen.any():
            out.append((j, sources[r], payload(r, chosen)))
    return out


def train_basis(lm, base: Prepared, groups: Sequence[tuple], *, layer: int, basis: Basis, loss: Callable,
                steps: int, lr: float, temperature: tuple[float, float] = (1.0, 0.01), penalty: float = 0.0,
                seed: int = 0, progress: bool = False, desc: str = "fit", vocab=None) -> Basis:  # fmt: skip
    """Fit ``basis`` (DAS rows or a DBM mask) for ``steps`` AdamW steps, one group (:func:`groups_of`) a step.

    ``loss(logits, payload)`` scores one group. A basis with a ``temperature`` attribute (a mask) anneals it
    linearly from ``temperature[0]`` to ``temperature[1]`` over the run, as MIB's masks do; ``penalty`` weighs
    its ``penalty()`` (MIB's baselines: 0).
    """
    anneal = hasattr(basis, "temperature")
    t0, t1 = temperature

    def batches():
        rng, order = random.Random(seed), []
        while True:
            if not order:
                order = list(range(len(groups)))
                rng.shuffle(order)
            yield order.pop()

    def step_loss(g):
        j, src, payload = groups[g]
        out = base.logits(lm, j, layer=layer, edit=interchange_fn(basis, src), vocab=vocab)
        value = loss(out, payload)
        if penalty and hasattr(basis, "penalty"):
            value = value + penalty * basis.penalty()
        return value

    def before(step):
        basis.temperature = t0 + (t1 - t0) * min(1.0, step / max(1, steps - 1))

    params = [p for p in basis.parameters() if p.requires_grad]
    optim.train(params, step_loss, batches(), steps=steps, lr=lr, schedule="constant",
                before_step=before if anneal else None, progress=progress, desc=desc)  # fmt: skip
    if anneal:
        basis.temperature = t1
    return basis


def evaluate(lm, base: Prepared, groups: Sequence[tuple], *, layer: int, basis: Basis | None, score: Callable,
             vocab=None) -> torch.Tensor:  # fmt: skip
    """Scores ``score(logits, payload)`` of one method over every group, concatenated."""
    out = []
    with torch.no_grad():
        for j, src, payload in groups:
            logits = base.logits(lm, j, layer=layer, edit=interchange_fn(basis, src), vocab=vocab)
            out.append(score(logits, payload).detach().float())
    return torch.cat(out) if out else torch.zeros(0)


def default_layers(n_layers: int, quick: bool) -> list[int]:
    """A handful of layers spread over the depth (quick: one, two thirds of the way up)."""
    if quick:
        return [(2 * n_layers) // 3]
    return sorted({round(i * (n_layers - 1) / 5) for i in range(6)})


def layer_average(table: Sequence[dict], key: str) -> dict:
    """``{method: {variable: mean of key over layers}}`` (MIB's layer-averaged score)."""
    acc: dict = {}
    for row in table:
        if row.get(key) is None or row.get("counterfactual") != "all":
            continue
        acc.setdefault(row["method"], {}).setdefault(row["variable"], []).append(row[key])
    return {m: {v: round(sum(xs) / len(xs), 4) for v, xs in d.items()} for m, d in acc.items()}


__all__ = ["CHUNK", "Prepared", "ce_loss", "default_layers", "evaluate", "groups_of", "interchange_fn",
           "layer_average", "progress_bar", "train_basis"]  # fmt: skip
