"""interp: find where a language model represents a variable, learn its subspace, and edit it.

Example:
    >>> import interp
    >>> from interp import Site, last, interchange
    >>> lm = interp.load()                                   # Gemma-3-270M, embedded, offline  # doctest: +SKIP
    >>> out = interchange(lm, base, source, at=Site("resid_post", 1, last()))   # activation patching
    >>> out.logits.shape                                     # (B, vocab) at the last token
    torch.Size([4, 97])
    >>> out                                                  # a summary, never the whole tensor  # doctest: +ELLIPSIS
    DIIResult((4, 97) logits at the last token; top-1 of 4 prompts: ...)

What a notebook calls, in four groups (``interp.__all__``; everything else lives in its module):

- **verbs**: ``load``, ``encode``; ``run``, ``interchange``, ``intervene``, ``collect``, ``cache``, ``logit_lens``,
  ``patchscope``;
  ``patch_grid``, ``attribution_patch``; ``fit_das``, ``fit_mdas``, ``sweep_das``, ``iia``, ``score``,
  ``task_accuracy``, ``neuron_aligned``.
- **addresses**: ``LM``, ``Site``, and the typed positions ``first``, ``last``, ``at``, ``span``, ``token``,
  ``all_tokens``, ``generated``, ``recent``.
- **subspaces and interventions**: ``Coordinate``, ``Fixed``, ``Rotation``, ``LowRankRotation``, ``Boundless``;
  ``Interchange``, ``Zero``, ``Mean``, ``Steer``.
- **data and results**: ``CausalModel``, ``Pairs``, ``DASConfig``, ``DASResult``, ``Grid``, ``DIIResult``;
  and the errors ``InterpError`` (a ValueError) and ``InterpWarning`` with the specific classes a
  caller meets most (every other one is in :mod:`interp.errors`).

Featurizers (difference of means, probe, PCA, k-means, LDA, SAE, DBM masks) are in :mod:`interp.featurizers`,
circuits (the edge graph, EAP and EAP-IG, exact faithfulness) in :mod:`interp.circuits`, the field's benchmarks in
:mod:`interp.benchmarks`, plots in :mod:`interp.viz`, built-in tasks in :mod:`interp.tasks`,
and the base classes to extend in their modules (``interp.positions.Position``, ``interp.subspace.Basis``,
``interp.interventions.Intervention``). Names that used to be here and are internals (``rows``, ``collect_rows``,
``das_loss``, ...), base classes or rarer types (``LogitLens``, ``PaddingWarning``, ``FormatError``) still
resolve for one release with a DeprecationWarning that says where they live now.

The examples in interp's and reft's docstrings run as doctests (``tests/test_doctests.py``) on a tiny random
Llama ``lm`` (2 layers, d_model 32, 4 heads, vocabulary 97) that has no tokenizer, so they feed token ids:
``base`` and ``source`` are (4, 6) tensors of them, ``pairs`` (with halves ``train`` and ``test``) are
counterfactual pairs of token-id prompts, ``das`` is a DAS fit on them and ``rlm`` a ReFT model on ``lm``. On
the real model the same calls take prompts (strings) and answer words.
"""

from .attribution import attribution_patch
from .causal import CausalModel, Pairs
from .das import DASConfig, DASResult, fit_das, neuron_aligned
from .deprecation import moved_names
from .dii import DIIResult, collect, interchange, intervene, run
from .errors import (
    BasisError,
    DASError,
    InputError,
    InterpError,
    InterpWarning,
    PositionError,
    SiteError,
)
from .grid import Grid
from .inputs import encode
from .interventions import Interchange, Mean, Steer, Zero
from .lens import cache, logit_lens
from .mdas import fit_mdas
from .metrics import iia, score, task_accuracy
from .models import LM, load
from .patching import patch_grid
from .patchscope import patchscope
from .positions import all_tokens, at, first, generated, last, recent, span, token
from .sites import Site
from .subspace import Boundless, Coordinate, Fixed, LowRankRotation, Rotation
from .sweep import sweep_das

__all__ = [
    # verbs
    "load",
    "encode",
    "run",
    "interchange",
    "intervene",
    "collect",
    "cache",
    "logit_lens",
    "patchscope",
    "patch_grid",
    "attribution_patch",
    "fit_das",
    "fit_mdas",
    "sweep_das",
    "iia",
    "score",
    "task_accuracy",
    "neuron_aligned",
    # addresses
    "LM",
    "Site",
    "first",
    "last",
    "at",
    "span",
    "token",
    "all_tokens",
    "generated",
    "recent",
    # subspaces and interventions
    "Coordinate",
    "Fixed",
    "Rotation",
    "LowRankRotation",
    "Boundless",
    "Interchange",
    "Zero",
    "Mean",
    "Steer",
    # data and results
    "CausalModel",
    "Pairs",
    "DASConfig",
    "DASResult",
    "Grid",
    "DIIResult",
    # errors and warnings
    "InterpError",
    "InterpWarning",
    "InputError",
    "SiteError",
    "PositionError",
    "BasisError",
    "DASError",
]

# Names this package exported before, which are internals or types a notebook does not call: where each lives now.
# They resolve for one release with a DeprecationWarning, then leave.
MOVED = {
    "rows": "interp.batches",
    "collect_rows": "interp.batches",
    "collect_sources": "interp.batches",
    "check_positions": "interp.batches",
    "das_logits": "interp.metrics",
    "das_loss": "interp.metrics",
    "label_ids": "interp.metrics",
    "token_ids": "interp.inputs",
    "ModelSpec": "interp.models",
    "Alignment": "interp.das",
    "Position": "interp.positions",
    "Basis": "interp.subspace",
    "Intervention": "interp.interventions",
    "LogitLens": "interp.lens",
    "PaddingWarning": "interp.errors",
    "WeightsChangedWarning": "interp.errors",
    "FormatError": "interp.errors",
}


__getattr__ = moved_names('interp', MOVED)  # the names of MOVED resolve, with a DeprecationWarning
