"""The wrapped language model: :class:`LM` (a Hugging Face model, its nnsight envoy, tokenizer and spec),
:class:`ModelSpec` (its shape, read from the config) and the devices its modules compute on.

Example:
    >>> lm = LM(tiny_model)                     # a model built in memory, fed with token ids
    >>> lm.spec
    ModelSpec(architecture='GPT2LMHeadModel', n_layers=2, d_model=32, n_heads=4, head_dim=8, vocab_size=97)
    >>> module_device(tiny_model)
    device(type='cpu')

:func:`interp.load` (in :mod:`interp.models`) builds one from the embedded default, a local folder or a Hub id.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from nnsight import NNsight, TransformersModel

from .engine import contiguous_unembedding


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
        d_model = first_attr(config, "hidden_size", "n_embd", "d_model")
        n_heads = first_attr(config, "num_attention_heads", "n_head")
        head_dim = getattr(config, "head_dim", None) or d_model // n_heads
        return cls(
            architecture=arch,
            n_layers=first_attr(config, "num_hidden_layers", "n_layer"),
            d_model=d_model,
            n_heads=n_heads,
            head_dim=head_dim,
            vocab_size=config.vocab_size,
        )

    def fingerprint(self) -> dict:
        """What a saved intervention must match to be loaded into this model."""
        return {"architecture": self.architecture, "d_model": self.d_model, "n_layers": self.n_layers}


def first_attr(obj, *names):
    """The first of ``names`` that ``obj`` (a model config) has and is not None: one reader for the fields that
    architectures name differently.

    Example:
        >>> first_attr(tiny_model.config, "hidden_size", "n_embd")
        32
        >>> first_attr(tiny_model.config, "no_such_field")
        Traceback (most recent call last):
        AttributeError: config GPT2Config has none of ('no_such_field',)
    """
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
        >>> type(lm.model).__name__, lm.hf is tiny_model   # the nnsight envoy (raw nnsight: docs/analysis.md)
        ('NNsight', True)
        >>> lm.d_model, lm.n_layers, lm.device, lm.dtype
        (32, 2, device(type='cpu'), torch.float32)

    Attributes:
        model: the nnsight envoy of the whole model, for raw nnsight (see docs/analysis.md).
        hf: the underlying ``torch.nn.Module``.
        tokenizer: the tokenizer (may be None for tiny test models fed with input_ids).
        spec: :class:`ModelSpec`.
    """

    def __init__(self, hf_model: torch.nn.Module, tokenizer=None):
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
            found = hook_device(self.hf.get_submodule(".".join(parts[:i])))
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


def hook_device(module: torch.nn.Module) -> torch.device | None:
    """The execution device of accelerate's AlignDevicesHook on ``module`` (also inside a SequentialHook); None
    when accelerate did not dispatch it.

    Example:
        >>> hook_device(torch.nn.Linear(2, 3)) is None
        True
    """
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
    found = hook_device(module)
    if found is not None:
        return found
    for t in itertools.chain(module.parameters(), module.buffers()):
        if t.device.type != "meta":
            return t.device
    return None
