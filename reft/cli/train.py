"""``reft train``: train a ReFT intervention (or a LoRA/DoRA baseline) on a task or JSONL data, then evaluate it.

Example:
    reft train --task style --out runs/style
    reft train --data train.jsonl --eval-data test.jsonl --layers "3;9" --positions f7+l7 --rank 8 --out runs/x
    reft train --task sentiment --method lora --grad-accum 2 --weight-decay 0.01 --json
    reft train --task style --layers all --share-weights --out hf://me/style-reft   # one LoReFT at every layer
    torchrun --nproc_per_node 2 -m reft train --task style --batch-size 10 --out runs/style   # data parallel

Under ``torchrun`` (or ``accelerate launch``) each process trains on its share of every batch
(:mod:`interp.distributed`; ``--batch-size`` must be a multiple of the number of processes); rank 0
saves and prints.
"""

from __future__ import annotations

import argparse
import time

import torch

import interp
from interp.distributed import is_main, launched, launched_world_size

from .. import baselines
from .. import train as reft_train  # reft.train.train_reft looked up when called (the bad-input table mocks it)
from ..generate import generate
from ..head import ClassifierHead
from ..interventions import KINDS, ReftError
from ..io import save
from ..model import at_layers, attach
from ..positions import parse_positions
from ..tasks import get as get_task
from ..train import check_world, evaluate
from . import (
    BASELINES,
    METHODS,
    add_data_options,
    add_method_options,
    add_train_config_options,
    check_data_options,
    check_method_options,
    load_data,
    peak_rss_mb,
    pick,
    task_defaults,
    train_config,
)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``reft train`` (also the parser ``reft compare`` writes its workers' command lines for)."""
    add_data_options(p)
    p.add_argument("--method", default="loreft", help=f"one of {', '.join(METHODS)}")
    add_method_options(p)
    add_train_config_options(p)
    return p


def add_parser(sub):
    p = sub.add_parser(
        "train",
        help="train a ReFT intervention (or a LoRA/DoRA baseline) and evaluate it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return add_arguments(p)


def check_method(method: str, args) -> str:
    """``method`` lower-cased, or a ReftError naming the known methods and the options it cannot take."""
    asked, method = method, method.lower()
    if method not in KINDS and method not in BASELINES:
        raise ReftError(f"unknown method {asked!r}; expected one of {', '.join(METHODS)}")
    if method in BASELINES:
        given = [f"--{n.replace('_', '-')}" for n in ("eval_every", "checkpoint_every") if getattr(args, n, None)]
        if given:
            raise ReftError(
                f"{' and '.join(given)} apply to ReFT methods; --method {method} is evaluated once, after training"
            )
    return method


def check(args) -> None:
    """Everything ``reft train`` can refuse before reading the data and loading the model."""
    method = check_method(args.method, args)
    defaults = task_defaults(args)
    check_method_options(args, method, defaults)
    check_data_options(args)
    config = train_config(args, defaults, method)
    check_world(config, launched_world_size(), what="--batch-size")  # torchrun: equal shares of each batch


def run(args, lm=None) -> dict:
    """Train under the process group a launcher (torchrun) asked for, if any; rank 0 saves and prints.
    ``lm``: the model already loaded from ``--model`` (``experiments/steer_style.py`` passes its own)."""
    with launched():
        return _run(args, lm)


def _run(args, lm=None) -> dict:
    method = check_method(args.method, args)
    defaults = task_defaults(args)
    data = load_data(args)
    config = train_config(args, defaults, method)
    if args.head and not data.label_words:
        raise ReftError("--head trains a classifier head: it needs label words (use --label-words or --task sentiment)")
    positions = pick(args, "positions", defaults, "f1+l1")
    pos = None if method in BASELINES else parse_positions(positions)
    lm = interp.load(args.model) if lm is None else lm
    base_params = sum(p.numel() for p in lm.hf.parameters())
    out = {"task": args.task or args.data, "method": method, "steps": config.steps, "config": config.to_dict()}
    t0 = time.perf_counter()
    if method in BASELINES:
        res = baselines.train_lora(
            lm,
            data.train,
            config,
            rank=args.lora_rank,
            dora=method == "dora",
            eval_examples=data.test or None,
            label_words=data.label_words,
        )
        n, hist, metrics = res.trainable_params, res.history, res.metrics
        tuned = interp.LM(res.model.get_base_model(), lm.tokenizer)  # generates like any model (samples)
    else:
        layers = pick(args, "layers", defaults, str(lm.n_layers // 2))
        rank = pick(args, "rank", defaults, 4)
        head = ClassifierHead.from_label_words(lm, data.label_words) if args.head else None
        with torch.random.fork_rng():  # --seed sets the initialisation (the same on every rank under torchrun)
            torch.manual_seed(config.seed)
            share = args.share_weights
            sites = at_layers(lm, layers, pos=pos, kind=method, rank=rank, share=share)
            rlm = attach(lm, sites, tied=not args.untied, head=head)
        out.update(layers=str(layers), positions=positions, rank=rank, tied=not args.untied, head=args.head)
        out["share_weights"] = share
        periodic = data.test if config.eval_every and data.test else None  # evaluations during training
        hist = reft_train.train_reft(rlm, data.train, config, eval_examples=periodic, label_words=data.label_words)
        n, tuned = rlm.trainable_params, rlm
        if hist.evals:
            out["evals"] = [{"step": step, **m} for step, m in hist.evals]
            metrics = hist.evals[-1][1]  # the last one is after the last step
        else:
            metrics = evaluate(rlm, data.test, label_words=data.label_words, config=config) if data.test else {}
        if args.out and is_main():
            out["saved"] = str(save(rlm, args.out, overwrite=args.overwrite, task=args.task))
    if data.eval_prompts and is_main():  # samples for rank 0's report only
        decoding = {"max_new_tokens": 24}
        if "repetition_penalty" in defaults:
            decoding["repetition_penalty"] = defaults["repetition_penalty"]
        out["decoding"] = decoding
        out["samples"] = [
            {"prompt": p, "tuned": r, "base": b}
            for p, r, b in zip(
                data.eval_prompts,
                generate(tuned, data.eval_prompts, **decoding),
                generate(lm, data.eval_prompts, **decoding),
            )
        ]
        if args.task == "style":
            style = get_task("style")
            out["style_rate"] = style.style_rate([s["tuned"] for s in out["samples"]])
            out["style_rate_base"] = style.style_rate([s["base"] for s in out["samples"]])
    if out["steps"] is None:  # trained by epochs
        out["steps"] = hist.steps
    out.update(
        accuracy=metrics.get("accuracy"),
        eval_loss=metrics.get("loss"),
        n_test=metrics.get("n"),
        trainable_params=n,
        percent_of_base=100.0 * n / base_params,
        seconds_per_step=hist.seconds_per_step,
        train_loss_first=hist.losses[0],
        train_loss_last=hist.losses[-1],
        response_tokens=hist.response_tokens,
        seconds_total=time.perf_counter() - t0,
        peak_rss_mb=peak_rss_mb(),
    )
    return out
