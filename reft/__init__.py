"""reft: representation finetuning (Wu et al., NeurIPS 2024) on interp's subspace machinery.

Example:
    >>> import interp, reft
    >>> from interp import Site, first, last
    >>> lm  = interp.load()                                                     # doctest: +SKIP
    >>> rlm = reft.attach(lm, {Site("resid_post", 1, first(1) + last(1)): reft.LoReFT(lm.d_model, rank=4)})
    >>> hist = reft.train_reft(rlm, examples, reft.TrainConfig(epochs=2, lr=4e-3, batch_size=2))
    >>> hist.steps, len(hist.losses)                               # 4 examples, batches of 2, 2 epochs
    (4, 4)
    >>> reft.generate(rlm, "Who are you?", max_new_tokens=32)      # needs a tokenizer  # doctest: +SKIP
    >>> reft.generate_ids(rlm, base, max_new_tokens=3).new_ids.shape   # token ids in, token ids out
    torch.Size([4, 3])
    >>> path = reft.save(rlm, tmp / "style")                       # weights + JSON, a few KB
    >>> sorted(f.name for f in path.iterdir())
    ['config.json', 'weights.safetensors']

A LoReFT edits hidden vectors at a few prompt positions: ``h + R^T (W h + b - R h)``, the subspace edit of
``interp.subspace.edit`` with target ``W h + b``; the model stays frozen.

``reft`` re-exports :class:`interp.Site` and every typed position (``first``, ``last``, ``at``, ``span``,
``token``, ``all_tokens``, ``generated``, ``recent``), so a ReFT script needs ``interp`` only to load the model:
``reft.attach(lm, {reft.Site("resid_post", 6, reft.first(1) + reft.last(1)): reft.LoReFT(lm.d_model, rank=4)})``.
"""

from interp.deprecation import moved_names
from interp.positions import all_tokens, at, first, generated, last, recent, span, token
from interp.sites import Site

from .bridge import as_basis, init_basis, principal_angles
from .data import Example, as_examples
from .generate import Generation, generate, generate_ids
from .head import ClassifierHead
from .interventions import (
    KINDS,
    ConsReFT,
    DiReFT,
    LoBiReFT,
    LoDiReFT,
    LoReFT,
    NoReFT,
    ReftError,
    ReftIntervention,
    make,
)
from .io import load, save
from .model import ReftModel, at_layers, attach
from .positions import parse_layers, parse_positions
from .pyreft import from_pyreft
from .train import History, TrainConfig, evaluate, train_reft

__all__ = [
    "LoReFT",
    "NoReFT",
    "DiReFT",
    "LoBiReFT",
    "ConsReFT",
    "LoDiReFT",
    "ReftIntervention",
    "KINDS",
    "make",
    "ReftError",
    "ReftModel",
    "ClassifierHead",
    "attach",
    "at_layers",
    "Site",
    "first",
    "last",
    "at",
    "span",
    "token",
    "all_tokens",
    "generated",
    "recent",
    "parse_positions",
    "parse_layers",
    "Example",
    "as_examples",
    "TrainConfig",
    "History",
    "train_reft",
    "evaluate",
    "generate",
    "generate_ids",
    "Generation",
    "save",
    "load",
    "from_pyreft",
    "as_basis",
    "init_basis",
    "principal_angles",
]

# Names this package exported before that are internals, and where each lives now: they resolve for one release
# with a DeprecationWarning, then leave.
MOVED = {"serve_ops": "reft.model"}


__getattr__ = moved_names('reft', MOVED)  # the names of MOVED resolve, with a DeprecationWarning
