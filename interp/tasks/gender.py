"""Gender pronoun: "<name> walked because" -> " he" / " she"; where does the model keep the name's gender?

Example:
    >>> pairs = gender_pairs(n=256, seed=0)   # source names have the other gender; gender_pairs(lm, ...) keeps
    >>> pairs.base[0], pairs.labels[0]        # only the names and verbs that are one token for lm's tokenizer
    ('Grace waited because', ' he')
    >>> train, test = pairs.split(0.75)
    >>> site = Site("resid_post", 6, GENDER_POSITIONS["last"])
    >>> fit_das(interp.load(), train, at=site, rank=1, test=test).iia_test   # doctest: +SKIP

Causal model: input NAME -> G = gender(NAME) -> O = " he" if G == "m" else " she". Interchanging G takes the
source name's gender, so with a source of the other gender the label flips. Every prompt is BOS + name + verb +
" because" (one token each on Gemma-3), so :data:`GENDER_POSITIONS` names the same role in every prompt.
Predictions are read over the two pronouns (``pairs.candidates``).
"""

from __future__ import annotations

import random

from ..causal import CausalModel, Pairs
from ..positions import at, last

MALE = (
    "John James David Michael Robert William Thomas Richard Charles Joseph Daniel Paul Mark George Peter Steven "
    "Kevin Brian Edward Jack Henry Frank Ryan Eric Adam Luke Andrew Matthew Scott Patrick"
).split()
FEMALE = (
    "Mary Sarah Anna Emma Lisa Laura Susan Helen Rachel Linda Emily Jessica Amy Maria Alice Kate Elizabeth "
    "Jennifer Karen Nancy Margaret Sophie Julia Rose Grace Lucy Olivia Hannah Emily Jane"
).split()
VERBS = ("walked", "laughed", "cried", "left", "stayed", "smiled", "waited", "ran")
TEMPLATE = "{name} {verb} because"
PRONOUNS = {"m": " he", "f": " she"}
GENDER_POSITIONS = {"name": at(1), "verb": at(2), "last": last()}


def causal_model() -> CausalModel:
    """NAME -> G (the name's gender) -> O (the pronoun)."""
    gender = {n: "m" for n in MALE} | {n: "f" for n in FEMALE}
    return CausalModel(
        {
            "NAME": None,
            "VERB": None,
            "G": (("NAME",), lambda n: gender[n]),
            "O": (("G",), lambda g: PRONOUNS[g]),
        }
    )


def _single(lm, words, prefix=" "):
    """Words that are one token after ``prefix`` (or at the start of a prompt when prefix == '')."""
    if lm is None or lm.tokenizer is None:
        return list(words)
    tok = lm.tokenizer
    return [w for w in dict.fromkeys(words) if len(tok(prefix + w, add_special_tokens=False)["input_ids"]) == 1]


def gender_pairs(lm=None, *, n: int = 256, seed: int = 0) -> Pairs:
    """``n`` pairs interchanging G with a source of the other gender (the label always flips).

    With ``lm``, names and verbs are kept only where they are single tokens for its tokenizer.
    """
    male, female = _single(lm, MALE, ""), _single(lm, FEMALE, "")
    verbs = _single(lm, VERBS)
    if not male or not female or not verbs:
        raise ValueError(f"no single-token names or verbs for this tokenizer: {male[:3]}, {female[:3]}, {verbs[:3]}")

    def sample(rng: random.Random) -> dict:
        return {"NAME": rng.choice(male if rng.random() < 0.5 else female), "VERB": rng.choice(verbs)}

    data = causal_model().counterfactuals(sample, variables="G", n=n, seed=seed, changed_only=True)
    return data.render(lambda s: TEMPLATE.format(name=s["NAME"], verb=s["VERB"]), str, candidates=[" he", " she"])
