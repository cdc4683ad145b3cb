"""Command line: ``interp <command> ...`` (also ``python -m interp``).

Each command is a module in this package with ``add_parser(subparsers)`` and ``run(args) -> dict``;
``--json`` prints the returned dict as one JSON object, otherwise a short human summary is printed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

COMMANDS = ("patch", "das", "sweep")  # modules of interp.cli, one per subcommand


def output_files(out, stem: str, overwrite: bool):
    """``(png, json)`` paths for a command's results in ``out``, refusing to replace earlier ones unasked.

    Example:
        >>> png, js = output_files("results/demo", "patch_ioi", overwrite=True)
        >>> png.name, js.name
        ('patch_ioi.png', 'patch_ioi.json')
    """
    from pathlib import Path

    png, js = Path(out) / f"{stem}.png", Path(out) / f"{stem}.json"
    existing = [str(f) for f in (png, js) if f.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist; pass --overwrite or choose another --out")
    return png, js


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="interp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name in COMMANDS:
        mod = importlib.import_module(f"interp.cli.{name}")
        p = mod.add_parser(sub)
        p.add_argument("--json", action="store_true", help="print one JSON object with the results")
        modules[name] = mod
    args = parser.parse_args(argv)
    try:
        result = modules[args.command].run(args)
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        print(f"interp {args.command}: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            if not isinstance(value, list):
                print(f"{key}: {value}")
    return 0
