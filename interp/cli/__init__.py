"""Command line: ``interp <command> ...`` (also ``python -m interp``).

Each command is a module in this package with ``add_parser(subparsers)``, ``check(args)`` and ``run(args) -> dict``.
``check`` refuses every bad option it can before anything heavy happens (output folders, numbers, layers from the
model's config alone, position names); ``run`` does the work. ``--json`` prints the returned dict as one JSON
object, otherwise a short human summary is printed. An error is one line on stderr (exit 2 for bad input, 1 for
other failures, 130 when interrupted); ``--debug`` shows the traceback instead. The ``reft`` command line shares
:func:`execute` and the checks here.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from pathlib import Path

from transformers import AutoConfig

from interp.distributed import is_main
from interp.io import check_output_dir, write_file_atomic
from interp.lm import first_attr
from interp.models import DEFAULT_MODEL, cache_dir

COMMANDS = ("patch", "das", "sweep", "bench", "circuit")  # modules of interp.cli, one per subcommand
# bad input (exit 2): the library's errors subclass ValueError; these are the ones about paths
USAGE_ERRORS = (ValueError, FileExistsError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def output_files(out, stem: str, overwrite: bool, *, what: str = "--out folder"):
    """``(png, json)`` paths for a command's results in ``out``, refusing to replace earlier ones unasked.

    ``out`` may hold other results; it must be a folder (or not exist yet) that can be written.

    Example:
        >>> png, js = output_files(tmp / "demo", "patch_ioi", overwrite=True)
        >>> png.name, js.name
        ('patch_ioi.png', 'patch_ioi.json')
    """
    out = check_output_dir(out, overwrite=True, what=what)  # a file, or no write permission: refused
    png, js = out / f"{stem}.png", out / f"{stem}.json"
    existing = [str(f) for f in (png, js) if f.exists()]
    if existing and not overwrite:
        verb = "exists" if len(existing) == 1 else "exist"
        raise FileExistsError(f"{', '.join(existing)} already {verb}; pass --overwrite or choose another --out")
    return png, js


def write_json(path: Path, result: dict, overwrite: bool) -> Path:
    """A command's JSON results, written atomically (a killed run leaves no half file; a file made meanwhile is
    kept unless ``overwrite``)."""
    return write_file_atomic(path, json.dumps(result, indent=1), overwrite=overwrite)


def check_positive(args, *names: str) -> None:
    """Refuse a given option among ``names`` (attributes of ``args``) that is not a positive finite number; None is
    not given.

    Example:
        >>> check_positive(argparse.Namespace(steps=0, lr=None), "steps", "lr")
        Traceback (most recent call last):
        ValueError: --steps 0: expected a positive number
        >>> check_positive(argparse.Namespace(lr=float("inf")), "lr")
        Traceback (most recent call last):
        ValueError: --lr inf: expected a positive number, not infinity
    """
    for name in names:
        value = getattr(args, name, None)
        if value is not None and not (value > 0 and math.isfinite(value)):
            finite = ", not infinity" if value > 0 else ""
            raise ValueError(f"--{name.replace('_', '-')} {value}: expected a positive number{finite}")


def model_shape(model: str | None) -> tuple[int, int] | None:
    """``(n_layers, d_model)`` of ``--model`` read from its config alone (no weights), to check layers and ranks
    before loading; None for the embedded default before its first use converts it (loading tells then).

    Example:
        >>> model_shape(str(tmp / "no-such-model"))
        Traceback (most recent call last):
        FileNotFoundError: --model '.../no-such-model': cannot read its config offline; expected a local folder ...
    """
    if model is None or str(model) == DEFAULT_MODEL:
        path = cache_dir() / DEFAULT_MODEL
        if not (path / "config.json").exists():
            return None
    else:
        path = model
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError):
        raise FileNotFoundError(
            f"--model {str(model)!r}: cannot read its config offline; expected a local folder saved with "
            "save_pretrained (config.json, weights, tokenizer) or a model id already in the local HF cache; "
            "leave --model out for the embedded Gemma-3-270M"
        ) from None
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return first_attr(config, "num_hidden_layers", "n_layer"), first_attr(config, "hidden_size", "n_embd", "d_model")


def add_common_flags(p: argparse.ArgumentParser) -> None:
    """The flags every subcommand of both command lines has: ``--json`` and ``--debug``."""
    p.add_argument("--json", action="store_true", help="print one JSON object with the results")
    p.add_argument("--debug", action="store_true", help="on an error, show the full traceback (for a bug report)")


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (its subcommands' parsers too), not the whole usage.

    Example:
        >>> import contextlib, io
        >>> p, err = Parser(prog="demo"), io.StringIO()
        >>> _ = p.add_argument("--lr", type=float)
        >>> with contextlib.redirect_stderr(err):
        ...     code = parse(p, ["--lr", "x"])
        >>> code, err.getvalue()
        (2, "demo: error: argument --lr: invalid float value: 'x' (see demo --help)\\n")
    """

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())} (see {self.prog} --help)\n")


def parse(parser: argparse.ArgumentParser, argv) -> argparse.Namespace | int:
    """``parser.parse_args(argv)``, or the exit code where argparse refused the options (it printed why, in one
    line when ``parser`` is a :class:`Parser`)."""
    try:
        return parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else 2


def execute(prog: str, module, args) -> dict | int:
    """``module.check(args)`` then ``module.run(args)``: the result, or an exit code after one line on stderr.

    Exit 2 for bad input (:data:`USAGE_ERRORS`), 1 for any other failure, 130 when interrupted;
    ``args.debug`` re-raises instead, for the full traceback.
    """
    where = f"{prog} {args.command}"
    debug = getattr(args, "debug", False)
    try:
        if hasattr(module, "check"):
            module.check(args)
        return module.run(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{where}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        usage = isinstance(e, USAGE_ERRORS)
        text = " ".join(str(e).split()) or type(e).__name__  # one line
        if not usage:
            text = f"{type(e).__name__}: {text} (run again with --debug for the traceback)"
        print(f"{where}: error: {text}", file=sys.stderr)
        return 2 if usage else 1


def main(argv=None) -> int:
    parser = Parser(prog="interp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name in COMMANDS:
        mod = importlib.import_module(f"interp.cli.{name}")
        add_common_flags(mod.add_parser(sub))
        modules[name] = mod
    args = parse(parser, argv)
    if isinstance(args, int):
        return args
    result = execute("interp", modules[args.command], args)
    if isinstance(result, int):
        return result
    if not is_main():
        return 0  # under torchrun, rank 0 prints
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            if not isinstance(value, list):
                print(f"{key}: {value}")
    return 0
