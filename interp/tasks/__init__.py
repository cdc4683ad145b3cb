"""Built-in tasks: prompts, base/source pairs and answers for analysis and alignment search."""

from .ioi import IOI_POSITIONS, PatchingPairs, ioi_pairs  # noqa: F401  (PatchingPairs: deprecated, Pairs.of)

__all__ = ["ioi_pairs", "IOI_POSITIONS"]
from . import capitals, gender, hierarchical_equality, ioi_position  # noqa: E402, F401  (DAS tasks)
