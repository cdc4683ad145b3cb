"""Command line: ``reft train | eval | generate | compare`` (also ``python -m reft``); ``--json`` prints one object.

Example:
    reft train --task style --out runs/style                 # rank-4 LoReFT at one layer, ~20 examples
    reft generate --load runs/style --prompt "Question: Why do we sleep?\\nAnswer:" --repetition-penalty 1.3
    reft train --data train.jsonl --eval-data test.jsonl --layers "3;9" --positions f7+l7 --rank 8 --out runs/x
    reft eval --task sentiment --load runs/sent --json
    reft compare --task sentiment --json                      # LoReFT, DiReFT, LoRA, DoRA: one table

Methods are the ReFT kinds (loreft, direft, noreft, lobireft, consreft, lodireft) and the peft baselines
(lora, dora). Unset options take the task's defaults (``reft.tasks.<task>.DEFAULTS``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from .interventions import KINDS, ReftError

BASELINES = ("lora", "dora")
COMPARE = ("loreft", "direft", "lora", "dora")


def _add_common(p, *, training: bool):
    p.add_argument("--task", choices=("style", "sentiment", "addition"), help="a built-in task")
    p.add_argument("--data", help="JSONL training data: {prompt, response} or {prompt, label} per line")
    p.add_argument("--eval-data", help="JSONL held-out data (same format)")
    p.add_argument("--label-words", help="classification label words by label index, e.g. 'negative,positive'")
    p.add_argument("--model", default=None, help="model path or id (default: the embedded Gemma-3-270M)")
    p.add_argument("--n-train", type=int, default=None, help="training examples drawn from the task")
    p.add_argument("--n-test", type=int, default=None, help="held-out examples drawn from the task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--max-prompt-tokens", type=int, default=64, help="longer prompts keep BOS and their end")
    if training:
        p.add_argument("--method", default="loreft", help=f"one of {', '.join((*KINDS, *BASELINES))}")
        p.add_argument("--layers", default=None, help="'9', '3;9;15' or 'all'")
        p.add_argument("--positions", default=None, help="prompt positions, e.g. 'f1+l1' or 'f7+l7'")
        p.add_argument("--rank", type=int, default=None)
        p.add_argument("--untied", action="store_true", help="separate weights for prefix and suffix positions")
        p.add_argument(
            "--head", action="store_true", help="classification with ReFT: train a linear head (started from the "
            "label words' unembedding rows) with the interventions instead of scoring the label words"
        )  # fmt: skip
        p.add_argument("--steps", type=int, default=None, help="optimizer steps")
        p.add_argument("--lr", type=float, default=None)
        p.add_argument("--grad-accum", type=int, default=1)
        p.add_argument("--lora-rank", type=int, default=8)
        p.add_argument("--out", default=None, help="save the trained interventions here (ReFT methods)")
        p.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
        p.add_argument("--progress", action="store_true", help="show a progress bar with the loss")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reft", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a ReFT intervention (or a LoRA/DoRA baseline) and evaluate it")
    _add_common(p, training=True)
    p = sub.add_parser("eval", help="evaluate saved interventions on a task or JSONL data")
    _add_common(p, training=False)
    p.add_argument("--load", required=True, help="directory written by reft train --out")
    p = sub.add_parser("generate", help="generate with saved interventions (or without, to compare)")
    p.add_argument("--load", default=None, help="directory written by reft train --out")
    p.add_argument("--model", default=None)
    p.add_argument("--prompt", action="append", required=True, help="a prompt (repeat for a batch)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--repetition-penalty", type=float, default=None, help="e.g. 1.3 against loops in greedy decoding")
    p = sub.add_parser("compare", help="several methods on one task at matched steps, one table")
    _add_common(p, training=True)
    p.add_argument("--methods", default=",".join(COMPARE), help="comma-separated methods")
    p.add_argument("--jobs", type=int, default=1, help="methods run at once (timings then share the CPU)")
    for p in sub.choices.values():
        p.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = {"train": cmd_train, "eval": cmd_eval, "generate": cmd_generate, "compare": cmd_compare}[args.command](
            args
        )
    except (ReftError, ValueError, FileExistsError, FileNotFoundError) as e:
        print(f"reft {args.command}: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        _print_human(result)
    return 0


def _print_human(result: dict) -> None:
    if "methods" in result:
        cols = ("accuracy", "trainable_params", "percent_of_base", "seconds_per_step", "peak_rss_mb")
        print(f"{result['task']} ({result['steps']} steps each)")
        print(f"{'method':<8} " + " ".join(f"{c:>17}" for c in cols))
        for m, r in result["methods"].items():
            print(f"{m:<8} " + " ".join(f"{r.get(c, float('nan')):>17.4g}" for c in cols))
        return
    for key, value in result.items():
        if isinstance(value, list):
            for v in value:
                print(f"{key}: {v}")
        else:
            print(f"{key}: {value}")


# ---- data ------------------------------------------------------------------------------------------------


def _defaults(args) -> dict:
    if args.task:
        from .tasks import get

        return dict(get(args.task).DEFAULTS)
    return {}


def _pick(args, name, defaults, fallback):
    value = getattr(args, name, None)
    return value if value is not None else defaults.get(name, fallback)


def _data(args):
    from .data import as_examples
    from .tasks import TaskData, get

    if args.task and args.data:
        raise ReftError("give either --task or --data, not both")
    if args.task:
        task = get(args.task)
        kw = {"seed": args.seed}
        if args.n_train is not None:
            kw["n_train"] = args.n_train
        if args.n_test is not None:
            kw["n_test"] = args.n_test
        return task.load(**kw)
    if not args.data:
        raise ReftError("no data: pass --task (style, sentiment, addition) or --data train.jsonl")
    words = None
    if args.label_words:
        words = {i: " " + w.strip() for i, w in enumerate(args.label_words.split(","))}
    train = _jsonl(args.data)
    as_examples(train, label_words=words)  # validate now, with the example's index in the error
    test = _jsonl(args.eval_data) if args.eval_data else []
    return TaskData(train[: args.n_train] if args.n_train else train, test, words)


def _jsonl(path):
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{path!r} does not exist; expected a JSONL file with one example per line")
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def _config(args, defaults, method):
    from .train import TrainConfig

    lr_key = "lora_lr" if method in BASELINES else "lr"
    return TrainConfig(
        steps=_pick(args, "steps", defaults, 100),
        lr=args.lr if args.lr is not None else defaults.get(lr_key, 4e-3 if method not in BASELINES else 1e-3),
        batch_size=_pick(args, "batch_size", defaults, 8),
        grad_accum=args.grad_accum,
        seed=args.seed,
        max_prompt_tokens=args.max_prompt_tokens,
        add_eos=defaults.get("add_eos", False),
        progress=args.progress,
    )


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# ---- commands --------------------------------------------------------------------------------------------


def cmd_train(args) -> dict:
    import interp

    from . import tasks as _tasks
    from .generate import generate
    from .head import ClassifierHead
    from .io import save
    from .model import at_layers, attach
    from .train import evaluate, train_reft

    method = args.method.lower()
    if method not in KINDS and method not in BASELINES:
        raise ReftError(f"unknown method {args.method!r}; expected one of {', '.join((*KINDS, *BASELINES))}")
    defaults = _defaults(args)
    data = _data(args)
    config = _config(args, defaults, method)  # validates before the model loads
    if args.head and (method in BASELINES or not data.label_words):
        raise ReftError(
            f"--head trains a classifier head with a ReFT method; got --method {method} "
            f"{'with' if data.label_words else 'and no'} label words (use --label-words or --task sentiment)"
        )
    lm = interp.load(args.model)
    base_params = sum(p.numel() for p in lm.hf.parameters())
    out = {"task": args.task or args.data, "method": method, "steps": config.steps}
    t0 = time.perf_counter()
    if method in BASELINES:
        from .baselines import train_lora

        res = train_lora(
            lm,
            data.train,
            config,
            rank=args.lora_rank,
            dora=method == "dora",
            eval_examples=data.test or None,
            label_words=data.label_words,
        )
        n, hist, metrics = res.trainable_params, res.history, res.metrics
    else:
        layers = _pick(args, "layers", defaults, str(lm.n_layers // 2))
        positions = _pick(args, "positions", defaults, "f1+l1")
        rank = _pick(args, "rank", defaults, 4)
        head = ClassifierHead.from_label_words(lm, data.label_words) if args.head else None
        rlm = attach(lm, at_layers(lm, layers, pos=positions, kind=method, rank=rank), tied=not args.untied, head=head)
        out.update(layers=str(layers), positions=positions, rank=rank, tied=not args.untied, head=args.head)
        hist = train_reft(rlm, data.train, config, label_words=data.label_words)
        n = rlm.trainable_params
        metrics = evaluate(rlm, data.test, label_words=data.label_words, config=config) if data.test else {}
        if data.eval_prompts:
            decoding = {"max_new_tokens": 24}
            if "repetition_penalty" in defaults:
                decoding["repetition_penalty"] = defaults["repetition_penalty"]
            out["decoding"] = decoding
            out["samples"] = [
                {"prompt": p, "reft": r, "base": b}
                for p, r, b in zip(
                    data.eval_prompts,
                    generate(rlm, data.eval_prompts, **decoding),
                    generate(lm, data.eval_prompts, **decoding),
                )
            ]
            if args.task == "style":
                style = _tasks.get("style")
                out["style_rate"] = style.style_rate([s["reft"] for s in out["samples"]])
                out["style_rate_base"] = style.style_rate([s["base"] for s in out["samples"]])
        if args.out:
            out["saved"] = str(save(rlm, args.out, overwrite=args.overwrite))
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
        peak_rss_mb=_peak_rss_mb(),
    )
    return out


def cmd_eval(args) -> dict:
    import interp

    from .io import load
    from .train import TrainConfig, evaluate

    data = _data(args)
    examples = data.test or data.train
    lm = interp.load(args.model)
    rlm = load(lm, args.load)
    config = TrainConfig(batch_size=args.batch_size or 8, max_prompt_tokens=args.max_prompt_tokens)
    return {
        "task": args.task or args.data,
        "load": args.load,
        "reft": evaluate(rlm, examples, label_words=data.label_words, config=config),
        "base": evaluate(lm, examples, label_words=data.label_words, config=config),
    }


def cmd_generate(args) -> dict:
    import interp

    from .generate import generate
    from .io import load

    lm = interp.load(args.model)
    model = load(lm, args.load) if args.load else lm
    prompts = [p.replace("\\n", "\n") for p in args.prompt]
    kw = {} if args.repetition_penalty is None else {"repetition_penalty": args.repetition_penalty}
    return {"prompts": prompts, "generations": generate(model, prompts, max_new_tokens=args.max_new_tokens, **kw)}


def cmd_compare(args) -> dict:
    """Each method in its own process (so peak memory is per method), same data, steps and evaluation."""
    methods = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in KINDS and m not in BASELINES]
    if bad:
        raise ReftError(f"unknown methods {bad}; expected some of {', '.join((*KINDS, *BASELINES))}")
    defaults = _defaults(args)
    steps = _pick(args, "steps", defaults, 100)
    commands = {}
    for m in methods:
        cmd = [
            sys.executable,
            "-m",
            "reft",
            "train",
            "--method",
            m,
            "--json",
            "--steps",
            str(steps),
            "--seed",
            str(args.seed),
            "--max-prompt-tokens",
            str(args.max_prompt_tokens),
        ]
        for flag in (
            "task",
            "data",
            "eval_data",
            "label_words",
            "model",
            "n_train",
            "n_test",
            "batch_size",
            "layers",
            "positions",
            "rank",
            "lr",
            "lora_rank",
        ):
            v = getattr(args, flag, None)
            if v is not None and not (flag == "lr" and m in BASELINES):
                cmd += [f"--{flag.replace('_', '-')}", str(v)]
        if args.untied:
            cmd.append("--untied")
        if args.head and m not in BASELINES:  # LoRA/DoRA score the label words through the tuned model
            cmd.append("--head")
        commands[m] = cmd
    keep = (
        "accuracy",
        "trainable_params",
        "percent_of_base",
        "seconds_per_step",
        "peak_rss_mb",
        "eval_loss",
        "train_loss_last",
        "response_tokens",
        "layers",
        "positions",
        "rank",
    )
    results, running, queue = {}, {}, list(methods)
    while queue or running:  # at most --jobs methods at a time, each in its own process
        while queue and len(running) < max(1, args.jobs):
            m = queue.pop(0)
            running[m] = subprocess.Popen(commands[m], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        m = next(iter(running))
        out, err = running.pop(m).communicate()
        if not out.strip():
            raise ReftError(f"method {m} failed:\n{err[-2000:]}")
        r = json.loads(out.strip().splitlines()[-1])
        results[m] = {k: r[k] for k in keep if k in r}
        print(f"{m}: {results[m]}", file=sys.stderr)
    results = {m: results[m] for m in methods}
    return {"task": args.task or args.data, "steps": steps, "methods": results, "frozen": _frozen(args)}


def _frozen(args) -> dict:
    """The frozen model on the same held-out examples: the floor every method starts from."""
    import interp

    from .train import evaluate

    data = _data(args)
    if not data.test:
        return {}
    config = _config(args, _defaults(args), "loreft")  # the evaluation every method's `reft train` runs
    r = evaluate(interp.load(args.model), data.test, label_words=data.label_words, config=config)
    return {"accuracy": r["accuracy"], "eval_loss": r["loss"]}
