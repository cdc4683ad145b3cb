"""A sparse autoencoder's features as a featurizer: encode/decode with frozen weights, SAELens folders read.

Example:
    >>> sae = SAE.random(32, 64, seed=0)                  # width 32, 64 features (tests and examples)
    >>> h = torch.randn(3, 32)
    >>> f = sae.encode(h); f.shape, bool((f >= 0).all())  # (..., n_features), ReLU
    (torch.Size([3, 64]), True)
    >>> sae.decode(f).shape
    torch.Size([3, 32])
    >>> path = sae.save(tmp / "sae"); sorted(p.name for p in path.iterdir())   # the SAELens layout
    ['cfg.json', 'sae_weights.safetensors']
    >>> torch.equal(SAE.load(path).encode(h), f)
    True

``encode(x) = act((x - b_dec * apply_b_dec_to_input) @ W_enc + b_enc)`` with ``act`` a ReLU, a JumpReLU (units
at or below ``threshold`` set to 0) or a top-k ReLU; ``decode(f) = f @ W_dec + b_dec``. Shapes follow SAELens:
``W_enc`` (d, n), ``b_enc`` (n,), ``W_dec`` (n, d), ``b_dec`` (d,). Use it under :class:`interp.featurizers.Mask`
(DBM over SAE features) or read its features with ``encode``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..checks import as_int, finite
from ..errors import FeaturizerError, FormatError
from ..io.commit import atomic_folder
from ..io.files import read_tensors, write_json, write_tensors
from ..io.schema import read_json

CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"  # SAELens's file names
ARCHITECTURES = ("standard", "jumprelu", "topk")


class SAE(nn.Module):
    """A frozen sparse autoencoder (weights are buffers: nothing here trains).

    Example:
        >>> W = torch.eye(4)
        >>> sae = SAE(W, torch.zeros(4), W, torch.zeros(4), threshold=torch.full((4,), 0.5))   # JumpReLU
        >>> sae.encode(torch.tensor([1.0, 0.4, -1.0, 0.6]))
        tensor([1.0000, 0.0000, 0.0000, 0.6000])
        >>> sae
        SAE(d_model=4, n_features=4, architecture='jumprelu')
    """

    def __init__(self, W_enc, b_enc, W_dec, b_dec, *, threshold=None, k: int | None = None,
                 apply_b_dec_to_input: bool = False):  # fmt: skip
        super().__init__()
        W_enc, b_enc, W_dec, b_dec = (_tensor(t, n) for t, n in zip((W_enc, b_enc, W_dec, b_dec), NAMES))
        if W_enc.dim() != 2:
            raise FeaturizerError(f"SAE W_enc must be (d_model, n_features); got shape {tuple(W_enc.shape)}")
        d, n = W_enc.shape
        want = {"b_enc": (n,), "W_dec": (n, d), "b_dec": (d,)}
        for name, t in (("b_enc", b_enc), ("W_dec", W_dec), ("b_dec", b_dec)):
            if tuple(t.shape) != want[name]:
                raise FeaturizerError(
                    f"SAE {name} has shape {tuple(t.shape)}; with W_enc of shape ({d}, {n}) (d_model, n_features) "
                    f"it must be {want[name]} (SAELens layout: W_enc (d, n), b_enc (n,), W_dec (n, d), b_dec (d,))"
                )
        if threshold is not None and k is not None:
            raise FeaturizerError("give an SAE threshold (JumpReLU) or k (top-k), not both")
        if threshold is not None:
            threshold = _tensor(threshold, "threshold")
            if tuple(threshold.shape) != (n,):
                raise FeaturizerError(f"SAE threshold has shape {tuple(threshold.shape)}; expected ({n},)")
        self.k = None if k is None else as_int(k, "SAE k", low=1, high=n, error=FeaturizerError)
        self.d_model, self.n_features = d, n
        self.apply_b_dec_to_input = bool(apply_b_dec_to_input)
        for name, t in zip(NAMES, (W_enc, b_enc, W_dec, b_dec)):
            self.register_buffer(name, t)
        self.register_buffer("threshold", threshold)

    @property
    def architecture(self) -> str:
        return "jumprelu" if self.threshold is not None else "topk" if self.k is not None else "standard"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations (..., n_features) of vectors ``x`` (..., d_model), in float32 (the SAE's dtype)."""
        if x.shape[-1] != self.d_model:
            raise FeaturizerError(f"this SAE reads vectors of width {self.d_model}; got width {x.shape[-1]}")
        x = x.to(self.W_enc.device, self.W_enc.dtype)
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        pre = x @ self.W_enc + self.b_enc
        acts = torch.relu(pre)
        if self.threshold is not None:
            acts = acts * (pre > self.threshold).to(acts.dtype)
        if self.k is not None:
            top = acts.topk(self.k, dim=-1)
            acts = torch.zeros_like(acts).scatter(-1, top.indices, top.values)
        return acts

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Vectors (..., d_model) from feature activations (..., n_features)."""
        return f.to(self.W_dec.device, self.W_dec.dtype) @ self.W_dec + self.b_dec

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_features={self.n_features}, architecture={self.architecture!r}"

    @classmethod
    def random(cls, d: int, n: int, *, seed: int = 0) -> SAE:
        """A random SAE (unit-norm decoder rows, tied encoder, slightly negative encoder bias), for tests.

        Example:
            >>> SAE.random(8, 16, seed=1).W_dec.norm(dim=-1)[:3]
            tensor([1.0000, 1.0000, 1.0000])
        """
        d = as_int(d, "SAE.random d", low=1, error=FeaturizerError)
        n = as_int(n, "SAE.random n", low=1, error=FeaturizerError)
        g = torch.Generator().manual_seed(int(seed))
        W_dec = torch.randn(n, d, generator=g)
        W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True)
        return cls(W_dec.T.clone(), torch.full((n,), -0.1), W_dec, torch.zeros(d))

    def save(self, folder) -> Path:
        """Write ``folder`` in SAELens's layout (``cfg.json``, ``sae_weights.safetensors``); refuses an existing
        folder (:class:`interp.errors.SaveExistsError`)."""
        cfg = {"architecture": self.architecture, "d_in": self.d_model, "d_sae": self.n_features, "dtype": "float32",
               "apply_b_dec_to_input": self.apply_b_dec_to_input, "normalize_activations": "none"}  # fmt: skip
        if self.k is not None:
            cfg["k"] = self.k
        tensors = {name: getattr(self, name) for name in NAMES}
        if self.threshold is not None:
            tensors["threshold"] = self.threshold
        with atomic_folder(folder, what="SAE folder") as tmp:
            write_json(tmp / CFG, cfg)
            write_tensors(tmp / WEIGHTS, {k: v.detach().contiguous().cpu() for k, v in tensors.items()})
        return Path(folder)

    @classmethod
    def load(cls, folder) -> SAE:
        """Read an SAE saved by SAELens (``SAE.save_model``) or by :meth:`save`: ``cfg.json`` (``d_in``,
        ``d_sae``, ``architecture`` standard, jumprelu or topk, ``apply_b_dec_to_input``) and
        ``sae_weights.safetensors``. Weights load as float32."""
        folder = Path(folder)
        if not (folder / CFG).is_file() or not (folder / WEIGHTS).is_file():
            raise FileNotFoundError(
                f"no SAELens SAE at {str(folder)!r}: expected {CFG} and {WEIGHTS} (as SAELens's SAE.save_model writes)"
            )
        cfg = read_json(folder / CFG)
        where = f"{folder / CFG}"
        arch = cfg.get("architecture", "standard")
        if arch not in ARCHITECTURES:
            raise FormatError(f"{where}: architecture {arch!r} is not supported; supported: {', '.join(ARCHITECTURES)}")
        norm = cfg.get("normalize_activations", "none")
        if norm not in ("none", "expected_average_only_in", None):
            raise FormatError(
                f"{where}: normalize_activations {norm!r} rescales each input at run time, which this SAE does not; "
                "supported: 'none' (or a scaling factor already folded into the weights)"
            )
        d, n = (cfg.get(key) for key in ("d_in", "d_sae"))
        if not (isinstance(d, int) and isinstance(n, int) and d > 0 and n > 0):
            raise FormatError(f"{where}: d_in and d_sae must be positive integers; got d_in={d!r}, d_sae={n!r}")
        shapes = {"W_enc": (d, n), "b_enc": (n,), "W_dec": (n, d), "b_dec": (d,)}
        if arch == "jumprelu":
            shapes["threshold"] = (n,)
        t = {k: v.float() for k, v in read_tensors(folder / WEIGHTS, shapes, by=CFG).items()}
        k = cfg.get("k") if arch == "topk" else None
        return cls(t["W_enc"], t["b_enc"], t["W_dec"], t["b_dec"], threshold=t.get("threshold"), k=k,
                   apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)))  # fmt: skip


NAMES = ("W_enc", "b_enc", "W_dec", "b_dec")


def _tensor(t, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        try:
            t = torch.as_tensor(t, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError):
            raise FeaturizerError(f"SAE {name} must be a tensor of numbers; got {type(t).__name__}") from None
    if not t.is_floating_point():
        raise FeaturizerError(f"SAE {name} must be floating point; got a {t.dtype} tensor")
    return finite(t.detach().float().contiguous(), f"SAE {name}", error=FeaturizerError)


__all__ = ["SAE"]
