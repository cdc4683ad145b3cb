"""Built-in ReFT tasks for the embedded Gemma-3-270M: ``style``, ``sentiment``, ``addition``.

Example:
    >>> task = get("sentiment")
    >>> data = task.load(n_train=256, n_test=200, seed=0)
    >>> len(data.train), len(data.test), data.label_words
    (256, 200, {0: ' negative', 1: ' positive'})
    >>> data.train[0]["prompt"][:8], data.train[0]["prompt"][-11:], data.train[0]["label"]
    ('Review: ', '\\nSentiment:', 1)

Each task module defines ``load(...) -> TaskData`` and ``DEFAULTS`` (where to intervene and how to train,
chosen to run in a few minutes on a 2-core CPU). They are registered (kind ``"reft"``) in the task registry
that the ``interp`` command line shares, :mod:`interp.tasks.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from interp.tasks import registry

from ..interventions import ReftError

for _name in ("style", "sentiment", "addition"):
    registry.register(_name, "reft", f"reft.tasks.{_name}")
NAMES = registry.names("reft")


@dataclass
class TaskData:
    """Training and held-out examples; ``label_words`` for classification tasks."""

    train: list[dict]
    test: list[dict]
    label_words: dict | None = None
    eval_prompts: list[str] = field(default_factory=list)  # unseen prompts to show generations on


def get(name: str):
    """The task module called ``name`` (a ``"reft"`` task of :mod:`interp.tasks.registry`)."""
    try:
        return registry.get(name, "reft")
    except registry.UnknownTaskError as e:
        raise ReftError(f"{e} (or pass --data file.jsonl)") from None
