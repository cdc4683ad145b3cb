"""``reft serve``: vLLM's OpenAI-compatible server with named edits; each request picks its own (or none).

Example:
    reft serve --edit style=runs/style --edit calm=calm.safetensors,layer=6,positions=all,scale=4 --port 8000
    curl -s http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' -d '{"model": "gemma-3-270m",
      "prompt": "Who are you?", "max_tokens": 32, "temperature": 0, "vllm_xargs": {"reft": "style"}}'

An edit is a folder written by ``reft train --out`` (``reft.save``) or a steering vector: a ``.safetensors`` file
holding one tensor of the model's width, with ``layer=`` (required), ``component=`` (default resid_post),
``positions=`` (default all) and ``scale=`` (default 1) after the path. A request names its edit in vLLM's extra
arguments, ``"vllm_xargs": {"reft": NAME}`` (completions and chat completions); without it the request is served
unedited, and an unknown name is refused with HTTP 400 before it reaches the engine.

How: vLLM's server runs its engine in other processes (the engine core, and on CPU a worker process), so the edits
are installed where the model is: vLLM's ``--worker-extension-cls`` adds :class:`reft.cli.serve_worker.ServeWorker`
to the worker and one ``collective_rpc`` installs :class:`interp.engine.vllm_edit.VllmEditor` there, the editor that
:class:`reft.serve.Server` uses; the request's edit name travels in ``SamplingParams.extra_args``. The server process
sets each edited request's ``cache_salt`` (:func:`reft.serve.edits.cache_salt`), so prefix caching never shares a
prefix between requests with different edits. Needs the ``serve`` extra (``make serve-venv``; docs/serving.md).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import shlex
from pathlib import Path

from interp.engine.vllm_edit import KINDS, SUPPORTED
from interp.errors import ServeError
from interp.models import DEFAULT_MODEL, embedded_model_path

from ..positions import parse_positions
from . import serve_worker

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
STEER_OPTIONS = {"layer": int, "component": str, "positions": str, "scale": float}
WORKER = f"{serve_worker.__name__}.ServeWorker"
# vLLM server flags that reft serve sets itself, or that the edits cannot run under (reft.serve.server.REFUSED)
OWN_FLAGS = ("--enforce-eager", "--no-enforce-eager", "--compilation-config", "-cc", "--tensor-parallel-size", "-tp",
             "--pipeline-parallel-size", "-pp", "--speculative-config", "--worker-extension-cls", "--model", "--host",
             "--port", "-O")  # fmt: skip


def add_parser(sub):
    p = sub.add_parser(
        "serve",
        help="vLLM's OpenAI-compatible server with named edits, one chosen per request",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default=None, help="a local model folder (default: the embedded Gemma-3-270M)")
    p.add_argument(
        "--edit", action="append", default=[], metavar="NAME=PATH[,key=value...]",
        help="a served edit: NAME=FOLDER (reft train --out) or NAME=FILE.safetensors,layer=L[,component=resid_post]"
        "[,positions=all][,scale=1] (a steering vector); repeat for more",
    )  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", default=None, help="the name requests give as model (default: the folder's)")
    p.add_argument("--max-model-len", type=int, default=512, help="the longest prompt + completion, in tokens")
    p.add_argument("--dtype", default="float32", help="vLLM's --dtype (float32 to match reft.generate on CPU)")
    p.add_argument("--kv-cache-memory-bytes", type=int, default=256 << 20, help="the KV cache's size (256 MiB)")
    p.add_argument(
        "--vllm-args", default="", help="more options for vLLM's server in one string: --vllm-args='--max-num-seqs 8'"
    )
    return p


def parse_edit(text: str) -> tuple[str, dict]:
    """``NAME=PATH[,key=value...]`` -> ``(name, spec)``; ``spec`` is plain data (it travels to vLLM's worker).

    Example:
        >>> parse_edit("calm=v.safetensors,layer=6,scale=4")
        ('calm', {'path': 'v.safetensors', 'layer': 6, 'component': 'resid_post', 'positions': 'all', 'scale': 4.0})
        >>> parse_edit("style=runs/style")
        ('style', {'path': 'runs/style'})
    """
    name, sep, rest = text.partition("=")
    if not sep or not NAME.match(name) or not rest:
        raise ServeError(f"--edit {text!r}: expected NAME=PATH (a name of letters, digits, '_', '.', '-'), like "
                         "style=runs/style or calm=calm.safetensors,layer=6")  # fmt: skip
    path, *options = rest.split(",")
    if not path.endswith(".safetensors"):
        if options:
            raise ServeError(f"--edit {text!r}: options follow a steering vector (.safetensors) only; a ReFT folder "
                             "carries its own sites")  # fmt: skip
        return name, {"path": path}
    spec = {"path": path, "layer": None, "component": "resid_post", "positions": "all", "scale": 1.0}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or key not in STEER_OPTIONS:
            raise ServeError(f"--edit {text!r}: unknown option {option!r}; a steering vector takes "
                             f"{', '.join(k + '=' for k in STEER_OPTIONS)}")  # fmt: skip
        try:
            spec[key] = STEER_OPTIONS[key](value)
        except ValueError:
            raise ServeError(f"--edit {text!r}: {key}={value!r} is not a {STEER_OPTIONS[key].__name__}") from None
    if spec["layer"] is None:
        raise ServeError(f"--edit {text!r}: a steering vector needs layer=L (where to add it)")
    if spec["component"] not in KINDS:
        raise ServeError(f"--edit {text!r}: component={spec['component']!r}; served components are "
                         f"{', '.join(KINDS)}")  # fmt: skip
    parse_positions(spec["positions"])  # a bad one names itself
    return name, spec


def edits(args) -> dict[str, dict]:
    """``{name: spec}`` of every ``--edit``: names unique, paths present."""
    out: dict[str, dict] = {}
    for text in args.edit:
        name, spec = parse_edit(text)
        if name in out:
            raise ServeError(f"--edit {text!r}: the name {name!r} is given twice; give each edit its own name")
        path = Path(spec["path"])
        if spec["path"].endswith(".safetensors") and not path.is_file():
            raise FileNotFoundError(f"--edit {text!r}: {spec['path']!r} is not a file; expected a .safetensors file "
                                    "holding one steering vector")  # fmt: skip
        if not spec["path"].endswith(".safetensors") and not (path / "config.json").is_file():
            raise FileNotFoundError(f"--edit {text!r}: {spec['path']!r} is not a folder written by reft train --out "
                                    "(reft.save); expected config.json and weights.safetensors in it")  # fmt: skip
        out[name] = spec
    return out


def model_folder(args) -> Path:
    """The served folder: ``--model``, else the embedded Gemma-3-270M (converted on first use)."""
    if args.model is None or args.model == DEFAULT_MODEL:
        return embedded_model_path()
    return Path(args.model)


def check(args) -> None:
    """Everything ``reft serve`` can refuse before vLLM starts."""
    edits(args)
    if not 1 <= args.port <= 65535:
        raise ServeError(f"--port {args.port}: expected 1..65535")
    if args.max_model_len < 2 or args.kv_cache_memory_bytes < 1:
        raise ServeError(f"--max-model-len {args.max_model_len} / --kv-cache-memory-bytes "
                         f"{args.kv_cache_memory_bytes}: expected positive sizes")  # fmt: skip
    if args.model is not None and args.model != DEFAULT_MODEL:
        config = Path(args.model) / "config.json"
        if not config.is_file():
            raise FileNotFoundError(f"--model {args.model!r}: no config.json; expected a local model folder (vLLM "
                                    "reads safetensors and the tokenizer from it)")  # fmt: skip
        arch = (json.loads(config.read_text()).get("architectures") or ["?"])[0]
        if arch not in SUPPORTED:
            raise ServeError(f"--model {args.model!r} is a {arch}; edits are served in vLLM on "
                             f"{', '.join(SUPPORTED)}; run it with reft generate instead")  # fmt: skip
    vllm_argv(args, Path(args.model or "."))  # --vllm-args parse, and refuse what the edits cannot run under
    if importlib.util.find_spec("vllm") is None:
        raise ServeError("reft serve needs vLLM, which this environment lacks: build the serving environment with "
                         "`make serve-venv`, then run .venv-serve/bin/reft serve ... (docs/serving.md)")  # fmt: skip


def _sets(flag: str, word: str) -> bool:
    """Whether a command-line word sets ``flag``: ``--f``, ``--f=v``, ``--f.key`` (vLLM's dotted form); ``-O3``."""
    return word == flag or word.startswith((flag + "=", flag + ".")) or (flag == "-O" and word.startswith(flag))


def vllm_argv(args, folder: Path) -> list[str]:
    """vLLM server's command line: ours, then ``--vllm-args``; refuses options the edits cannot run under."""
    try:
        extra = shlex.split(args.vllm_args)
    except ValueError as e:
        raise ServeError(f"--vllm-args {args.vllm_args!r}: {e}; give vLLM's options as one quoted string") from None
    for flag in OWN_FLAGS:
        if any(_sets(flag, a) for a in extra):
            raise ServeError(f"--vllm-args {args.vllm_args!r}: {flag} is set by reft serve (edits run in eager mode, "
                             "on one device, in vLLM's own worker) or has its own option")  # fmt: skip
    return [
        "--model", str(folder), "--host", args.host, "--port", str(args.port),
        "--served-model-name", args.served_model_name or folder.name, "--dtype", args.dtype,
        "--max-model-len", str(args.max_model_len), "--kv-cache-memory-bytes", str(args.kv_cache_memory_bytes),
        "--enforce-eager", "--worker-extension-cls", WORKER, *extra,
    ]  # fmt: skip


def run(args) -> dict:
    folder = model_folder(args)
    specs = edits(args)
    # the V1 model runner, whose batch layout the editor reads; inherited by vLLM's processes
    os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "0"
    vargs = serve_worker.vllm_args(vllm_argv(args, folder))
    served = asyncio.run(serve_worker.serve(vargs, str(folder), specs))
    return {"model": str(folder), "edits": served, "stopped": True}
