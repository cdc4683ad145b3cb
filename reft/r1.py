"""ReFT-r1 (AxBench's LsReFT): one direction ``w`` trained jointly to detect a concept and to steer toward it.

Example:
    >>> fit = train_r1(lm, examples, layer=0, config=TrainConfig(steps=3, batch_size=2, lr=0.01, progress=False))
    >>> fit.direction.shape, round(float(fit.direction.norm()), 4)       # a unit vector in the residual stream
    (torch.Size([32]), 1.0)
    >>> fit.latents(torch.randn(5, 7, 32)).shape                          # ReLU(h . w): one detector score per token
    torch.Size([5, 7])
    >>> len(fit.history.losses)
    3

What it is (Wu, Arora, Geiger et al., ICML 2025, "AxBench", section 4; ``axbench/models/lsreft.py`` and
``TopKReLUIntervention`` in the stanfordnlp/axbench repository): at every token of a sequence (prompt and response,
BOS excluded) the latent is ``a_t = ReLU(w . h_t)`` with ``|w| = 1``; the sequence's steering magnitude is the mean of
its ``k`` largest latents, and the edit adds it along ``w`` at every token: ``h_t + mean(top-k a) * w``. The model is
frozen; ``w`` is trained on concept texts (positives) and genre-matched texts without the concept (negatives) to
predict each text's response tokens, plus an L1 penalty on the latents outside the top ``k`` (their mean per
sequence, averaged over the batch), its coefficient ramped linearly from 0 to ``l1`` over the run. So the latent
must fire where steering helps (the concept texts) and stay at zero elsewhere: ``w`` is at once a detector (score a
text by the max of ``a_t``) and a steering vector (add ``factor * max_act * w``, :func:`reft.steering.steer`).

One departure, measured on Gemma-3-270M: the latent reads ``h - mu`` (``a_t = ReLU(w . (h_t - mu))``), ``mu`` the
mean of the training tokens' vectors (label-free, fixed before training; a bias ``-w . mu`` in AxBench's terms,
whose ``proj`` has a bias it leaves at 0). This model's residual stream has norm ~6,000 at layer 9, mostly a
common mean; on raw ``h`` the L1 term's gradient points along that mean, Adam moves every coordinate by the full
learning rate, and within one to three steps every latent is 0 for good (a dead ReLU gets no gradient), at lr
0.01 as at 1e-4, with or without the L1 term. Centred, the latents stay alive.

Here ``w`` is the one row of an orthonormal :class:`interp.subspace.LowRankRotation` (rank 1), so it stays a unit
vector under the optimiser, which is what AxBench's renormalisation and its removal of the gradient parallel to
``w`` do by hand. Defaults are AxBench's (``axbench/sweep/wuzhengx/2b/l10/lsreft.yaml``): ``k=8``, ``l1=0.005``,
lr 0.01, 3 epochs of batch 6, no warm-up, linear decay, no weight decay, clipping at 1.0. The edit runs through
the engine (:class:`R1Model` builds its ops, the ReftModel protocol) and training on :func:`interp.optim.train`,
with the stream below the layer cached (:mod:`reft.cache`). ``vocab="seen"`` computes the response loss over the
tokens that occur in the training responses only (a restricted softmax: 262k unembedding rows are the cost of a
CPU step on Gemma), which is an approximation of AxBench's full-vocabulary loss; ``vocab=None`` is the full one.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from interp import optim
from interp import sites as _sites
from interp.checks import as_float, as_int
from interp.engine import Op, execute
from interp.positions import all_tokens, generated
from interp.sites import Site

from . import data as _data
from .cache import StreamCache, replaying
from .interventions import ReftError, ReftIntervention
from .model import Placement, ReftModel, to_model
from .train import History, TrainConfig, check_positions, prepare

AXBENCH = dict(epochs=3, batch_size=6, lr=0.01, warmup_ratio=0.0, weight_decay=0.0, max_grad_norm=1.0)


class ReftR1(ReftIntervention):
    """``h_t + mean(top-k_t ReLU(w . h_t)) * w`` over the tokens of each row; ``w`` a unit vector (rank 1).

    Example:
        >>> iv = ReftR1(4, k=2)
        >>> iv.R.set_weight(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
        >>> h = torch.zeros(1, 4, 4); h[0, :, 0] = torch.tensor([3.0, -1.0, 1.0, 2.0])   # latents 3, 0, 1, 2
        >>> (iv(h) - h)[0, :, 0].tolist()                        # every token moves by mean(3, 2) along w
        [2.5, 2.5, 2.5, 2.5]
        >>> iv.penalty()                                          # L1 of the latents outside the top 2: (0 + 1) / 4
        tensor(0.2500, grad_fn=<MeanBackward0>)

    The top ``k`` and the penalty run over the tokens (dim -2) of each row; :class:`R1Model` passes which slots
    are real tokens (``valid``), so padding and BOS never count. ``latest`` keeps the last edit's latents for
    :meth:`penalty`.
    """

    def __init__(self, d_model: int, rank: int = 1, *, k: int = 8, dtype=torch.float32):
        if rank != 1:
            raise ReftError(f"ReftR1 is rank 1 by definition (one direction w); got rank={rank!r}")
        k = as_int(k, "ReftR1 k", low=1, error=ReftError, hint="; AxBench uses k=8")
        super().__init__(d_model, 1, dtype=dtype, k=k)
        self.k = k
        self.register_buffer("center", torch.zeros(d_model, dtype=dtype))  # mu: latents read h - mu (train_r1 sets it)
        self.latest: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # latent, non-top-k, valid

    @property
    def direction(self) -> torch.Tensor:
        """``w`` (d_model,), unit norm."""
        return self.R.weight[0]

    def latent(self, h: torch.Tensor) -> torch.Tensor:
        """``ReLU(w . (h - mu))``: (..., d) -> (...)."""
        w = self.direction
        return torch.relu((h.to(w.device, w.dtype) - self.center) @ w)

    def target(self, h):  # the ReftIntervention form: coordinate along w becomes w . h + magnitude
        return h @ self.R.weight.to(h.dtype).T + self.magnitude(h)[..., None, None]

    def magnitude(self, h: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """(..., n, d) -> (...): the mean of each row's ``k`` largest latents over its valid tokens; records them."""
        if h.dim() == 1:
            h = h[None]
        lat = self.latent(h)  # (..., n)
        valid = torch.ones_like(lat, dtype=torch.bool) if valid is None else valid.to(lat.device).bool()
        lat = lat * valid  # ReLU >= 0, so a masked slot (0) is never above a real one
        kk = min(self.k, lat.shape[-1])
        top, idx = lat.topk(kk, dim=-1)
        n_valid = valid.sum(-1)
        mag = top.sum(-1) / n_valid.clamp(max=kk, min=1)
        rest = lat.scatter(-1, idx, 0.0)
        self.latest = (lat, rest, valid)
        return mag

    def forward(self, h: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        squeeze = h.dim() == 1
        x = h[None] if squeeze else h
        mag = self.magnitude(x, valid)  # (...,)
        out = x + mag[..., None, None] * self.direction.to(x.dtype)
        return out[0] if squeeze else out

    def penalty(self) -> torch.Tensor:
        """The last edit's L1 term: the mean latent outside the top k per row (over its valid tokens), batch mean."""
        if self.latest is None:
            raise ReftError("ReftR1.penalty(): no edit has run yet")
        _, rest, valid = self.latest
        return (rest.sum(-1) / valid.sum(-1).clamp(min=1)).mean()


class _Masked:
    """The op's edit: ``iv`` on the selected vectors with the op's valid slots (in the intervention's dtype)."""

    def __init__(self, iv: ReftR1, valid: torch.Tensor):
        self.iv, self.valid = iv, valid

    def __call__(self, h, source=None):
        p = self.iv.direction
        return self.iv.forward(h.to(p.device, p.dtype), self.valid).to(h.device, h.dtype)


class R1Model(ReftModel):
    """A frozen LM with one :class:`ReftR1` at a site over every token (prompt and, in teacher forcing, response).

    Its ops pass each row's real, non-BOS slots to the edit, so the top-k and the L1 term see only real tokens.
    """

    def edit_ops(self, batch, prompt_mask=None, rows=None):
        ops = super().edit_ops(batch, prompt_mask, rows)
        mask = batch.attention_mask if rows is None else batch.attention_mask[rows]
        ids = batch.input_ids if rows is None else batch.input_ids[rows]
        first = mask.long().argmax(1)  # the first real column of each row (left or right padding)
        bos = getattr(self.lm.tokenizer, "bos_token_id", None)
        is_bos = ids.gather(1, first[:, None])[:, 0] == bos if bos is not None else torch.zeros_like(first).bool()
        out = []
        for op in ops:
            valid = torch.ones_like(op.index, dtype=torch.bool) if op.valid is None else op.valid.bool()
            valid = valid & ~((op.index == first[:, None].to(op.index.device)) & is_bos[:, None].to(op.index.device))
            out.append(replace(op, valid=valid, fn=_Masked(op.fn, valid)))
        return out


def attach_r1(lm, layer: int, *, k: int = 8, component: str = "resid_post", intervention: ReftR1 | None = None):
    """An :class:`R1Model`: a new (or the given) :class:`ReftR1` at ``component`` of ``layer``, every token.

    Example:
        >>> attach_r1(lm, 1).trainable_params       # one direction of d_model numbers (its parametrisation's)
        32
    """
    iv = intervention if intervention is not None else ReftR1(lm.d_model, k=k)
    if not isinstance(iv, ReftR1):
        raise ReftError(f"attach_r1(intervention=...) takes a ReftR1; got {type(iv).__name__}")
    site = Site(component, layer, all_tokens() + generated())
    target = _sites.resolve(lm, site)
    iv.check(target.width)
    to_model(iv, lm)
    for p in lm.hf.parameters():
        p.requires_grad_(False)
    return R1Model(lm, [Placement(site, target, iv)], tied=True)


@dataclass
class R1Fit:
    """A trained ReFT-r1: ``model`` (an :class:`R1Model`), its ``intervention`` and the run's ``history``."""

    model: R1Model
    intervention: ReftR1
    history: History

    @property
    def direction(self) -> torch.Tensor:
        """``w`` (d_model,), detached."""
        return self.intervention.direction.detach().clone()

    def latents(self, acts: torch.Tensor) -> torch.Tensor:
        """``ReLU(w . h)`` for activations (..., d) collected at the model's site: the detector's token scores."""
        with torch.no_grad():
            return self.intervention.latent(acts)


def train_r1(
    lm,
    examples,
    *,
    layer: int,
    config: TrainConfig | None = None,
    k: int = 8,
    l1: float = 0.005,
    vocab: str | None = None,
    component: str = "resid_post",
    streams=None,
) -> R1Fit:
    """Train ReFT-r1 at ``component`` of ``layer`` on ``examples`` (prompt -> response; concept texts and negatives).

    Args:
        config: the loop's options (default: AxBench's, :data:`AXBENCH`); ``max_prompt_tokens`` /
            ``max_response_tokens`` truncate; ``cache_prefix`` replays the layers below.
        k: the top-k of the latents that sets the steering magnitude; l1: the L1 coefficient (reached at the end).
        vocab: None (the full vocabulary) or ``"seen"`` (the tokens of the training responses only; see the module).
        streams: optional, one (T_i, d) tensor per example over its prompt + response tokens (BOS included): the
            stream the prefix cache replays, i.e. for a ``resid_post`` site the site's own vectors, already
            collected (``interp.replay.PrefixCache.collect(lm, seqs, layer=layer + 1)``); the cache starts filled
            with them and ``mu`` is read from them, instead of running the layers below.
    """
    config = config if config is not None else TrainConfig(**AXBENCH)
    if not isinstance(config, TrainConfig):
        raise ReftError(f"train_r1(config=...) takes a reft.TrainConfig; got {type(config).__name__}")
    l1 = as_float(l1, "train_r1 l1", low=0, error=ReftError, hint="; AxBench uses 0.005")
    if vocab not in (None, "seen"):
        raise ReftError(f"train_r1(vocab=...) must be None (the full vocabulary) or 'seen'; got {vocab!r}")
    rows = prepare(lm, examples, config)
    if not rows:
        raise ReftError("train_r1: no training examples")
    torch.manual_seed(config.seed)
    rlm = attach_r1(lm, layer, k=k, component=component)
    iv = rlm.placements[0].intervention
    check_positions(rlm, rows)
    ids, remap = None, None
    if vocab == "seen":
        ids = torch.tensor(sorted({t for r in rows for t in r.response}), dtype=torch.long, device=lm.device)
        remap = torch.full((int(ids.max()) + 1,), -1, dtype=torch.long, device=lm.device)
        remap[ids] = torch.arange(len(ids), device=lm.device)
    cache = StreamCache.for_model(rlm, rows) if config.cache_prefix or streams is not None else None
    if streams is not None:
        if component != "resid_post":
            raise ReftError(f"train_r1(streams=...) is for a resid_post site (its own vectors); got {component!r}")
        prefill(cache, rows, streams)
    center(iv, site_vectors(rlm, rows) if streams is None else [s[1:] for s in streams])
    steps = config.steps or config.epochs * math.ceil(len(rows) / (config.batch_size * config.grad_accum))
    now = {"step": 0}

    def batch_loss(idx):  # (cross-entropy summed over response tokens + ramped L1 x tokens, tokens)
        rb = _data.collate(lm, [rows[j] for j in idx])
        with replaying(cache, idx, rb):
            ops = rlm.edit_ops(rb.batch, rb.prompt_mask)
            logits = execute(lm, rb.batch, ops, logits_at=rb.pred_at, vocab=ids, backend="hooks").logits
        labels = rb.labels if remap is None else remap[rb.labels]
        n = int(rb.label_mask.sum())
        ce = F.cross_entropy(logits[rb.label_mask].float(), labels[rb.label_mask], reduction="sum")
        return ce + l1 * (now["step"] / steps) * iv.penalty() * n, n

    def before(step):
        now["step"] = step

    rlm.train()
    try:
        hist = optim.train(
            [{"params": rlm.trainable_parameters(), "weight_decay": 0.0}],
            batch_loss,
            _batches(len(rows), config.batch_size, random.Random(config.seed)),
            steps=steps,
            lr=config.lr,
            schedule=config.schedule,
            warmup_ratio=config.warmup_ratio,
            max_grad_norm=config.max_grad_norm,
            grad_accum=config.grad_accum,
            before_step=before,
            module=rlm,
            progress=config.progress,
            desc="reft-r1",
            history=History(),
        )
    finally:
        rlm.eval()
        iv.latest = None
    return R1Fit(rlm, iv, hist)


def prefill(cache: StreamCache | None, rows, streams) -> None:
    """Put already collected streams (one (T_i, d) per row, prompt + response) into ``cache``, checked."""
    if cache is None:
        raise ReftError("train_r1(streams=...) needs a site above layer 0 whose stream can be replayed")
    if len(streams) != len(rows):
        raise ReftError(f"train_r1(streams=...) has {len(streams)} entries for {len(rows)} examples; give one each")
    for i, (r, s) in enumerate(zip(rows, streams)):
        n = len(r.prompt) + len(r.response)
        if not isinstance(s, torch.Tensor) or s.dim() != 2 or s.shape[0] != n:
            shape = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
            raise ReftError(f"train_r1(streams=...)[{i}] is {shape}; expected ({n}, d_model): prompt + response tokens")
        cache.prefix.streams[i] = s.detach().to(cache.lm.device)


@torch.no_grad()
def site_vectors(rlm: R1Model, rows, batch_size: int = 16) -> list[torch.Tensor]:
    """The site's vectors over each row's prompt + response tokens after the first (BOS): (T_i - 1, d) each."""
    pl = rlm.placements[0]
    site = Site(pl.site.component, pl.site.layer)
    out = []
    for a in range(0, len(rows), batch_size):
        rb = _data.collate(rlm.lm, rows[a : a + batch_size])
        B, T = rb.batch.input_ids.shape
        cols = torch.arange(T, device=rb.batch.input_ids.device).expand(B, T)
        (h,) = execute(rlm.lm, rb.batch, [Op(site, pl.target, cols, read=True)], backend="hooks").reads
        out += [h[b, 1 : int(rb.batch.attention_mask[b].sum())] for b in range(B)]
    return out


@torch.no_grad()
def center(iv: ReftR1, vectors) -> None:
    """Set ``mu``, the latent's origin, to the mean of the training tokens' vectors (label-free: positives and
    negatives alike). See the module: without it, the L1 term's gradient points along the stream's large common
    mean and Adam turns every latent off within a few steps on Gemma-3-270M."""
    vecs = [v for v in vectors if len(v)]
    if vecs:
        iv.center.copy_(torch.cat(vecs).float().mean(0).to(iv.center.device, iv.center.dtype))


def _batches(n: int, batch_size: int, rng: random.Random):
    """Endless shuffled epochs of example ids cut into batches (the last, partial batch of an epoch is kept)."""
    idx = list(range(n))
    while True:
        rng.shuffle(idx)
        for i in range(0, n, batch_size):
            yield idx[i : i + batch_size]


__all__ = ["AXBENCH", "ReftR1", "R1Model", "R1Fit", "attach_r1", "prefill", "train_r1"]
