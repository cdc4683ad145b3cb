"""The bad-input table: every input a user can get wrong, one row each, one check for all of them.

Each row calls the API or a command line with one bad value and asserts the error type (or the warning) and that
its message names the bad value (a regular expression over the message). Command-line rows (``error=CLI``)
assert a non-zero exit and one clear line on stderr, with no traceback. The rows are kept by topic in
``tests/bad_inputs_<topic>.py`` (each a list ``ROWS``) and joined here into one table.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import tiny_lm

# tests/bad_inputs_<topic>.py
TOPICS = ("io", "cli", "numbers", "inputs", "featurizers", "circuits", "edges", "patchscope", "atp")


class CLI:
    """``error=CLI``: the call runs a command line's ``main(argv)``; it must exit non-zero with one line."""


@dataclass(frozen=True)
class Bad:
    """One bad input: ``call(env)`` must raise (or warn) ``error`` with a message matching ``names``."""

    id: str
    call: Callable[[Env], object]
    error: type
    names: str  # a regex: the message names the bad value (and, where useful, what to try)


@dataclass
class Env:
    """What a row may use: ``tmp`` (a fresh folder) and ``lm`` (a tiny random Llama shared by all rows)."""

    tmp: Path

    @property
    def lm(self):
        return _llama()


@functools.cache
def _llama():
    return tiny_lm("llama")


def _rows() -> list[Bad]:
    rows = [r for t in TOPICS for r in importlib.import_module(f"bad_inputs_{t}").ROWS]
    ids = [r.id for r in rows]
    assert len(ids) == len(set(ids)), f"duplicate row ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    return rows


ROWS = _rows()


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_is_refused_with_a_message_naming_it(row, tmp_path, capsys):
    env = Env(tmp_path)
    if row.error is CLI:
        code = row.call(env)
        err = capsys.readouterr().err
        assert code not in (0, None), f"exit code {code}; stderr: {err}"
        assert "Traceback" not in err, err
        assert re.search(row.names, err), f"{row.names!r} not in stderr: {err}"
    elif issubclass(row.error, Warning):
        with pytest.warns(row.error, match=row.names):
            row.call(env)
    else:
        with pytest.raises(row.error, match=row.names):
            row.call(env)
