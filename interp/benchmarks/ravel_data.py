"""RAVEL's city data, read from the published ``data.tgz`` by path, and the prompts' entity positions.

Example:
    >>> separator('[{"city": "%s", "country": "'), separator("%s is a city in the country of")   # before the value
    ('', ' ')
    >>> city = load_city()                       # <data root>/ravel/data.tgz (explanare/ravel)  # doctest: +SKIP
    >>> city.attributes["Aalborg"]["Country"], len(city.entities("train"))                      # doctest: +SKIP
    ('Denmark', 1787)

Nothing is extracted into the repository: the JSON members are read from the archive with :mod:`tarfile`
(a missing archive is a :class:`interp.errors.BenchmarkDataError` naming explanare/ravel and ``data.tgz``).
"""

from __future__ import annotations

import functools
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from interp.benchmarks.data import data_root, require
from interp.errors import BenchmarkDataError, PositionError
from interp.position_base import Position

ARCHIVE = "data.tgz"
MEMBERS = {  # field -> member of data.tgz (RAVEL's city files)
    "attributes": "data/ravel_city_entity_attributes.json",
    "prompts": "data/ravel_city_attribute_to_prompts.json",
    "prompt_split": "data/ravel_city_prompt_to_split.json",
    "entity_split": "data/ravel_city_entity_to_split.json",
}


@dataclass(frozen=True)
class City:
    """RAVEL's city entities: ``attributes[entity][attribute] -> value``, the prompt templates per attribute
    (each with one ``%s`` for the entity), and the published train/val/test splits of entities and templates."""

    attributes: dict
    prompts: dict
    prompt_split: dict
    entity_split: dict

    def entities(self, split: str) -> list[str]:
        """The entities of one split ("train", "val", "test"), sorted."""
        return sorted(e for e, s in self.entity_split.items() if s == split and e in self.attributes)

    def templates(self, attribute: str, split: str) -> list[str]:
        """The attribute's templates of one prompt split that hold the entity once (``%s``), in file order."""
        if attribute not in self.prompts:
            raise BenchmarkDataError(f"RAVEL city has no attribute {attribute!r}; known: {sorted(self.prompts)}")
        return [t for t in self.prompts[attribute] if self.prompt_split.get(t) == split and t.count("%s") == 1
                and "%" not in t.replace("%s", "")]  # fmt: skip


def archive(data=None) -> Path:
    """The path of RAVEL's ``data.tgz`` under the benchmarks' data root, or a BenchmarkDataError saying where
    to get it (explanare/ravel, ``data.tgz``)."""
    return require(data_root(data), "ravel", ARCHIVE)


def load_city(data=None) -> City:
    """RAVEL's city data from ``<data root>/ravel/data.tgz`` (read in place, parsed once per file version)."""
    path = archive(data)
    stat = path.stat()
    return _load(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _load(path: str, mtime: int, size: int) -> City:
    out = {}
    try:
        with tarfile.open(path) as tar:
            for field, member in MEMBERS.items():
                f = tar.extractfile(member)
                if f is None:
                    raise KeyError(member)
                out[field] = json.load(f)
    except (KeyError, tarfile.TarError, json.JSONDecodeError) as e:
        raise BenchmarkDataError(
            f"{path!r} is not RAVEL's data.tgz as published ({type(e).__name__}: {e}); get it again from "
            "explanare/ravel (commit e421fc9), path data.tgz"
        ) from None
    return City(**out)


def separator(template: str) -> str:
    """What precedes the answer: nothing after a space or an opening quote (``"country": "``), else a space."""
    return "" if template[-1:] in (" ", '"', "'", "(", "\n") else " "


def answer_token(tokenizer, template: str, value: str) -> int:
    """The first token of ``value`` as the model would write it after ``template`` (RAVEL scores the first
    token of the answer; the leading space comes from :func:`separator`)."""
    ids = tokenizer(separator(template) + value, add_special_tokens=False)["input_ids"]
    if not ids:
        raise BenchmarkDataError(f"the value {value!r} tokenizes to nothing")
    return ids[0]


class EntityEnd(Position):
    """The last token of the entity mention, a different index in every prompt: a table from each prompt's
    token ids to that index, filled by :meth:`add` from the template (the entity's characters are known there).

    Example (Gemma's tokenizer):
        >>> pos = EntityEnd(gemma.tokenizer)                                                 # doctest: +SKIP
        >>> ids = gemma.tokenizer(pos.add("%s is a city in the country of", "Aalborg"), return_tensors="pt").input_ids
        ... # doctest: +SKIP
        >>> i = pos.resolve(ids.new_ones(ids.shape), ids, gemma.tokenizer)[0, 0].item()      # doctest: +SKIP
        >>> gemma.tokenizer.decode(ids[0, : i + 1])[-4:]                                     # doctest: +SKIP
        'borg'
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.table: dict[tuple, int] = {}

    def add(self, template: str, entity: str) -> str:
        """Record ``template % entity``'s entity end and return the prompt."""
        prompt = template % entity
        end = template.index("%s") + len(entity)  # one past the entity's last character
        enc = self.tokenizer(prompt, return_offsets_mapping=True)
        hits = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if a < end <= b or (b == end and b > a)]
        if not hits:
            raise PositionError(f"no token ends the entity {entity!r} in {prompt!r}")
        self.table[tuple(enc["input_ids"])] = hits[0]
        return prompt

    def indices(self, n, ids, tokenizer):
        key = tuple(ids.tolist()) if ids is not None else None
        if key not in self.table:
            text = self.tokenizer.decode(list(key)) if key else "(no token ids)"
            raise PositionError(
                f"{self!r} does not know the prompt {text[:80]!r}; build prompts with EntityEnd.add(template, "
                "entity) so the entity's last token is recorded"
            )
        return [self.table[key]]

    def __repr__(self):
        return f"EntityEnd({len(self.table)} prompts)"

    __hash__ = object.__hash__


__all__ = ["ARCHIVE", "City", "EntityEnd", "answer_token", "archive", "load_city", "separator"]
