"""Saving and loading for both packages (DAS results and ReFTs): checks before work, one-step commits, strict loads.

Example:
    >>> path = save_result(tmp / "run", {"format": "demo"}, {"R": torch.eye(1, 4)})   # one commit, fsynced
    >>> sorted(p.name for p in path.iterdir())
    ['config.json', 'weights.safetensors']
    >>> read_consistent(path, lambda snap: snap.tensors({"R": (1, 4)})["R"].sum().item())
    1.0
    >>> save_result(tmp / "run", {"format": "demo"}, {"R": torch.eye(1, 4)})
    Traceback (most recent call last):
    interp.errors.SaveExistsError: output folder '.../run' already exists and is not empty; pass overwrite=True ...

One format for both kinds of saved result: a folder with ``config.json`` (``"format": "interp/2"``, ``"kind":
"das"`` or ``"reft"``, the model's fingerprint, sites with structured positions, the SHA-256 of the weights file)
and ``weights.safetensors`` (never pickle). The modules, one job each:

- :mod:`~interp.io.paths`: output folders and files checked before any work;
- :mod:`~interp.io.commit`: the one-step commit, ``overwrite=False`` as an exclusive create, and cleaning what
  killed saves left; :mod:`~interp.io.rename`: its filesystem steps (``renameat2``, fsync, names, the lock);
- :mod:`~interp.io.snapshot`: config and weights bound by the weights' hash, one consistent read;
- :mod:`~interp.io.files`: the bytes of both files, the safetensors header read and checked before the data;
- :mod:`~interp.io.schema`: strict JSON and schemas (every error names the file and the key);
- :mod:`~interp.io.positions`, :mod:`~interp.io.fingerprint`, :mod:`~interp.io.state`: positions and sites as
  JSON, the model fingerprint, orthonormal bases stored as their rows;
- :mod:`~interp.io.das`: a DAS result's folder (``DASResult.save`` / ``DASResult.load``).

A save refuses, before writing anything, what a load could not rebuild. A load refuses unknown, missing and
mistyped keys, missing and stray tensors, wrong shapes (from the weights' header, before anything of their size
is read or built), non-finite values and bases whose rows are not orthonormal, each error naming the file; the
files of the previous layouts (``interp-das/1``, ``reft-interventions/1``) and saves without the weights' hash
still load, and saving the loaded result again converts them.
"""

from ..errors import FormatError, SaveExistsError, WeightsChangedWarning
from .commit import atomic_folder, clean_leftovers, write_file_atomic
from .files import check_finite, check_regular, dumps, read_regular, read_tensors, write_json, write_tensors
from .fingerprint import MODEL, MODEL_HASHES, SAMPLE, check_model, fingerprint
from .paths import CONFIG, SAVED_FILES, WEIGHTS, check_output_dir, check_output_file, check_save_dir
from .positions import (
    SITE,
    legacy_position,
    position_from_json,
    position_to_json,
    read_site,
    site_from_json,
    site_to_json,
)
from .schema import FORMAT, KINDS, LEGACY, Config, check_format, read_json
from .snapshot import SHA_KEY, Snapshot, read_consistent, save_result
from .state import check_orthonormal, compact_state, load_compact, same_rng

__all__ = [
    "FORMAT",
    "LEGACY",
    "KINDS",
    "CONFIG",
    "WEIGHTS",
    "SAVED_FILES",
    "SHA_KEY",
    "SAMPLE",
    "MODEL",
    "MODEL_HASHES",
    "SITE",
    "FormatError",
    "SaveExistsError",
    "WeightsChangedWarning",
    "check_output_dir",
    "check_save_dir",
    "check_output_file",
    "atomic_folder",
    "write_file_atomic",
    "clean_leftovers",
    "save_result",
    "read_consistent",
    "Snapshot",
    "write_json",
    "write_tensors",
    "dumps",
    "read_json",
    "read_tensors",
    "read_regular",
    "check_finite",
    "check_regular",
    "Config",
    "check_format",
    "position_to_json",
    "position_from_json",
    "site_to_json",
    "site_from_json",
    "read_site",
    "legacy_position",
    "fingerprint",
    "check_model",
    "compact_state",
    "load_compact",
    "check_orthonormal",
    "same_rng",
]
