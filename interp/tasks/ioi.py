"""Indirect object identification (IOI; Wang et al. 2022), with our own templates and names.

Example:
    >>> pairs = ioi_pairs(32, seed=0)
    >>> pairs.base[0]
    'When Jack and Chris went to the store, Chris gave a ring to'
    >>> pairs.source[0]                              # the two names swapped
    'When Chris and Jack went to the store, Jack gave a ring to'
    >>> pairs.base_answer[0], pairs.source_answer[0]
    (' Jack', ' Chris')
    >>> pairs.variables, pairs.labels[0]             # one Pairs type: patch_grid, attribution_patch and fit_das
    (('names',), ' Chris')

The source prompt swaps the two names, so its answer is the base's subject. Every template has the same
token structure (15 tokens with BOS on Gemma-3, all names, places and objects single tokens), so
:data:`IOI_POSITIONS` names the same role in every prompt.
"""

from __future__ import annotations

import random
import warnings

from ..causal import Pairs
from ..positions import at

NAMES = (
    "Mary John Tom James Anna Sarah David Michael Emma Lisa Paul Kate Mark Alice Peter Laura Daniel Susan "
    "Robert Helen George Rachel Steven Linda Jack Emily Chris Jessica Ryan Amy Kevin Maria"
).split()
PLACES = "store park school beach office market garden station".split()
OBJECTS = "drink book gift ball ring flower cake toy".split()
TEMPLATES = (
    "When {io} and {s} went to the {place}, {s} gave a {obj} to",
    "While {io} and {s} were at the {place}, {s} handed a {obj} to",
    "After {io} and {s} arrived at the {place}, {s} passed a {obj} to",
    "When {io} and {s} got to the {place}, {s} gave a {obj} to",
)
# Token roles, counted with the BOS token at 0 (Gemma-3 adds one).
ROLES = ("bos", "cue", "IO", "and", "S1", "verb", "prep", "the", "place", ",", "S2", "verb2", "a", "obj", "end")
IOI_POSITIONS = {name: at(i) for i, name in enumerate(ROLES)}


def PatchingPairs(base, source, base_answer, source_answer) -> Pairs:  # noqa: N802  (the old class's name)
    """Deprecated: :meth:`interp.causal.Pairs.of`, the one pair type (patching, attribution and DAS take it)."""
    warnings.warn(
        "interp.tasks.PatchingPairs(base, source, base_answer, source_answer) is now "
        "interp.Pairs.of(base, source, base_answer=..., source_answer=...)",
        DeprecationWarning,
        stacklevel=2,
    )
    return Pairs.of(base, source, base_answer=base_answer, source_answer=source_answer)


def ioi_pairs(n: int = 32, *, seed: int = 0) -> Pairs:
    """``n`` IOI base/source pairs (:class:`interp.causal.Pairs` of the variable ``"names"``); the source swaps
    the indirect object and the subject, so its answer (the label) is the base's subject."""
    if n < 1:
        raise ValueError(f"n must be at least 1; got {n}")
    rng = random.Random(seed)
    base, source, ba, sa = [], [], [], []
    for i in range(n):
        io, s = rng.sample(NAMES, 2)
        kw = dict(place=rng.choice(PLACES), obj=rng.choice(OBJECTS))
        tpl = TEMPLATES[i % len(TEMPLATES)]
        base.append(tpl.format(io=io, s=s, **kw))
        source.append(tpl.format(io=s, s=io, **kw))
        ba.append(" " + io)
        sa.append(" " + s)
    return Pairs.of(base, source, base_answer=ba, source_answer=sa, variable="names")
