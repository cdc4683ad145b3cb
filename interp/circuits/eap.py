"""Edge attribution patching (EAP) and EAP with integrated gradients (EAP-IG).

Placeholder: the name is the contract; the code lands next.
"""

from __future__ import annotations


def eap(lm, pairs, *, graph=None, metric=None, steps: int = 0, ig_on: str = "inputs", batch_size: int = 8):
    """Score every edge of ``graph`` (not yet implemented)."""
    raise NotImplementedError("eap lands with interp.engine.edges (issue 24)")


__all__ = ["eap"]
