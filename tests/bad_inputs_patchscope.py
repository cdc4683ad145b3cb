"""Bad-input rows: the patchscope lens (interp.patchscope). Joined into one table by test_bad_inputs.

Everything is checked before the source run: the layers read and patched, the target prompt, its placeholder.
"""

from __future__ import annotations

import torch
from test_bad_inputs import Bad

from interp import InputError, SiteError
from interp.patchscope import patchscope

TARGET = [5, 6, 7, 8, 9, 8]  # the tiny model has no tokenizer: a target of ids, the placeholder 9 at column 4
BASE = torch.tensor([[11, 12, 13, 14]])


def _scope(env, **kw):
    return patchscope(env.lm, BASE, **{"target": TARGET, "placeholder": 9, **kw})


ROWS = [
    Bad("patchscope placeholder missing", lambda env: _scope(env, placeholder=50), InputError, r"placeholder token 50"),
    Bad(
        "patchscope placeholder word without tokenizer",
        lambda env: _scope(env, placeholder="?"),
        InputError,
        r"placeholder='\?' is a word but this model has no tokenizer",
    ),
    Bad(
        "patchscope placeholder float",
        lambda env: _scope(env, placeholder=9.0),
        InputError,
        r"placeholder=9\.0 must be a word \(str\) or a token id",
    ),
    Bad("patchscope layer out of range", lambda env: _scope(env, layers=[0, 2]), SiteError, r"layer 2 is out of range"),
    Bad(
        "patchscope target layer out of range",
        lambda env: _scope(env, target_layer=-1),
        SiteError,
        r"layer -1 is out of range",
    ),
    Bad("patchscope no layers", lambda env: _scope(env, layers=[]), InputError, r"layers=\[\]\) has no layers"),
    Bad(
        "patchscope several targets",
        lambda env: _scope(env, target=[TARGET, TARGET]),
        InputError,
        r"target is \[\[5, 6, .*expected one prompt",
    ),
    Bad(
        "patchscope new_tokens -1",
        lambda env: _scope(env, new_tokens=-1),
        InputError,
        r"new_tokens=\) must be .*got -1",
    ),
    Bad("patchscope top_k 0", lambda env: _scope(env, top_k=0), InputError, r"top_k=\) must be .*got 0"),
    Bad("patchscope text without tokens", lambda env: _scope(env, layers=[0]).text(), InputError, r"pass new_tokens="),
]
