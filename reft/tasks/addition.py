"""Generated two-number addition: ``"37+48="`` -> ``"85"`` (digits are single tokens in Gemma's vocabulary).

Example:
    >>> data = load(n_train=256, n_test=100, seed=0)
    >>> data.train[0], len(data.train), len(data.test)
    ({'prompt': '63+91=', 'response': '154'}, 256, 100)

Scored by exact match: every answer token is the model's greedy choice (teacher-forced, which equals
greedy decoding of the answer). The ReFT paper reports LoReFT behind LoRA on arithmetic; we report ours.
"""

from __future__ import annotations

import random

from . import TaskData

DEFAULTS = dict(layers="8", positions="f1+l3", rank=8, kind="loreft", steps=24, lr=1e-3, batch_size=8, lora_lr=1e-3)


def load(n_train: int = 256, n_test: int = 50, seed: int = 0, *, digits: int = 2) -> TaskData:
    """Disjoint train/test sets of ``a+b=`` with ``a, b`` of up to ``digits`` digits."""
    rng = random.Random(seed)
    top = 10**digits
    pairs = set()
    while len(pairs) < n_train + n_test:
        pairs.add((rng.randrange(top), rng.randrange(top)))
    pairs = sorted(pairs)
    rng.shuffle(pairs)
    ex = [{"prompt": f"{a}+{b}=", "response": str(a + b)} for a, b in pairs]
    return TaskData(ex[:n_train], ex[n_train:], None, [e["prompt"] for e in ex[n_train : n_train + 5]])
