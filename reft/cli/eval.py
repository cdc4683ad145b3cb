"""``reft eval``: evaluate saved interventions (and the frozen model) on a task or JSONL data.

Example:
    reft eval --task sentiment --load runs/sent --json
    reft eval --data test.jsonl --label-words negative,positive --load runs/x --batch-size 32
"""

from __future__ import annotations

import argparse

import interp

from ..io import load
from ..train import evaluate
from . import (
    add_data_options,
    add_train_config_options,
    check_data_options,
    check_load,
    load_data,
    model_shape,
    train_config,
)

# the TrainConfig fields evaluation reads: how examples are batched and tokenized
EVAL_FIELDS = ("batch_size", "seed", "max_prompt_tokens", "max_response_tokens")


def add_parser(sub):
    p = sub.add_parser(
        "eval",
        help="evaluate saved interventions on a task or JSONL data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_options(p)
    add_train_config_options(p, only=EVAL_FIELDS)
    p.add_argument("--load", required=True, help="directory written by reft train --out")
    return p


def check(args) -> None:
    """Everything ``reft eval`` can refuse before reading the data and loading the model."""
    check_load(args)
    check_data_options(args)
    train_config(args, {})
    model_shape(args.model)  # a missing model is refused here


def run(args) -> dict:
    data = load_data(args)
    examples = data.test or data.train
    config = train_config(args, {})  # the same batches for every method: not the task's training defaults
    lm = interp.load(args.model)
    rlm = load(args.load, lm)
    return {
        "task": args.task or args.data,
        "load": args.load,
        "reft": evaluate(rlm, examples, label_words=data.label_words, config=config),
        "base": evaluate(lm, examples, label_words=data.label_words, config=config),
    }
