"""Bad-input rows: AtP* options of attribution_patch. Joined into one table by test_bad_inputs."""

from __future__ import annotations

import torch
from test_bad_inputs import Bad

from interp.attribution import attribution_patch
from interp.causal import Pairs
from interp.inputs import InputError
from interp.positions import at, span

PAIRS = Pairs.of(torch.arange(3, 13).reshape(2, 5), torch.arange(20, 30).reshape(2, 5), base_answer=[5, 5],
                 source_answer=[6, 6])  # fmt: skip


def _atp(env, **kw):
    return attribution_patch(env.lm, PAIRS, **({"positions": {"p1": at(1)}} | kw))


ROWS = [
    Bad("attribution_patch: unknown method", lambda env: _atp(env, method="atp2"), InputError, r"'atp2'.*atp\*"),
    Bad("attribution_patch: grad_drop without atp*", lambda env: _atp(env, grad_drop=True), InputError,
        r"grad_drop=True.*method='atp\*'"),
    Bad("attribution_patch atp*: heads", lambda env: _atp(env, method="atp*", component="head"), InputError,
        r"'head'.*method='atp'"),
    Bad("attribution_patch atp*: a span of tokens",
        lambda env: _atp(env, method="atp*", positions={"two": span(1, 3)}), InputError, r"'two'.*2 tokens"),
]  # fmt: skip
