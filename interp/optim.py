"""The one training loop: AdamW, a warm-up schedule, clipping, accumulation, data parallel, evaluation with early
stopping, checkpoints, and a guard that stops at the first non-finite loss or gradient.

Example:
    >>> import itertools
    >>> from interp import optim
    >>> w = torch.nn.Parameter(torch.zeros(2))
    >>> target = torch.tensor([1.0, -2.0])
    >>> hist = optim.train([w], lambda batch: ((w - target) ** 2).sum(), itertools.repeat(None), steps=200, lr=0.1)
    >>> hist.steps, round(hist.losses[0], 2), hist.losses[-1] < 1e-3, w.detach().round(decimals=2)
    (200, 5.0, True, tensor([ 1., -2.]))
    >>> [round(optim.lr_schedule(10, warmup_ratio=0.2)(s), 2) for s in range(10)]   # warm-up, then linear decay
    [0.5, 1.0, 1.0, 0.88, 0.75, 0.62, 0.5, 0.38, 0.25, 0.12]
    >>> optim.train([w], lambda batch: w.sum() * float("nan"), itertools.repeat(None), steps=5, lr=0.1)
    Traceback (most recent call last):
    interp.errors.NonFiniteError: training stopped at step 1 of 5: the loss is nan (learning rate 0.1); the ...

Everything trained calls :func:`train` with its parameters (or AdamW parameter groups: no weight decay on a basis
``R``, a Boundless mask's own learning rate), a ``loss(batch)`` closure and an iterator of batches: DAS and Boundless
DAS (:func:`interp.das.fit_das`), ReFT and the LoRA/DoRA baselines (:func:`reft.train.train_reft`, ``reft.train.fit``),
memorisation (``experiments/memorise.py``) and the hierarchical-equality MLP. Each step: one batch per micro-batch
(``grad_accum`` of them), backward, the guard, clipping, one AdamW update, the schedule; then evaluation, early
stopping and checkpoints at their intervals.

**The guard.** The loss and the gradient norm of every step are checked before the update: the first NaN or
infinity raises :class:`interp.errors.NonFiniteError` naming the step, the learning rate and what to try, with the
parameters as they were after the last good step. The parameters are checked again before each checkpoint and at
the end, so nothing non-finite is ever handed to a checkpoint or a save.

**Data parallel** (``torchrun``, :mod:`interp.distributed`): every rank draws the same global batch from
``batches`` and ``loss`` gets this rank's slice, ``batch[rank::world]`` (the whole batch in one process);
DistributedDataParallel over ``module`` averages the gradients. A loss returned as a mean over the slice is
exact when the slices are equal (DAS: ``batch_size`` a multiple of the world size). A loss returned as
``(sum, count)`` is made exact for any slices: the counts are summed over ranks and each rank's sum is divided by
the global count (times ``world``, which the average divides out), so a step equals one process's on the whole
batch (ReFT: cross-entropy summed over the response tokens). One code path serves one process and many.

**One config vocabulary.** :func:`check_options` checks every option of that name the same way, for the loop's
arguments and for the configs that feed it (``DASConfig``, ``reft.TrainConfig``): ``steps``, ``batch_size``,
``lr``, ``weight_decay``, ``warmup_ratio``, ``max_grad_norm``, ``grad_accum``, ``eval_every``, ``patience`` ...
(whole numbers refuse ``2.5`` and ``True``; reals refuse NaN and infinity), raising :class:`ConfigError`.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed as _dist
from .checks import as_float, as_int
from .errors import ConfigError, NonFiniteError

SCHEDULES = ("linear", "cosine", "constant")

# The vocabulary: an option of this name means the same and is checked the same in every config that trains.
_INTS = {"steps": 1, "epochs": 1, "batch_size": 1, "grad_accum": 1, "eval_every": 0, "patience": 0,
         "eval_batch_size": 1, "checkpoint_every": 0, "seed": None, "max_prompt_tokens": 1,
         "max_response_tokens": 1}  # fmt: skip
_REALS = {
    "lr": dict(low=0, open_low=True),
    "weight_decay": dict(low=0),
    "warmup_ratio": dict(low=0, high=1, open_high=True),
    "max_grad_norm": dict(low=0),  # 0 or None: no clipping
}
_OPTIONAL = {"steps", "max_grad_norm", "max_prompt_tokens", "max_response_tokens"}  # None allowed
_BOOLS = ("progress", "add_eos", "cache_prefix")
_HINTS = {
    "lr": "; try 1e-3 (DAS) or 4e-3 (ReFT)",
    "max_grad_norm": "; 0 or None turns clipping off, 1.0 is usual",
    "warmup_ratio": "; the fraction of the steps spent warming up, e.g. 0.1",
}


def check_options(values: dict, *, owner: str = "train", error: type[Exception] = ConfigError) -> dict:
    """``values`` with every option of the vocabulary checked (ints as ints, reals as finite floats); other keys
    pass through as they are. ``error`` names ``owner.option``, the value given and what is expected.

    Example:
        >>> check_options({"lr": 1e-3, "steps": 10, "rank": 4}, owner="DASConfig")
        {'lr': 0.001, 'steps': 10, 'rank': 4}
        >>> check_options({"max_grad_norm": float("nan")}, owner="TrainConfig")
        Traceback (most recent call last):
        interp.errors.ConfigError: TrainConfig.max_grad_norm must be a non-negative number; got nan; 0 or None ...
    """
    out = dict(values)
    for name, value in values.items():
        what, hint = f"{owner}.{name}", _HINTS.get(name, "")
        if value is None and name in _OPTIONAL:
            continue
        if name in _INTS:
            out[name] = as_int(value, what, low=_INTS[name], error=error, hint=hint)
        elif name in _REALS:
            out[name] = as_float(value, what, error=error, hint=hint, **_REALS[name])
        elif name in _BOOLS and not isinstance(value, bool):
            raise error(f"{what} must be True or False; got {value!r}")
        elif name == "schedule" and value not in SCHEDULES:
            raise error(f"{what} must be 'linear', 'cosine' or 'constant'; got {value!r}")
    return out


def lr_schedule(steps: int, *, warmup_ratio: float = 0.0, kind: str = "linear") -> Callable[[int], float]:
    """The learning-rate factor of step ``0 .. steps - 1``: a linear warm-up over ``warmup_ratio`` of the steps (at
    least one step when the ratio is positive) reaching 1, then ``kind``: "linear" decay toward 0, "cosine" or
    "constant".

    Example:
        >>> [round(lr_schedule(4, kind="cosine")(s), 3) for s in range(4)]
        [1.0, 0.854, 0.5, 0.146]
    """
    check_options({"steps": steps, "warmup_ratio": warmup_ratio, "schedule": kind}, owner="lr_schedule")
    warm = max(1, int(warmup_ratio * steps)) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if kind == "constant":
            return 1.0
        frac = (step - warm) / max(1, steps - warm)
        return max(0.0, 1.0 - frac) if kind == "linear" else 0.5 * (1 + math.cos(math.pi * frac))

    return factor


@dataclass
class History:
    """What a run did. ``losses``, ``lrs`` (the learning rate each update used, the first group's) and
    ``grad_norms`` (before clipping) have one entry per optimizer step; ``evals`` holds ``(step, result)``;
    ``best_step`` the step of the best score; ``stopped`` why the run ended before its last step ("patience",
    "stop_at" or "stop"; "" when it ran them all); ``tokens`` sums the global counts of ``(sum, count)`` losses.
    ``seconds`` is training time (evaluation and checkpoints excluded).

    Example:
        >>> History(losses=[2.0, 1.5], steps=2).to_dict()["losses"]
        [2.0, 1.5]
    """

    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    evals: list[tuple[int, object]] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    seconds_per_step: float = 0.0
    tokens: int = 0
    best_step: int | None = None
    stopped: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def train(
    params,
    loss: Callable,
    batches: Iterable,
    *,
    steps: int,
    lr: float,
    weight_decay: float = 0.0,
    schedule: str = "linear",
    warmup_ratio: float = 0.0,
    max_grad_norm: float | None = None,
    grad_accum: int = 1,
    evaluate: Callable[[], object] | None = None,
    eval_every: int = 0,
    patience: int = 0,
    stop_at: float | None = None,
    keep_best: bool = False,
    checkpoint: Callable[[int], object] | None = None,
    checkpoint_every: int = 0,
    before_step: Callable[[int], object] | None = None,
    stop: Callable[[History], bool] | None = None,
    module: nn.Module | None = None,
    find_unused: bool = True,
    progress: bool = False,
    desc: str = "train",
    history: History | None = None,
) -> History:
    """Train ``params`` for ``steps`` AdamW updates of ``loss`` over ``batches``; returns the :class:`History`.

    Args:
        params: parameters, or AdamW parameter groups (dicts with ``"params"`` and their own ``"lr"`` or
            ``"weight_decay"``; the schedule scales every group's rate).
        loss: ``loss(batch) -> scalar tensor`` (a mean) or ``(sum tensor, count)``; under ``torchrun`` it gets this
            rank's slice of the global batch (see the module docstring).
        batches: global batches, one per micro-batch (``grad_accum`` per step), the same on every rank.
        schedule, warmup_ratio: see :func:`lr_schedule`. max_grad_norm: clip the gradients' norm (None or 0: off).
        evaluate: called every ``eval_every`` steps and after the last (``eval_every=0``: after the last only).
            A number it returns is a score (higher is better, rank 0's on every rank): ``patience`` evaluations
            without a better one stop the run (0: never), and so does a score reaching ``stop_at``; ``keep_best``
            restores ``module``'s state at the best score at the end. Anything else it returns is recorded.
        checkpoint: ``checkpoint(step)`` every ``checkpoint_every`` steps and after the last, on rank 0.
        before_step: ``before_step(step)`` before each step's batches (e.g. a temperature annealed per step).
        stop: ``stop(history)`` after each step's loss and gradients, before its update; True ends the run there.
        module: the module holding the parameters, which DistributedDataParallel wraps under ``torchrun``
            (default: ``params`` in a ParameterList); ``find_unused``: DDP's find_unused_parameters.
        history: a :class:`History` (or subclass) to fill in.

    Raises:
        NonFiniteError: at the first step whose loss or gradient norm is NaN or infinite (before its update), or
            when the parameters are not finite before a checkpoint or at the end.
    """
    check_options(
        {"steps": steps, "lr": lr, "weight_decay": weight_decay, "schedule": schedule, "warmup_ratio": warmup_ratio,
         "max_grad_norm": max_grad_norm, "grad_accum": grad_accum, "eval_every": eval_every, "patience": patience,
         "checkpoint_every": checkpoint_every, "progress": progress},
        owner="train",
    )  # fmt: skip
    groups = [dict(g) for g in params] if _grouped(params) else [{"params": list(params)}]
    trainable = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(steps, warmup_ratio=warmup_ratio, kind=schedule))
    owner = module if module is not None else nn.ParameterList(trainable)
    model = _dist.data_parallel(_dist.Objective(owner, loss), find_unused=find_unused)  # DDP under torchrun
    world, main = _dist.world_size(), _dist.is_main()
    hist = history if history is not None else History()
    stream = iter(batches)
    best, best_state, bad = None, None, 0
    bar = tqdm(range(steps), desc=desc, disable=not (progress and main), leave=False)
    for step in bar:
        if before_step is not None:
            before_step(step)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        value = _accumulate(model, stream, grad_accum, world, hist)
        rate = opt.param_groups[0]["lr"]
        where = (step + 1, steps, rate, max_grad_norm)
        if not math.isfinite(value):
            raise NonFiniteError(_advice(f"the loss is {value}", *where))
        norm = torch.nn.utils.get_total_norm([p.grad for p in trainable if p.grad is not None])
        grad_norm = norm.item()
        if not math.isfinite(grad_norm):
            raise NonFiniteError(_advice(f"the gradient norm is {grad_norm}", *where))
        if stop is not None and stop(hist):
            hist.seconds += time.perf_counter() - t0
            hist.stopped = "stop"
            break
        if max_grad_norm:
            torch.nn.utils.clip_grads_with_norm_(trainable, max_grad_norm, norm)
        opt.step()
        sched.step()
        hist.seconds += time.perf_counter() - t0
        hist.losses.append(value)
        hist.lrs.append(rate)
        hist.grad_norms.append(grad_norm)
        hist.steps = step + 1
        postfix = {"loss": f"{value:.4g}"}
        last = step + 1 == steps
        if evaluate is not None and ((eval_every and (step + 1) % eval_every == 0) or last):
            result = evaluate()
            if isinstance(result, numbers.Real) and not isinstance(result, bool):
                score = _dist.broadcast(float(result))  # rank 0's: every rank stops at the same step
                result = score
                postfix["eval"] = f"{score:.3f}"
                if best is None or score > best:
                    best, bad, hist.best_step = score, 0, step + 1
                    if keep_best:
                        best_state = {k: v.detach().clone() for k, v in owner.state_dict().items()}
                else:
                    bad += 1
                if stop_at is not None and score >= stop_at:
                    hist.stopped = "stop_at"
                elif patience and bad >= patience:
                    hist.stopped = "patience"
            elif progress and main:
                bar.write(f"step {step + 1}: {result}")
            hist.evals.append((step + 1, result))
        if not bar.disable:
            bar.set_postfix(postfix)
        if checkpoint is not None and checkpoint_every and ((step + 1) % checkpoint_every == 0 or last) and main:
            _check_finite(trainable, f"before the checkpoint of step {step + 1}", *where)
            checkpoint(step + 1)
        if hist.stopped:
            break
    bar.close()
    if best_state is not None:
        owner.load_state_dict(best_state)
    _check_finite(trainable, f"after step {hist.steps}", hist.steps, steps, opt.param_groups[0]["lr"], max_grad_norm)
    hist.seconds_per_step = hist.seconds / max(1, hist.steps)
    return hist


def _grouped(params) -> bool:
    return isinstance(params, (list, tuple)) and bool(params) and all(isinstance(g, dict) for g in params)


def _accumulate(model, stream, grad_accum: int, world: int, hist: History) -> float:
    """Forward and backward over ``grad_accum`` micro-batches; returns the global batch's loss (every rank's)."""
    total = 0.0
    for k in range(grad_accum):
        batch = next(stream)  # the same global batch on every rank
        sync = world == 1 or k + 1 == grad_accum  # DDP averages the gradients once, after the last micro-batch
        with contextlib.nullcontext() if sync else model.no_sync():
            out = model(_dist.shard(batch) if world > 1 else batch)  # batch[rank::world]
            if isinstance(out, tuple):  # (sum, count): divided by the global count, exact for any slices
                part, count = out
                (n,) = _dist.all_sum([count])
                hist.tokens += int(n)
                out = part * world / max(n, 1)
            out = out / grad_accum
            torch.autograd.backward(out)  # not out.backward(): nnsight wraps that one, at a cost on every step
        total += out.item()
    if world > 1:
        (total,) = _dist.all_sum([total])
        total /= world  # the average of the ranks' values: the global batch's loss
    return total


def _advice(what: str, step: int, steps: int, lr: float, max_grad_norm, *, kept: bool = True) -> str:
    state = ""
    if kept:
        state = (
            f"the parameters are those after step {step - 1}, and "
            if step > 1
            else "the parameters are unchanged, and "
        )
    clip = (
        f"clip harder (max_grad_norm < {max_grad_norm})" if max_grad_norm else "clip the gradients (max_grad_norm=1.0)"
    )
    return (
        f"training stopped at step {step} of {steps}: {what} (learning rate {lr:.3g}); {state}nothing non-finite was "
        f"saved. Try a lower learning rate (e.g. lr={lr / 10:.3g}), {clip}, or a float32 model instead of bfloat16"
    )


def _check_finite(params, when: str, step: int, steps: int, lr: float, max_grad_norm) -> None:
    """Refuse parameters that an update made non-finite (an overflow with finite gradients) before they are saved."""
    bad = sum(int((~torch.isfinite(p.detach())).sum()) for p in params)
    if bad:
        what = f"{bad} parameter values are not finite {when}"
        raise NonFiniteError(_advice(what, step, steps, lr, max_grad_norm, kept=False))


__all__ = ["History", "SCHEDULES", "check_options", "lr_schedule", "train"]
