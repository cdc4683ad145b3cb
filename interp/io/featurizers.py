"""The featurizer bases in a DAS result's folder: a :class:`interp.Fixed` (its rows ``R``) and a DBM
:class:`interp.featurizers.Mask` (its logits, and its rows ``R`` or its SAE's weights), beside the trained ones.

Example:
    >>> from interp.featurizers import SAE, Mask, pca
    >>> extra, tensors = describe(Mask(SAE.random(8, 16), temperature=0.5))
    >>> extra["features"], sorted(tensors)
    ('sae', ['logits', 'sae.W_dec', 'sae.W_enc', 'sae.b_dec', 'sae.b_enc'])
    >>> rebuilt = build("Mask", extra, 8, 16, tensors)
    >>> torch.equal(rebuilt.logits, tensors["logits"]), rebuilt.temperature
    (True, 0.5)
"""

from __future__ import annotations

import torch

from ..errors import FormatError
from ..featurizers.mask import Mask
from ..featurizers.sae import SAE
from ..subspace import Basis, Fixed
from .state import check_orthonormal, tolerance

KINDS = {"Fixed": Fixed, "Mask": Mask}
EXTRA = {"Fixed": {}, "Mask": {"temperature": float, "sparsity": float, "features": str, "sae": dict}}
SAE_KEYS = {"architecture": str, "k": (int, type(None)), "apply_b_dec_to_input": bool}
_SAE = ("W_enc", "b_enc", "W_dec", "b_dec")


def describe(b: Basis) -> tuple[dict, dict[str, torch.Tensor]]:
    """The basis's config keys beyond kind, d_model and rank, and its tensors by name."""
    if isinstance(b, Fixed):
        return {}, {"R": b.weight}
    sae = b.sae
    extra = {"temperature": b.temperature, "sparsity": b.sparsity, "features": "rows" if sae is None else "sae"}
    if sae is None:
        return extra | {"sae": {}}, {"logits": b.logits, "R": b.rows}
    extra["sae"] = {"architecture": sae.architecture, "k": sae.k, "apply_b_dec_to_input": sae.apply_b_dec_to_input}
    tensors = {"logits": b.logits} | {f"sae.{n}": getattr(sae, n) for n in _SAE}
    if sae.threshold is not None:
        tensors["sae.threshold"] = sae.threshold
    return extra, tensors


def shapes(kind: str, extra: dict, d: int, rank: int) -> dict[str, tuple[int, ...]]:
    """The tensors a saved basis of ``kind`` must hold, by name, with their shapes."""
    if kind == "Fixed":
        return {"R": (rank, d)}
    if extra["features"] == "rows":
        return {"logits": (rank,), "R": (rank, d)}
    if extra["features"] != "sae":
        raise FormatError(f"basis.features is {extra['features']!r}; expected 'rows' or 'sae'")
    out = {"logits": (rank,), "sae.W_enc": (d, rank), "sae.b_enc": (rank,), "sae.W_dec": (rank, d), "sae.b_dec": (d,)}
    return out | ({"sae.threshold": (rank,)} if extra["sae"].get("architecture") == "jumprelu" else {})


@torch.no_grad()
def build(kind: str, extra: dict, d: int, rank: int, tensors: dict[str, torch.Tensor]) -> Basis:
    """The basis rebuilt from its saved config keys and tensors, bit for bit (rows checked orthonormal)."""
    tensors = {k: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v for k, v in tensors.items()}
    if "R" in tensors:
        check_orthonormal(tensors["R"], "R", tolerance(tensors["R"].dtype))
    if kind == "Fixed":
        basis = Fixed(tensors["R"])
        basis.load_state_dict({"_weight": tensors["R"]})  # the saved rows exactly, not a new QR of them
        return basis
    if extra["features"] == "rows":
        mask = Mask(Fixed(tensors["R"]), temperature=extra["temperature"], sparsity=extra["sparsity"])
        mask.load_state_dict({"rows": tensors["R"], "logits": tensors["logits"]})
        return mask
    s = extra["sae"]
    t = {n: tensors[f"sae.{n}"] for n in _SAE}
    sae = SAE(*(t[n] for n in _SAE), threshold=tensors.get("sae.threshold"), k=s.get("k"),
              apply_b_dec_to_input=bool(s.get("apply_b_dec_to_input")))  # fmt: skip
    if sae.architecture != s.get("architecture"):
        raise FormatError(
            f"basis.sae.architecture is {s.get('architecture')!r} but the weights make a {sae.architecture}"
        )
    mask = Mask(sae, temperature=extra["temperature"], sparsity=extra["sparsity"])
    mask.logits.copy_(tensors["logits"])
    return mask


__all__ = ["KINDS", "EXTRA", "SAE_KEYS", "describe", "shapes", "build"]
