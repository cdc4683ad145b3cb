"""A vLLM engine that serves trained edits: every request names its own (or none), all in one continuous batch.

Example:
    >>> server = Server("path/to/gemma-3-270m", edits={"style": "runs/style", "calm": reft.steering.steer(
    ...     lm, Site("resid_post", 6, all_tokens()), v, scale=4.0)})                        # doctest: +SKIP
    >>> out = server.generate(["Who are you?", "Who are you?"], interventions=["style", None],
    ...                       sampling={"max_tokens": 32})                               # doctest: +SKIP
    >>> out[0].text, out[1].token_ids                                                    # doctest: +SKIP

The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, set here) in eager mode, and the edits run
inside its forward (:mod:`interp.engine.vllm_edit`). Each request carries its edit's name in
``SamplingParams.extra_args["reft"]`` and a ``cache_salt`` (:func:`reft.serve.edits.cache_salt`), so prefix caching
never shares a prefix between requests with different edits. Prompts are tokenized with the model folder's tokenizer
as :func:`reft.generate` does, so both see the same token ids. After each request, the edits it needed are checked
to have been applied (:class:`interp.errors.EditNotAppliedError` otherwise).

Not supported (refused with :class:`interp.errors.ServeError`): architectures other than Gemma 3 and Llama;
components other than resid_pre/mid/post, attn_out and mlp_out; ``enforce_eager=False`` (compiled graphs and CUDA
graphs do not run module hooks); tensor or pipeline parallelism and several engine processes (the hooks live in this
process); speculative decoding; prompts given as embeddings; a ReftModel with a classifier head.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer

from interp.engine.vllm_edit import VllmEditor, check_architecture
from interp.errors import PositionError, ServeError
from interp.models import embedded_model_path
from interp.models import load as load_model

from .edits import as_edit, cache_salt, check_model, served_ops

DEFAULTS = {"dtype": "float32", "max_model_len": 512, "enforce_eager": True, "kv_cache_memory_bytes": 256 << 20}
REFUSED = {  # option: (the values allowed, why others are refused)
    "enforce_eager": ((True,), "compiled graphs and CUDA graphs do not run the module hooks the edits use"),
    "tensor_parallel_size": ((None, 1), "the edits' hooks live in this process; serve on one device"),
    "pipeline_parallel_size": ((None, 1), "the edits' hooks live in this process; serve on one device"),
    "speculative_config": ((None,), "draft tokens would be edited as if they were generated"),
    "compilation_config": ((None,), "a compiled forward does not run the module hooks the edits use"),
}
GREEDY = {"temperature": 0.0, "max_tokens": 16}


@dataclass
class Completion:
    """One request's result: the generated ``text`` and ``token_ids``, the prompt's token ids, the edit, how many
    prompt tokens came from vLLM's prefix cache (``cached_tokens``) and, when the sampling asked for logprobs,
    each generated token's log-probability (``logprobs``)."""

    text: str
    token_ids: list[int]
    prompt_token_ids: list[int]
    intervention: str | None
    cached_tokens: int = 0
    logprobs: list[float] | None = None


class Server:
    """A vLLM engine on ``model_folder`` (default: the embedded Gemma-3-270M) with named ``edits``.

    Args:
        model_folder: a local Hugging Face model folder (``config.json``, safetensors, tokenizer).
        edits: ``{name: edit}``; an edit is a saved ReFT folder, a ReftModel, a Steering or a
            ``(Site, vector[, scale])`` pair.
        lm: the same model loaded by :func:`interp.load`, to load ReFT folders and steering pairs on (default:
            loaded from ``model_folder`` when one is needed).
        **vllm_options: passed to ``vllm.LLM`` over the defaults :data:`DEFAULTS` (float32, 512 tokens, eager, a
            256 MiB KV cache).
    """

    def __init__(self, model_folder=None, edits: dict | None = None, *, lm=None, **vllm_options):
        folder = Path(embedded_model_path() if model_folder is None else model_folder)
        config = _config(folder)
        for key, (allowed, why) in REFUSED.items():
            value = vllm_options.get(key)
            if key in vllm_options and value not in allowed:
                raise ServeError(f"reft.serve.Server does not support {key}={value!r}: {why}")
        edits = dict(edits or {})
        for name in edits:
            if not isinstance(name, str) or not name:
                raise ServeError(f"edit names must be non-empty strings; got {name!r}")
        self.folder, self._lm, self._count = folder, lm, itertools.count()
        arch = (config.architectures or ["?"])[0]
        check_architecture(arch)
        loaded = {name: as_edit(name, e, self.hf_model) for name, e in edits.items()}
        for name, e in loaded.items():
            check_model(name, e, config)
        self.served = {name: served_ops(e, arch) for name, e in loaded.items()}  # refused here, before vLLM starts
        self.edits = loaded
        self.tokenizer = lm.tokenizer if lm is not None else _tokenizer(folder)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine in this process, where the hooks are
        os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "0"  # the V1 runner, whose batch layout the editor reads
        from vllm import LLM  # the optional extra: pip install -e ".[serve]"

        self.llm = LLM(model=str(folder), **{**DEFAULTS, **vllm_options})
        runner = self.llm.collective_rpc(_runner)[0]
        model = runner.get_model()
        if type(model).__name__ != arch or not hasattr(runner, "input_batch"):
            raise ServeError(
                f"vLLM built a {type(model).__name__} with a {type(runner).__name__} for this {arch} folder; the edits "
                "need the V1 model runner and the architecture's own class"
            )
        self.editor = VllmEditor(model, runner, self.served, tokenizer=self.tokenizer).install()

    def close(self) -> None:
        """Take the hooks off, shut the engine down and free its memory (a later Server may start another)."""
        if getattr(self, "llm", None) is None:
            return
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        self.editor.remove()
        self.llm.llm_engine.engine_core.shutdown()
        self.llm = None
        cleanup_dist_env_and_memory()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def hf_model(self):
        """The Hugging Face copy of the served model (:func:`interp.load`), loaded once when first needed."""
        if self._lm is None:
            self._lm = load_model(self.folder)
        return self._lm

    def encode(self, prompts: Sequence) -> list[list[int]]:
        """Token ids of each prompt (a string, tokenized as :func:`reft.generate` does, or a list of ids)."""
        out = []
        for i, p in enumerate(prompts):
            if isinstance(p, str) and self.tokenizer is None:
                raise ServeError(f"prompt {i} is text, but this model has no tokenizer; give token ids")
            ids = self.tokenizer(p)["input_ids"] if isinstance(p, str) else [int(t) for t in p]
            if not ids:
                raise ServeError(f"prompt {i} is empty; give at least one token")
            out.append(list(ids))
        return out

    def generate(self, prompts, interventions: Sequence[str | None] | None = None, sampling=None) -> list[Completion]:
        """One :class:`Completion` per prompt, prompt ``i`` served with edit ``interventions[i]`` (None: none).

        ``sampling``: None (greedy, 16 new tokens), a dict of ``vllm.SamplingParams`` fields over that default, or a
        ``SamplingParams``. Every request is checked, after it ends, to have had its edits applied.
        """
        from vllm import SamplingParams

        single = isinstance(prompts, str)
        prompts = [prompts] if single else list(prompts)
        names = [None] * len(prompts) if interventions is None else list(interventions)
        if len(names) != len(prompts):
            raise ServeError(f"got {len(names)} interventions for {len(prompts)} prompts; give one name (or None) each")
        unknown = [n for n in names if n is not None and n not in self.served]
        if unknown:
            raise ServeError(f"unknown intervention {unknown[0]!r}; served: {sorted(self.served)} (or None)")
        if sampling is None or isinstance(sampling, dict):
            params = SamplingParams(**{**GREEDY, **(sampling or {})})
        elif isinstance(sampling, SamplingParams):
            params = sampling
        else:
            raise ServeError(f"sampling must be None, a dict or a vllm.SamplingParams; got {type(sampling).__name__}")
        if params.n != 1:
            raise ServeError(f"sampling n={params.n}: Server.generate returns one completion per prompt; repeat the "
                             "prompt instead (each copy carries its edit)")  # fmt: skip
        ids = self.encode(prompts)
        requests, per, tags = [], [], []
        for i, (name, p) in enumerate(zip(names, ids)):
            try:  # the edit's positions on this prompt, before anything is submitted
                salt = cache_salt(name, self.served.get(name, []), p, self.tokenizer)
            except PositionError as e:
                raise PositionError(f"prompt {i} (edit {name!r}): {e}") from None
            sp = params.clone()
            tags.append(f"{id(self)}-{next(self._count)}")
            sp.extra_args = {**(sp.extra_args or {}), "reft": name, "reft_id": tags[-1]}
            if self.tokenizer is None:  # a model without a tokenizer (skip_tokenizer_init=True): token ids only
                sp.detokenize = False
            requests.append({"prompt_token_ids": p, **({"cache_salt": salt} if salt else {})})
            per.append(sp)
        outs = self.llm.generate(requests, per, use_tqdm=False)
        results = []
        for name, p, o, tag in zip(names, ids, outs, tags):
            cached = o.num_cached_tokens or 0
            self.editor.check(tag, name, cached, len(o.outputs[0].token_ids))
            c = o.outputs[0]
            lp = [d[t].logprob for d, t in zip(c.logprobs, c.token_ids)] if c.logprobs else None
            results.append(Completion(c.text or "", list(c.token_ids), p, name, cached, lp))
        return results[0] if single else results


def _runner(worker):
    return worker.model_runner


def _config(folder: Path):
    try:
        return AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ServeError(f"cannot read {str(folder / 'config.json')!r} ({e}); expected a local model folder") from None


def _tokenizer(folder: Path):
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


__all__ = ["Completion", "DEFAULTS", "GREEDY", "Server"]
