"""AxBench Concept10's data, read by path: concepts, their training texts and their detection texts.

Example:
    >>> concepts = load(root, quick=True)                               # doctest: +SKIP
    >>> c = concepts[0]; c.concept, c.genre, len(c.train_pos), len(c.eval_pos)   # doctest: +SKIP
    ('references to specific dates and publication information', 'text', 6, 8)

The files are stanfordnlp/axbench's ``axbench/concept10/prod_2b_l10_v1/{generate/train_data.parquet,
generate/metadata.jsonl, inference/latent_eval_data.parquet}`` (the same for ``prod_2b_l20_v1``), kept flat under
``axbench_concept10/<subset>/`` of the benchmarks folder. As in AxBench (``axbench/scripts/train.py``,
``prepare_df``): a concept's training positives are its ``positive`` rows, its negatives the ``negative`` rows
(concept "EEEEE", shared by all concepts) of the concept's genre (text, code or math), both taken from the top
(``head``); its detection texts are the evaluation file's rows of that concept, ``positive`` labelled 1 and
``negative`` 0 (AxBench's AUROC evaluator maps "hard negative" to no label, so those rows are left out). A text is
the instruction (``input``) and the generation (``output``), as a prompt and a response.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from interp.errors import BenchmarkDataError

from .data import require

NAME = "axbench-concept10"
SUBSETS = ("prod_2b_l10_v1", "prod_2b_l20_v1")  # concepts of Gemma-2-2B's layer-10 and layer-20 SAEs
FILES = ("train_data.parquet", "metadata.jsonl", "latent_eval_data.parquet")
NEGATIVE = "EEEEE"  # AxBench's EMPTY_CONCEPT: the output concept of the negative training rows


@dataclass
class Text:
    """One text: the instruction (``prompt``) and the generation (``response``)."""

    prompt: str
    response: str

    def example(self) -> dict:
        return {"prompt": self.prompt + "\n", "response": self.response}


@dataclass
class Concept:
    """A concept with its training texts (positives, genre negatives) and its labelled detection texts."""

    concept_id: int
    concept: str
    genre: str
    train_pos: list[Text] = field(default_factory=list)
    train_neg: list[Text] = field(default_factory=list)
    eval_pos: list[Text] = field(default_factory=list)
    eval_neg: list[Text] = field(default_factory=list)


def paths(root: Path, subset: str) -> dict[str, Path]:
    """The subset's three files, or a :class:`BenchmarkDataError` naming the public repository and path."""
    if subset not in SUBSETS:
        raise BenchmarkDataError(f"unknown AxBench Concept10 subset {subset!r}; known: {', '.join(SUBSETS)}")
    stage = {f: "inference" if f.startswith("latent") else "generate" for f in FILES}  # upstream's subfolders
    return {
        f: require(root, NAME, f"{subset}/{f}", upstream=f"axbench/concept10/{subset}/{stage[f]}/{f}") for f in FILES
    }


def _table(path: Path) -> list[dict]:
    try:
        return pq.read_table(path).to_pylist()
    except Exception as e:  # a truncated or foreign file
        raise BenchmarkDataError(f"could not read {str(path)!r} as parquet ({type(e).__name__}: {e})") from None


def load(
    root: Path,
    *,
    subset: str = SUBSETS[0],
    n_concepts: int | None = None,
    n_train: int = 24,
    n_eval: int = 24,
) -> list[Concept]:
    """The first ``n_concepts`` concepts (all when None), each with ``n_train`` training positives and as many
    genre negatives, and ``n_eval`` detection positives and negatives (the first of each, file order)."""
    files = paths(root, subset)
    meta = []
    for i, line in enumerate(files["metadata.jsonl"].read_text().splitlines()):
        if line.strip():
            try:
                m = json.loads(line)
                meta.append((int(m["concept_id"]), m["concept"], m["concept_genres_map"][m["concept"]][0]))
            except (ValueError, KeyError, IndexError, TypeError) as e:
                where = files["metadata.jsonl"]
                raise BenchmarkDataError(f"{where}: line {i + 1} is not AxBench metadata ({e!r})") from None
    meta.sort()
    train, evals = _table(files["train_data.parquet"]), _table(files["latent_eval_data.parquet"])
    for name, rows in (("train_data.parquet", train), ("latent_eval_data.parquet", evals)):
        missing = {"input", "output", "category", "concept_id"} - set(rows[0] if rows else {})
        if missing:
            raise BenchmarkDataError(f"{files[name]} lacks the columns {sorted(missing)}; is it AxBench's file?")
    concepts = []
    for cid, name, genre in meta[:n_concepts]:
        c = Concept(cid, name, genre)
        for r in train:
            t = Text(r["input"], r["output"] or "")
            if r["category"] == "positive" and r["concept_id"] == cid and len(c.train_pos) < n_train:
                c.train_pos.append(t)
            elif (
                r["category"] == "negative" and r.get("output_concept", NEGATIVE) == NEGATIVE
                and r.get("concept_genre") == genre and len(c.train_neg) < n_train
            ):  # fmt: skip
                c.train_neg.append(t)
        for r in evals:
            if r["concept_id"] != cid:
                continue
            t = Text(r["input"], r["output"] or "")
            if r["category"] == "positive" and len(c.eval_pos) < n_eval:
                c.eval_pos.append(t)
            elif r["category"] == "negative" and len(c.eval_neg) < n_eval:
                c.eval_neg.append(t)
        if not (c.train_pos and c.train_neg and c.eval_pos and c.eval_neg):
            raise BenchmarkDataError(
                f"concept {cid} ({name!r}) has {len(c.train_pos)}/{len(c.train_neg)} training positives/negatives and "
                f"{len(c.eval_pos)}/{len(c.eval_neg)} evaluation ones; the files under {root} look incomplete"
            )
        concepts.append(c)
    return concepts


__all__ = ["Concept", "FILES", "NAME", "SUBSETS", "Text", "load", "paths"]
