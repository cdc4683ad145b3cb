"""Train ReFT interventions (or any small set of parameters) with a plain, readable loop.

Example:
    >>> rlm = attach(lm, {Site("resid_post", 1, first(1) + last(1)): LoReFT(lm.d_model, rank=4)})
    >>> hist = train_reft(rlm, examples, TrainConfig(epochs=2, lr=4e-3, batch_size=2))
    >>> hist.steps, len(hist.losses), hist.response_tokens   # 4 examples in batches of 2, twice; 2 tokens each
    (4, 4, 16)
    >>> hist.losses[-1] < hist.losses[0], hist.seconds_per_step > 0
    (True, True)

The batches: shuffle, cut into batches, cross-entropy on response tokens only; the loop is :func:`interp.optim.train`
(gradient accumulation, AdamW with linear warm-up then linear decay, gradient clipping, a tqdm bar with the loss,
evaluation and checkpoints every so many steps, and a stop at the first non-finite loss or gradient:
:class:`interp.errors.NonFiniteError`). The basis ``R`` never gets weight decay: decay pulls R toward zero,
the orthogonal parametrisation's re-projection fights it, and the edit silently switches off.

The frozen layers below the lowest intervened layer run once per example, not once per step
(:mod:`reft.cache`, ``TrainConfig.cache_prefix``, on by default): their output is cached the first time an
example is drawn and replayed after, so a step runs only the layers from there up. It holds about
``examples x tokens x d_model x bytes per value`` (unpadded), e.g. 3.3 GB for 10,000 examples of 128 tokens on
Gemma-3-270M in float32.

Under ``torchrun --nproc_per_node N`` (:mod:`interp.distributed`) every rank draws the same global batches
and takes ``batch[rank::N]``; DistributedDataParallel averages the gradients. The loss is made exact: each
rank sums the cross-entropy over its shard's response tokens and the loop divides it by the global batch's
token count (times N, which DDP's average divides out), so each step equals one process on the whole batch,
whatever the prompt and response lengths; one process runs the same code with N = 1. ``batch_size`` must be a
multiple of N; rank 0 alone shows progress and writes checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from interp import distributed as _dist
from interp import optim
from interp.errors import TrainConfigError
from interp.io import check_output_dir

from . import data as _data
from .cache import StreamCache, replaying
from .interventions import ReftError
from .io import save as save_reft
from .model import ReftModel, serve_logits


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One training run. ``steps`` (optimizer updates) overrides ``epochs`` when set.

    Example:
        >>> cfg = TrainConfig(steps=100, lr=4e-3, batch_size=8)
        >>> dataclasses.replace(cfg, seed=1).to_dict()["seed"]
        1
        >>> TrainConfig(lr=float("inf"))
        Traceback (most recent call last):
        interp.errors.TrainConfigError: TrainConfig.lr must be a positive number; got inf; try 1e-3 (DAS) or 4e-3 (ReFT)

    Every value is checked on construction with :func:`interp.optim.check_options`, the checks ``DASConfig``
    uses for the options of the same name (whole numbers refuse 2.5 and True; NaN and infinity are refused); a bad
    value raises :class:`interp.errors.TrainConfigError` (a ConfigError and a ReftError).
    """

    epochs: int = 1
    steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 4e-3
    schedule: str = "linear"  # after the warm-up: "linear" decay, "cosine" or "constant"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0  # on W, b only; never on the basis R
    max_grad_norm: float | None = 1.0  # None or 0: no clipping
    seed: int = 0
    max_prompt_tokens: int | None = None
    max_response_tokens: int | None = None
    add_eos: bool = False  # append EOS to responses (so generation learns to stop)
    eval_every: int = 0
    checkpoint_every: int = 0
    checkpoint_dir: str | None = None
    progress: bool = True
    cache_prefix: bool = True  # replay the stream entering the lowest intervened layer (reft.cache); False: run all

    def __post_init__(self):
        values = optim.check_options(dataclasses.asdict(self), owner="TrainConfig", error=TrainConfigError)
        for name, value in values.items():
            object.__setattr__(self, name, value)
        if self.checkpoint_every and not self.checkpoint_dir:
            raise TrainConfigError("TrainConfig.checkpoint_every needs checkpoint_dir (where to write them)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ReftError(f"unknown TrainConfig keys {unknown}; known: {sorted(known)}")
        return cls(**d)


class History(optim.History):
    """What a run did (:class:`interp.optim.History`): loss per optimizer step, evaluations ``(step, metrics)``,
    timing, and ``response_tokens``, the response tokens trained on (the loop's ``tokens``)."""

    @property
    def response_tokens(self) -> int:
        return self.tokens

    def to_dict(self) -> dict:
        return super().to_dict() | {"response_tokens": self.tokens}


def train_reft(
    rlm: ReftModel, examples, config: TrainConfig = TrainConfig(), *, eval_examples=None, label_words=None
) -> History:
    """Train the interventions of ``rlm`` on ``examples`` (prompt -> response, or labelled with ``label_words``).

    Validates the data and positions before the first step; evaluates on ``eval_examples`` every
    ``config.eval_every`` steps and at the end (accuracy over label words, else response loss).
    """
    lm = rlm.lm
    check_world(config)
    if config.checkpoint_every:
        check_checkpoint_dir(config.checkpoint_dir)
    train = prepare(lm, examples, config, label_words=label_words)
    check_positions(rlm, train)
    vocab = _data.label_vocab(lm, label_words)
    evaluate_fn = None
    if eval_examples is not None:
        ev = prepare(lm, eval_examples, config, label_words=label_words)
        evaluate_fn = lambda: evaluate(rlm, ev, label_words=label_words, config=config)  # noqa: E731
    no_decay = {id(p) for iv in rlm.interventions for p in iv.no_decay_parameters()}
    if rlm.head is not None and (vocab is None or len(vocab) != rlm.head.out_features):
        n = 0 if vocab is None else len(vocab)
        raise ReftError(
            f"the classifier head has {rlm.head.out_features} classes but {n} label words were given; "
            "pass label_words= with one word (or name) per class"
        )
    params = rlm.trainable_parameters()
    groups = [
        {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0},
        {"params": [p for p in params if id(p) not in no_decay], "weight_decay": config.weight_decay},
    ]

    def checkpoint(path):
        save_reft(rlm, path)  # a fresh step-N/ each time: check_checkpoint_dir refused earlier runs' up front

    rlm.train()
    try:
        cache = StreamCache.for_model(rlm, train, vocab) if config.cache_prefix else None  # None: does not apply
        return fit(
            lm,
            groups,
            rlm.logits,
            train,
            config,
            vocab=vocab,
            evaluate_fn=evaluate_fn,
            checkpoint_fn=checkpoint,
            module=rlm,
            cache=cache,
        )
    finally:
        rlm.eval()


def check_world(config: TrainConfig, world: int | None = None, what: str = "TrainConfig.batch_size") -> None:
    """Refuse, before any work, a batch size that the processes of a ``torchrun`` launch cannot share equally.

    Example:
        >>> check_world(TrainConfig(batch_size=3), world=2)
        Traceback (most recent call last):
        interp.errors.ReftError: TrainConfig.batch_size=3 is the global batch, split over 2 processes, so it
        must be a multiple of 2; try TrainConfig.batch_size=4 (or 2), or launch a number of processes that divides 3
    """
    _dist.check_divisible(config.batch_size, what, world=world, error=ReftError)


def check_checkpoint_dir(path, what: str = "checkpoint folder") -> None:
    """Refuse, before training, a checkpoint folder that cannot be written or already holds ``step-N/`` folders
    (an earlier run's checkpoints, which this run would mix with or replace).

    Example:
        >>> (tmp / "ckpt" / "step-10").mkdir(parents=True)
        >>> check_checkpoint_dir(tmp / "ckpt")
        Traceback (most recent call last):
        FileExistsError: checkpoint folder '.../ckpt' already holds step-10/ from an earlier run; choose another
        checkpoint_dir or remove them (training never replaces checkpoints)
    """
    path = check_output_dir(path, overwrite=True, what=what)
    old = [p.name for p in path.iterdir() if re.fullmatch(r"step-\d+", p.name)] if path.is_dir() else []
    old.sort(key=lambda n: int(n[5:]))
    if old:
        shown = ", ".join(f"{n}/" for n in old[:3]) + (f" and {len(old) - 3} more" if len(old) > 3 else "")
        raise FileExistsError(
            f"{what} {str(path)!r} already holds {shown} from an earlier run; choose another "
            "checkpoint_dir or remove them (training never replaces checkpoints)"
        )


def prepare(lm, examples, config: TrainConfig, *, label_words=None) -> list[_data.Tokenized]:
    """Examples (dicts, pairs, a JSONL path or tokenized rows) -> tokenized rows, validated."""
    if isinstance(examples, list) and examples and isinstance(examples[0], _data.Tokenized):
        return examples
    exs = _data.as_examples(examples, label_words=label_words)
    return _data.tokenize(
        lm,
        exs,
        max_prompt_tokens=config.max_prompt_tokens,
        max_response_tokens=config.max_response_tokens,
        add_eos=config.add_eos,
        label_words=label_words,
    )


def check_positions(rlm: ReftModel, rows) -> None:
    """Resolve every site's positions on every prompt now, so a bad one fails before training starts."""
    for i, r in enumerate(rows):
        for pl in rlm.placements:
            try:
                pl.site.pos.split(len(r.prompt), torch.tensor(r.prompt), rlm.lm.tokenizer)
            except ValueError as e:
                raise ReftError(f"example {i}, {pl.site!r}: {e}") from None


def response_loss(logits: torch.Tensor, rb, *, reduction: str = "mean") -> torch.Tensor:
    """Mean (or, with ``reduction="sum"``, summed) cross-entropy over real response tokens.
    logits: (B, k, V); labels, mask: (B, k)."""
    return F.cross_entropy(logits[rb.label_mask].float(), rb.labels[rb.label_mask], reduction=reduction)


def fit(
    lm,
    groups,
    forward: Callable,
    rows,
    config: TrainConfig,
    *,
    vocab=None,
    evaluate_fn=None,
    checkpoint_fn=None,
    module: nn.Module | None = None,
    cache: StreamCache | None = None,
) -> History:
    """ReFT's training and the LoRA/DoRA baselines' on :func:`interp.optim.train`: same batches, steps, schedule
    and loss (cross-entropy summed over each shard's response tokens, divided by the global batch's count).

    Args:
        groups: AdamW parameter groups.
        forward: ``ReftBatch -> logits (B, k, V)`` at ``batch.pred_at`` (over ``batch.vocab`` when set).
        rows: tokenized examples.
        vocab: label-word token ids for classification (loss over those words only), else None.
        module: the module holding the trainable parameters, which DistributedDataParallel wraps under
            ``torchrun`` (default: the parameters of ``groups``, gathered in a ParameterList).
        cache: a :class:`reft.cache.StreamCache` over ``rows``: each step replays the stream entering its layer
            instead of running the layers below (``forward`` must run ``lm`` itself, unmodified below it).
    """
    if not rows:
        raise ReftError("no training examples after tokenization")
    check_world(config)
    torch.manual_seed(config.seed)
    per_update = config.batch_size * config.grad_accum
    steps = config.steps or config.epochs * math.ceil(len(rows) / per_update)
    params = [p for g in groups for p in g["params"]]

    def batch_loss(ids):  # this rank's examples of the batch (all of it in one process): (summed CE, token count)
        if not ids:  # an empty shard (the last batch of an epoch has fewer rows than ranks): zero gradients
            return sum(p.sum() for p in params) * 0.0, 0
        rb = _data.collate(lm, [rows[j] for j in ids], vocab)
        with replaying(cache, ids, rb):  # layers below the cache's run once per example, not per step
            return response_loss(forward(rb), rb, reduction="sum"), int(rb.label_mask.sum())  # (B, k, V) -> scalar

    def save(step):  # rank 0, after the loop checked the parameters are finite
        checkpoint_fn(Path(config.checkpoint_dir) / f"step-{step}")

    stream = _batches(list(range(len(rows))), config.batch_size, random.Random(config.seed))  # the cache's ids
    return optim.train(
        groups,
        batch_loss,
        stream,
        steps=steps,
        lr=config.lr,
        weight_decay=config.weight_decay,
        schedule=config.schedule,
        warmup_ratio=config.warmup_ratio,
        max_grad_norm=config.max_grad_norm,
        grad_accum=config.grad_accum,
        evaluate=evaluate_fn,  # every rank evaluates (its shard, under torchrun)
        eval_every=config.eval_every,
        checkpoint=save if checkpoint_fn and config.checkpoint_every else None,
        checkpoint_every=config.checkpoint_every,
        module=module,
        progress=config.progress,
        history=History(),
    )


def _batches(rows, batch_size, rng):
    """Endless shuffled epochs cut into batches (the last, partial batch of an epoch is kept)."""
    idx = list(range(len(rows)))
    while True:
        rng.shuffle(idx)
        for i in range(0, len(idx), batch_size):
            yield [rows[j] for j in idx[i : i + batch_size]]


@torch.no_grad()
def evaluate(model, examples, *, label_words=None, config: TrainConfig = TrainConfig(), forward=None) -> dict:
    """Accuracy and mean response loss; accuracy is over ``label_words`` for classification, else exact
    match (every response token is the greedy choice given the ones before, i.e. greedy decoding's answer).

    ``model`` is a :class:`ReftModel` or an :class:`interp.LM`; ``forward`` (``ReftBatch -> logits``) overrides
    how logits are computed (the LoRA/DoRA baselines pass theirs). Under ``torchrun`` every rank must call
    it: each scores its share of the batches and the counts are summed over ranks.
    """
    lm = model.lm if isinstance(model, ReftModel) else model
    rows = prepare(lm, examples, config, label_words=label_words)
    vocab = _data.label_vocab(lm, label_words)
    if forward is None:
        forward = model.logits if isinstance(model, ReftModel) else (lambda rb: serve_logits(lm, rb, [None] * len(rb)))
    correct, total, n = 0, 0.0, 0
    starts = range(0, len(rows), config.batch_size)
    for i in _dist.shard(starts):  # every batch in one process; batches rank, rank + world, ... under torchrun
        rb = _data.collate(lm, rows[i : i + config.batch_size], vocab)
        logits = forward(rb)  # (B, k, V) or (B, 1, n_labels)
        hit = (logits.argmax(-1) == rb.labels) | ~rb.label_mask  # (B, k)
        correct += int(hit.all(-1).sum())  # every answer token is the greedy choice
        m = int(rb.label_mask.sum())
        total += response_loss(logits, rb).item() * m
        n += m
    if _dist.active():
        correct, total, n = _dist.all_sum([correct, total, n])
    return {"accuracy": int(correct) / len(rows), "loss": total / n, "n": len(rows)}
