"""Save and load trained interventions: a local folder (:mod:`reft.folder`) or a Hugging Face Hub repo.

Example:
    >>> path = save(rlm, tmp / "style")               # a few KB for a rank-4 LoReFT
    >>> rlm2 = load(path, lm)                         # checks the model fingerprint first
    >>> h = torch.randn(2, lm.d_model)
    >>> torch.equal(rlm2.interventions[0](h), rlm.interventions[0](h))   # bit-identical
    True
    >>> save(rlm, path)
    Traceback (most recent call last):
    interp.errors.SaveExistsError: ReFT folder '.../style' already exists and is not empty; pass overwrite=True
    (CLI: --overwrite) or choose another path

A local save is one commit (:mod:`interp.io.commit`): a reader in another process sees the complete old result or
the complete new one, never a mix, and ``overwrite=False`` is an exclusive create. ``config.json`` records the
model fingerprint, the interventions, their sites (positions structured) and the SHA-256 of ``weights.safetensors``,
which a load checks (:mod:`interp.io.snapshot`); a reload is bit-identical. A save refuses, before writing
anything, what a load could not rebuild; folders of the previous layout (``reft-interventions/1``) still load.

One intervention at several sites (``at_layers(..., share=True)``) is one entry of ``"interventions"`` that
several placements name, so its weights are written once and a load puts the one rebuilt object at every site.
A path ``"hf://owner/name"`` saves to / loads from the Hugging Face Hub (:mod:`reft.hub`), with a model card.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import folder, hub
from .model import ReftModel


def save(rlm: ReftModel, path: str | os.PathLike, *, overwrite: bool = False, task: str | None = None) -> Path | str:
    """Write the folder ``path`` (``config.json``, ``weights.safetensors``) in one commit: a failed or killed
    save leaves the old result (``overwrite=True``) or nothing, and of two processes saving to one path with
    ``overwrite=False`` exactly one succeeds (the other: :class:`interp.errors.SaveExistsError`). Refuses, before
    writing, an intervention class, position or head that a load could not rebuild.

    ``path="hf://owner/name"`` uploads the same folder plus a model card ``README.md`` to the Hugging Face Hub
    (:func:`reft.hub.push`; ``task`` names the task there; a Hub save is a new commit, so ``overwrite`` does not
    apply) and returns ``path``. A local folder gets no model card (:func:`reft.hub.model_card` writes one).
    """
    if hub.is_hub(path):
        return hub.push(rlm, path, task=task)
    return folder.write(rlm, path, overwrite=overwrite)


def load(path: str | os.PathLike, lm) -> ReftModel:
    """Rebuild a saved :class:`ReftModel` on ``lm``.

    Refuses a model of another architecture, size or parameter shapes, and warns
    (:class:`interp.errors.WeightsChangedWarning`) when only its weights differ; refuses edited or damaged files,
    naming the file and the key or tensor, and sizes that do not fit ``lm`` before building anything. Reads one
    consistent snapshot while other processes save to the same path. ``path="hf://owner/name"`` (``@revision``
    optional) downloads the folder from the Hugging Face Hub first (:func:`reft.hub.pull`).
    """
    if hasattr(path, "hf") and not hasattr(lm, "hf"):
        raise TypeError(
            f"reft.load(path, lm): the folder comes first, then the model (as in DASResult.load); got a model, then "
            f"{lm!r}: call reft.load({str(lm)!r}, lm)"
        )
    if hub.is_hub(path):
        path = hub.pull(path)
    return folder.read(path, lm)


__all__ = ["save", "load"]
