"""``reft generate``: greedy continuations with saved interventions (or without, to compare).

Example:
    reft generate --load runs/style --prompt "Question: Why do we sleep?\\nAnswer:" --repetition-penalty 1.3
    reft generate --prompt "Question: Why do we sleep?\\nAnswer:"            # the frozen model
"""

from __future__ import annotations

import argparse

import interp
from interp.cli import check_positive, model_shape

from ..generate import generate
from ..io import load
from . import check_load


def add_parser(sub):
    p = sub.add_parser(
        "generate",
        help="generate with saved interventions (or without, to compare)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--load", default=None, help="directory written by reft train --out")
    p.add_argument("--model", default=None, help="model path or id (default: the embedded Gemma-3-270M)")
    p.add_argument("--prompt", action="append", required=True, help="a prompt (repeat for a batch)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--repetition-penalty", type=float, default=None, help="e.g. 1.3 against loops in greedy decoding")
    return p


def check(args) -> None:
    """Everything ``reft generate`` can refuse before loading the model."""
    check_load(args)
    check_positive(args, "max_new_tokens", "repetition_penalty")
    model_shape(args.model)  # a missing model is refused here


def run(args) -> dict:
    lm = interp.load(args.model)
    model = load(args.load, lm) if args.load else lm
    prompts = [p.replace("\\n", "\n") for p in args.prompt]
    kw = {} if args.repetition_penalty is None else {"repetition_penalty": args.repetition_penalty}
    return {"prompts": prompts, "generations": generate(model, prompts, max_new_tokens=args.max_new_tokens, **kw)}
