"""What ``reft serve`` runs inside vLLM: the edits loaded in the worker, and the guard on the server's requests.

Example:
    >>> [name for name in vars(ServeWorker) if not name.startswith("__")]     # what vLLM's worker gains
    ['reft_serve_install']

vLLM's OpenAI-compatible server (vLLM 0.32) keeps its engine out of the server process: an engine-core process and,
on CPU, a worker process that holds the model. Its plugin interfaces reach that process in two ways: a general
plugin (an entry point, loaded in every process, with no say over which model is loaded) and ``worker_extension_cls``
(methods added to the worker, called with ``collective_rpc``). ``reft serve`` uses the second: :class:`ServeWorker`
loads the edits there and installs :class:`interp.engine.vllm_edit.VllmEditor`, which reads each request's edit name
from ``SamplingParams.extra_args`` (vLLM's ``vllm_xargs``) at every step. The server process keeps the names, to
refuse an unknown one with HTTP 400 before it reaches the engine (a raise inside the forward would stop the engine),
and sets each edited request's ``cache_salt``; it needs the edits' positions for that, so it loads them too.
"""

from __future__ import annotations

from safetensors.torch import load_file
from transformers import AutoConfig

from interp.engine.vllm_edit import VllmEditor, check_architecture
from interp.errors import ServeError
from interp.models import load as load_model
from interp.sites import Site

from ..positions import parse_positions
from ..serve.edits import as_edit, cache_salt, check_model, served_ops

KEY = "reft"  # SamplingParams.extra_args[KEY]: the edit's name (reft.serve.Server uses the same key)


def load_served(folder: str, specs: dict[str, dict]):
    """``({name: [ServedOp]}, tokenizer)`` of the edits ``specs`` (from :func:`reft.cli.serve.parse_edit`) on the
    model in ``folder``: ReFT folders loaded with :func:`reft.load`, steering vectors read from safetensors."""
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    arch = (config.architectures or ["?"])[0]
    check_architecture(arch)
    lm = load_model(folder)
    served = {}
    for name, spec in specs.items():
        if "layer" in spec:
            tensors = load_file(spec["path"])
            if len(tensors) != 1:
                raise ServeError(f"edit {name!r}: {spec['path']!r} holds {len(tensors)} tensors ({sorted(tensors)}); "
                                 "expected one steering vector")  # fmt: skip
            site = Site(spec["component"], spec["layer"], parse_positions(spec["positions"]))
            edit = as_edit(name, (site, next(iter(tensors.values())), spec["scale"]), lambda: lm)
        else:
            edit = as_edit(name, spec["path"], lambda: lm)
        check_model(name, edit, config)
        served[name] = served_ops(edit, arch)
    return served, lm.tokenizer


class OwnNames(type):
    """A class whose ``dir()`` lists its own names only. nnsight (imported with interp) mounts ``save`` on every
    object, and vLLM refuses a worker extension whose ``dir()`` shares a name with the worker class: with nnsight
    loaded, ``save`` is on both."""

    def __dir__(cls):
        return sorted(vars(cls))


class ServeWorker(metaclass=OwnNames):
    """Mixed into vLLM's worker class by ``--worker-extension-cls`` (its methods only; vLLM checks no name clashes)."""

    def reft_serve_install(self, folder: str, specs: dict) -> list[str]:
        """Load the served edits on this worker's model and hook vLLM's forward with them (the editor of
        reft.serve); returns the names served."""
        runner = self.model_runner
        model = runner.get_model()
        if not hasattr(runner, "input_batch") or not hasattr(runner, "requests"):
            raise ServeError(f"vLLM runs a {type(runner).__name__}; the edits need the V1 model runner "
                             "(VLLM_USE_V2_MODEL_RUNNER=0, set by reft serve)")  # fmt: skip
        served, tokenizer = load_served(folder, specs)
        self.reft_serve_editor = VllmEditor(model, runner, served, tokenizer=tokenizer, key=KEY).install()
        return sorted(served)


def guard(client, served: dict, tokenizer) -> None:
    """Wrap the engine client's ``generate`` (the one call every OpenAI endpoint makes): refuse an unknown edit name
    (vLLM answers HTTP 400) and salt the prefix cache of each edited request. Refuse beam search with an edit: vLLM
    re-submits each beam as a new request without the request's extra arguments, so the edit would be dropped."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest
    from vllm.exceptions import VLLMValidationError

    for kind in (CompletionRequest, ChatCompletionRequest):
        kind.to_beam_search_params = _no_beam_search(kind.to_beam_search_params, VLLMValidationError)

    generate = client.generate

    def guarded(prompt, sampling_params, request_id, *args, **kwargs):
        extra = getattr(sampling_params, "extra_args", None) or {}
        if KEY + "_id" in extra:  # reft.serve.Server's tag, which only its check reads (and forgets): not a client's
            extra = {k: v for k, v in extra.items() if k != KEY + "_id"}
            sampling_params.extra_args = extra
        name = extra.get(KEY)
        if name is not None:
            if name not in served:
                why = f"unknown edit {name!r}; served: {sorted(served)} (or none: leave out vllm_xargs.{KEY})"
                raise VLLMValidationError(why, parameter=f"vllm_xargs.{KEY}", value=name)
            ids = prompt.get("prompt_token_ids") if isinstance(prompt, dict) else None
            if ids is None or prompt.get("type", "token") != "token":
                raise VLLMValidationError("an edit needs the prompt as text or token ids (not embeddings)",
                                          parameter=f"vllm_xargs.{KEY}", value=name)  # fmt: skip
            salt = cache_salt(name, served[name], ids, tokenizer)
            prompt = {**prompt, "cache_salt": salt + prompt.get("cache_salt", "")}
        return generate(prompt, sampling_params, request_id, *args, **kwargs)

    client.generate = guarded


def _no_beam_search(to_beam_search_params, error):
    def refuse(request, *args, **kwargs):
        name = (request.vllm_xargs or {}).get(KEY)
        if name is not None:
            why = (f"beam search cannot carry edit {name!r}: vLLM re-submits every beam as a new request without "
                   "vllm_xargs; use greedy or sampled decoding with an edit")  # fmt: skip
            raise error(why, parameter="use_beam_search", value=True)
        return to_beam_search_params(request, *args, **kwargs)

    return refuse


def vllm_args(argv: list[str]):
    """vLLM server's options parsed and validated by its own parser (as ``vllm serve`` does)."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
    from vllm.logger import configure_logging_from_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    cli_env_setup()
    args = make_arg_parser(FlexibleArgumentParser(prog="reft serve (vLLM)")).parse_args(argv)
    configure_logging_from_args(args)
    validate_parsed_serve_args(args)
    return args


async def serve(args, folder: str, specs: dict) -> list[str]:
    """vLLM's ``run_server`` with one step more: the edits installed in the worker before the first request."""
    from vllm.entrypoints.launchers.api_server.entry import build_and_serve, build_async_engine_client
    from vllm.entrypoints.launchers.launcher import setup_server

    served, tokenizer = load_served(folder, specs)  # here too: names and positions, for the guard
    listen_address, sock = setup_server(args, reuse_port=False)
    async with build_async_engine_client(args) as client:
        names = await client.collective_rpc("reft_serve_install", args=(folder, specs))
        if any(sorted(n) != sorted(served) for n in names):
            raise ServeError(f"vLLM's workers serve {names}, expected {sorted(served)}")
        guard(client, served, tokenizer)
        how = f'name one per request with "vllm_xargs": {{"{KEY}": NAME}}'
        url = f"http://{args.host}:{args.port}/v1"
        print(f"reft serve: {url} serves {args.served_model_name[0]!r} with edits {sorted(served)}: {how}", flush=True)
        shutdown = await build_and_serve(client, listen_address, sock, args)
    try:
        await shutdown
    finally:
        sock.close()
    return sorted(served)
