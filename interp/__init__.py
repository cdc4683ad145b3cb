"""interp: find where a language model represents a variable, learn its subspace, and edit it.

Example:
    >>> import interp
    >>> from interp import Site, last, interchange
    >>> lm = interp.load()                                   # Gemma-3-270M, embedded, offline  # doctest: +SKIP
    >>> out = interchange(lm, base, source, at=Site("resid_post", 1, last()))   # activation patching
    >>> out.logits.shape                                     # (B, vocab) at the last token
    torch.Size([4, 97])

The examples in interp's and reft's docstrings run as doctests (``tests/test_doctests.py``) on a tiny random
Llama ``lm`` (2 layers, d_model 32, 4 heads, vocabulary 97) that has no tokenizer, so they feed token ids:
``base`` and ``source`` are (4, 6) tensors of them, ``pairs`` (with halves ``train`` and ``test``) are
counterfactual pairs of token-id prompts, ``das`` is a DAS fit on them and ``rlm`` a ReFT model on ``lm``. On
the real model the same calls take prompts (strings) and answer words.
"""

from .attribution import attribution_patch
from .batches import DASError, check_positions, collect_rows, collect_sources, rows
from .causal import CausalModel, Pairs
from .das import Alignment, DASConfig, DASResult, fit_das, neuron_aligned
from .dii import DIIResult, collect, interchange, intervene, run
from .grid import Grid
from .inputs import InputError, PaddingWarning, encode, token_ids
from .interventions import Interchange, Intervention, Mean, Steer, Zero
from .io import FormatError, WeightsChangedWarning
from .lens import LogitLens, cache, logit_lens
from .metrics import das_logits, das_loss, iia, label_ids, task_accuracy
from .models import LM, ModelSpec, load
from .positions import Position, PositionError, at, first, generated, last, recent, span, token
from .sites import Site, SiteError
from .subspace import Basis, BasisError, Boundless, Coordinate, LowRankRotation, Rotation
from .sweep import sweep_das

__all__ = [
    "LM",
    "ModelSpec",
    "load",
    "Site",
    "SiteError",
    "Position",
    "PositionError",
    "at",
    "first",
    "last",
    "span",
    "token",
    "generated",
    "recent",
    "Basis",
    "BasisError",
    "Coordinate",
    "LowRankRotation",
    "Rotation",
    "Boundless",
    "Intervention",
    "Interchange",
    "Zero",
    "Mean",
    "Steer",
    "interchange",
    "intervene",
    "run",
    "collect",
    "DIIResult",
    "encode",
    "token_ids",
    "InputError",
    "PaddingWarning",
    "FormatError",
    "WeightsChangedWarning",
    "CausalModel",
    "Pairs",
    "DASConfig",
    "DASResult",
    "DASError",
    "Alignment",
    "fit_das",
    "neuron_aligned",
    "iia",
    "task_accuracy",
    "label_ids",
    "das_logits",
    "das_loss",
    "sweep_das",
    "Grid",
    "rows",
    "collect_rows",
    "collect_sources",
    "check_positions",
    "attribution_patch",
    "cache",
    "logit_lens",
    "LogitLens",
]
