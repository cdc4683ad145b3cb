"""IOI name position: is the indirect object the first or the second name of the prompt?

Example:
    >>> pairs = ioi_position_pairs(n=256, seed=0)
    >>> pairs.base[0]                                  # P = 0 (IO first: ABB)
    'After David and Daniel arrived at the park, Daniel passed a book to'
    >>> pairs.labels[0]                                # the source has P = 1 (ABA) -> the base's 2nd name
    ' Daniel'
    >>> train, test = pairs.split(0.8)
    >>> fit_das(interp.load(), train, at=Site("resid_post", 9, last()), rank=1, test=test)   # doctest: +SKIP

Causal model (Wu et al. 2023, "A reply to Makelov et al."): inputs N1, N2 (the names in order) and P (which of
them is the indirect object); the subject is the other one and is repeated; O = [N1, N2][P]. Interchanging P
from a source with the other position makes the model's answer the base's *other* name, whatever names the
source uses. Templates, names, places and objects are :mod:`interp.tasks.ioi`'s; the second subject mention
takes the IO's slot in ABA prompts, so all prompts share :data:`interp.tasks.ioi.IOI_POSITIONS`.
"""

from __future__ import annotations

import random

from ..causal import CausalModel, Pairs
from . import ioi

IOI_POSITIONS = ioi.IOI_POSITIONS


def _generic(template: str) -> str:
    # "When {io} and {s} ..., {s} gave" -> "When {n1} and {n2} ..., {s2} gave"
    return template.replace("{io}", "{n1}").replace("{s}", "{n2}", 1).replace("{s}", "{s2}")


TEMPLATES = tuple(_generic(t) for t in ioi.TEMPLATES)


def causal_model() -> CausalModel:
    """N1, N2, P -> S (the repeated name) and O = [N1, N2][P]."""
    return CausalModel(
        {
            "N1": None,
            "N2": None,
            "P": None,
            "T": None,
            "PLACE": None,
            "OBJ": None,
            "S": (("N1", "N2", "P"), lambda a, b, p: b if p == 0 else a),
            "O": (("N1", "N2", "P"), lambda a, b, p: a if p == 0 else b),
        }
    )


def render(s: dict) -> str:
    n1, n2, s2 = s["N1"], s["N2"], (s["N2"] if s["P"] == 0 else s["N1"])
    return TEMPLATES[s["T"]].format(n1=n1, n2=n2, s2=s2, place=s["PLACE"], obj=s["OBJ"])


def sample(rng: random.Random) -> dict:
    n1, n2 = rng.sample(ioi.NAMES, 2)
    return {
        "N1": n1,
        "N2": n2,
        "P": rng.randrange(2),
        "T": rng.randrange(len(TEMPLATES)),
        "PLACE": rng.choice(ioi.PLACES),
        "OBJ": rng.choice(ioi.OBJECTS),
    }


def ioi_position_pairs(lm=None, *, n: int = 256, seed: int = 0) -> Pairs:
    """``n`` pairs interchanging P; only pairs whose label changes (the source has the other position)."""
    data = causal_model().counterfactuals(sample, variables="P", n=n, seed=seed, changed_only=True)
    return data.render(render, lambda name: " " + name)
