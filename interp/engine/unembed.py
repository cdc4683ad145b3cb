"""Logits from the final hidden states, computed in one place (only where a metric or loss reads them).

Example:
    >>> final_norm_target(lm)                             # where the final hidden states are read
    Target(path='model.norm', io='output', head=None, n_heads=4, width=32)
    >>> readout(lm, torch.zeros(2, 1, 32)).shape          # (..., d) -> (..., V)
    torch.Size([2, 1, 97])
    >>> readout(lm, torch.zeros(2, 1, 32), vocab=torch.tensor([5, 6])).shape   # over two words only
    torch.Size([2, 1, 2])
    >>> with onloaded(lm.hf.lm_head) as m:                # an offloaded module's weights, loaded for the block
    ...     m.weight.device
    device(type='cpu')
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn import functional as F

from ..arch import Target, architecture


def final_norm_target(lm) -> Target:
    """Where the final hidden states are read: the output of the architecture's final norm."""
    s = lm.spec
    return Target(architecture(lm).final_norm, "output", None, s.n_heads, s.d_model)


def readout(lm, hidden: torch.Tensor, vocab=None, head=None, *, hf=None) -> torch.Tensor:
    """Logits from final-normed hidden states (..., d) -> (..., V): the unembedding, then final softcapping.

    With ``vocab`` only those rows of the unembedding are used; a ``head`` replaces it. The input is made
    contiguous and flattened, so a frozen unembedding takes the plain matrix-multiply path.
    """
    if head is not None:
        return head(hidden.to(head.weight.device, head.weight.dtype))
    model = hf or lm.hf
    unembed = model.get_submodule(architecture(lm).unembed)
    with onloaded(unembed):  # an offloaded unembedding (accelerate) holds its weights only while in use
        weight, bias = unembed.weight, getattr(unembed, "bias", None)
        if vocab is not None:
            rows = vocab.to(weight.device)
            weight, bias = weight[rows], (bias[rows] if bias is not None else None)
        flat = hidden.reshape(-1, hidden.shape[-1]).contiguous().to(weight.device, weight.dtype)  # (N, d)
        logits = F.linear(flat, weight, bias).reshape(*hidden.shape[:-1], weight.shape[0])  # (N, V) -> (..., V)
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


@contextlib.contextmanager
def onloaded(module: torch.nn.Module):
    """Within the block, the parameters of ``module`` are real tensors on its execution device, also when
    accelerate offloaded them (to CPU or disk: outside a forward they sit on the meta device). For code that
    uses a module's weights without calling it (the engine's unembedding, fingerprints)."""
    hook = getattr(module, "_hf_hook", None)
    if hook is not None and getattr(hook, "offload", False):
        from accelerate.utils import align_module_device  # accelerate loads only for an offloaded model

        with align_module_device(module):
            yield module
        return
    if any(p.device.type == "meta" for p in module.parameters(recurse=False)):
        raise RuntimeError(
            f"{type(module).__name__} has weights on the meta device and no accelerate hook that loads them; "
            "load the model with from_pretrained(..., device_map=...) or accelerate.dispatch_model"
        )
    yield module


__all__ = ["final_norm_target", "onloaded", "readout"]
