"""Bad-input rows: saving and loading (interp.io, DAS results, ReFTs). Joined into one table by test_bad_inputs."""

from __future__ import annotations

from test_bad_inputs import Bad

from interp.io import check_output_dir


def _file(env, name="a-file"):
    p = env.tmp / name
    p.write_text("not a folder")
    return p


def _full(env, name="a-run"):
    p = env.tmp / name
    p.mkdir()
    (p / "kept.txt").write_text("earlier work")
    return p


ROWS = [
    Bad("output dir is a file", lambda env: check_output_dir(_file(env)), NotADirectoryError, r"a-file' is a file"),
    Bad("output dir not empty", lambda env: check_output_dir(_full(env)), FileExistsError, r"a-run' already exists"),
    Bad(
        "output dir under a file",
        lambda env: check_output_dir(_file(env) / "sub"),
        NotADirectoryError,
        r"a-file' is a file",
    ),
]
