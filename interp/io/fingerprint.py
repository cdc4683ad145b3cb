"""What a saved result records about the model it came from, and checks when loaded into one.

Example:
    >>> sorted(fingerprint(lm))
    ['architecture', 'd_model', 'n_layers', 'parameters', 'shapes', 'weights', 'weights_bf16']
"""

from __future__ import annotations

import hashlib
import warnings

import torch

from ..errors import FormatError, WeightsChangedWarning
from ..models import onloaded
from .schema import Config

SAMPLE = 4096  # values hashed per parameter


def fingerprint(lm) -> dict:
    """What a saved result records about the model it came from, and checks when loaded.

    ``architecture``, ``d_model``, ``n_layers`` and ``parameters`` (the count); ``shapes``, a hash of every
    parameter's name and shape (a model with other shapes is refused); ``weights``, a hash of every parameter's
    name, shape, dtype and a fixed strided sample of its values: up to 4096 values evenly spaced through the
    flattened tensor (all of them in a small one); ``weights_bf16``, the same sample rounded to bf16 without the
    dtype, so the same checkpoint loaded in float32 or bf16 is recognised. Offloaded parameters (accelerate) are
    read through their hooks. Hashing samples keeps this fast for any model size (0.03 s on
    Gemma-3-270M, so it is not cached); a change that falls between the sampled values goes unnoticed.
    """
    shapes, weights, rounded, n = hashlib.sha256(), hashlib.sha256(), hashlib.sha256(), 0
    tied = set(getattr(lm.hf, "all_tied_weights_keys", None) or ())  # e.g. lm_head.weight: a copy of the embedding
    for name, p in lm.hf.named_parameters():
        if name in tied:  # listed only where offloading broke the tie; the same values as its source
            continue
        n += p.numel()
        sample = _sample(lm, name, p)
        shapes.update(f"{name}:{tuple(p.shape)};".encode())
        weights.update(f"{name}:{tuple(p.shape)}:{p.dtype};".encode())
        weights.update(sample.view(torch.uint8).numpy().tobytes())
        rounded.update(f"{name}:{tuple(p.shape)};".encode())
        if sample.is_floating_point():
            sample = sample.to(torch.bfloat16)
        rounded.update(sample.view(torch.uint8).numpy().tobytes())
    return {**lm.spec.fingerprint(), "parameters": n, "shapes": shapes.hexdigest()[:16],
            "weights": weights.hexdigest()[:16], "weights_bf16": rounded.hexdigest()[:16]}  # fmt: skip


def _sample(lm, name: str, p: torch.Tensor) -> torch.Tensor:
    """Up to :data:`SAMPLE` evenly spaced values of parameter ``name`` on the CPU, also when accelerate offloaded
    it (a meta tensor outside a forward: its values are read through the module's hook)."""
    if p.device.type == "meta":
        path, _, leaf = name.rpartition(".")
        module = lm.hf.get_submodule(path)
        with onloaded(module):
            return _sample(lm, name, getattr(module, leaf))
    t = p.detach().reshape(-1)
    return t[:: max(1, t.numel() // SAMPLE)][:SAMPLE].cpu().contiguous()


MODEL = {"architecture": str, "d_model": int, "n_layers": int}
MODEL_HASHES = {"parameters": int, "shapes": str, "weights": str, "weights_bf16": str}


def check_model(config: Config, saved: dict, lm, *, what: str = "the result") -> None:
    """Refuse a model whose architecture, sizes or parameter shapes differ from those ``saved`` records; warn
    (:class:`WeightsChangedWarning`) when only the weights differ. Files of the previous layouts record no
    hashes: only architecture, d_model and n_layers are compared."""
    config.section("model", MODEL, saved, optional=MODEL_HASHES)
    have = fingerprint(lm) if "shapes" in saved or "weights" in saved else lm.spec.fingerprint()
    diff = [k for k in MODEL if saved[k] != have[k]]
    if diff:
        raise FormatError(
            f"{what} in {str(config.file.parent)!r} was saved from a different model: "
            + ", ".join(f"{k} saved {saved[k]!r}, this model {have[k]!r}" for k in diff)
            + "; load it into the model it was trained on"
        )
    if "shapes" in saved and saved["shapes"] != have["shapes"]:
        raise FormatError(
            f"{what} in {str(config.file.parent)!r} was saved from a model with other parameter shapes (same "
            f"architecture, d_model and n_layers; {saved.get('parameters', '?')} parameters saved, this model "
            f"{have['parameters']}); load it into the model it was trained on"
        )
    # The same weights in another precision (saved from float32, loaded into bf16 or the reverse) agree once
    # rounded to bf16: no warning then.
    same_rounded = "weights_bf16" in saved and saved["weights_bf16"] == have.get("weights_bf16")
    if "weights" in saved and saved["weights"] != have["weights"] and not same_rounded:
        warnings.warn(
            WeightsChangedWarning(
                f"{what} in {str(config.file.parent)!r} was saved from a model with the same shapes but other weights "
                f"(weights hash saved {saved['weights']}, this model {have['weights']}): another checkpoint, dtype "
                "or an edited model; its numbers may not carry over"
            ),
            stacklevel=3,
        )


__all__ = ["fingerprint", "check_model", "MODEL", "MODEL_HASHES"]
