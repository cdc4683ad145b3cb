"""Share trained interventions on the Hugging Face Hub: ``reft.save(rlm, "hf://owner/name")``, ``reft.load(...)``.

Example:
    >>> repo_id("hf://owner/name"), repo_id("hf://owner/name@v1"), is_hub(tmp / "run")
    ('owner/name', 'owner/name', False)
    >>> print(model_card(rlm, task="style").splitlines()[0])
    ---
    >>> reft.save(rlm, "hf://owner/name")            # HF_HUB_OFFLINE=1 here (as in the doctests)
    Traceback (most recent call last):
    ConnectionError: cannot save to the Hugging Face Hub repo 'owner/name': HF_HUB_OFFLINE=1 ... is set; ...

A save writes the usual folder (``config.json``, ``weights.safetensors``, see :mod:`reft.io`) into a temporary
directory, adds a generated model card ``README.md`` (sites, positions, intervention class and rank, shared
weights, task, base model, trainable parameters, how to load), creates the repo if needed
(``HfApi().create_repo(exist_ok=True)``) and uploads the folder as one commit: earlier saves stay in the repo's
history. A load downloads ``config.json`` and ``weights.safetensors`` (``snapshot_download``, through the local
Hugging Face cache; ``hf://owner/name@revision`` pins a branch, tag or commit) and loads them as a local folder,
with every check of :func:`reft.load`. Offline (``HF_HUB_OFFLINE=1``) a save is refused, and a load uses the cache
or is refused, naming the repo and the setting, before any other work; so is a Hub that cannot be reached.
Tokens come from ``huggingface_hub`` as usual (``HF_TOKEN`` or ``hf auth login``).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import huggingface_hub
from huggingface_hub.errors import LocalEntryNotFoundError

from interp.models import CONNECT_TIMEOUT, hub_offline
from interp.models import hub_reachable as _reachable

from .folder import write

PREFIX = "hf://"
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
CARD = "README.md"


def is_hub(path) -> bool:
    """Whether ``path`` names a Hub repo (``"hf://owner/name"``) rather than a local folder.

    Example:
        >>> is_hub("hf://me/style"), is_hub("runs/style")
        (True, False)
    """
    return isinstance(path, str) and path.startswith(PREFIX)


def parse(path: str) -> tuple[str, str | None]:
    """``"hf://owner/name[@revision]"`` -> ``("owner/name", revision or None)``, refused unless well formed.

    Example:
        >>> parse("hf://me/style-reft@main")
        ('me/style-reft', 'main')
    """
    text = path[len(PREFIX) :] if path.startswith(PREFIX) else path
    repo, _, revision = text.partition("@")
    if not _REPO.match(repo) or ".." in repo or (_ and not revision):
        raise ValueError(
            f"{path!r} is not a Hub repo: expected hf://owner/name (or hf://owner/name@revision), e.g. hf://me/style"
        )
    return repo, revision or None


def repo_id(path: str) -> str:
    """The ``owner/name`` of ``hf://owner/name[@revision]``.

    Example:
        >>> repo_id("hf://me/style@v1")
        'me/style'
    """
    return parse(path)[0]


def _refuse_offline(repo: str, doing: str, *, cache_ok: bool = False) -> None:
    """Refuse, naming the repo and the setting, when offline mode is asked for or the Hub cannot be reached."""
    alt = ", or pass a local folder" + (" (the repo is not in the local Hugging Face cache)" if cache_ok else "")
    if hub_offline():
        raise ConnectionError(
            f"cannot {doing} the Hugging Face Hub repo {repo!r}: HF_HUB_OFFLINE=1 (or TRANSFORMERS_OFFLINE=1) is "
            f"set; unset it and connect{alt}"
        )
    if not hub_reachable():
        raise ConnectionError(
            f"cannot {doing} the Hugging Face Hub repo {repo!r}: the Hub cannot be reached (no network within "
            f"{CONNECT_TIMEOUT:g} s; HF_HUB_OFFLINE is not set); connect{alt}"
        )


def hub_reachable() -> bool:
    """Whether the Hub's endpoint answers within :data:`interp.models.CONNECT_TIMEOUT` seconds.

    Example:
        >>> hub_reachable()            # no network here  # doctest: +SKIP
        False
    """
    return _reachable()


def check(path: str, *, doing: str = "save to") -> str:
    """What a save to / load from ``path`` can refuse before any work: a malformed repo id, offline mode, no
    network. Returns the repo id (the command lines call this before loading a model).

    Example:
        >>> check("hf://me/style")
        Traceback (most recent call last):
        ConnectionError: cannot save to the Hugging Face Hub repo 'me/style': HF_HUB_OFFLINE=1 ... is set; ...
    """
    repo, revision = parse(path)
    if doing == "load from" and _cached(repo, revision) is not None:
        return repo
    _refuse_offline(repo, doing, cache_ok=doing == "load from")
    return repo


def _cached(repo: str, revision: str | None) -> str | None:
    """The local snapshot folder of ``repo`` in the Hugging Face cache, or None."""
    try:
        return huggingface_hub.snapshot_download(repo, revision=revision, allow_patterns=_FILES, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def push(rlm, path: str, *, task: str | None = None, private: bool | None = None, message: str | None = None) -> str:
    """Upload ``rlm`` to the Hub repo ``path`` (``"hf://owner/name"``) with a model card; returns ``path``.

    Example:
        >>> push(rlm, "hf://me/style", task="style", private=True)   # offline here: refused before any work
        Traceback (most recent call last):
        ConnectionError: cannot save to the Hugging Face Hub repo 'me/style': HF_HUB_OFFLINE=1 ... is set; ...
    """
    repo, revision = parse(path)
    _refuse_offline(repo, "save to")
    card = model_card(rlm, task=task, repo=repo)  # refuses nothing: before the folder, so a bad rlm fails in save
    with tempfile.TemporaryDirectory(prefix="reft-hub-") as tmp:
        folder = write(rlm, Path(tmp) / "reft")  # every check of a local save, before anything is uploaded
        (folder / CARD).write_text(card, encoding="utf-8")
        api = huggingface_hub.HfApi()  # through the module: tests stand in for it
        try:
            api.create_repo(repo, private=private, exist_ok=True)
            api.upload_folder(
                repo_id=repo,
                folder_path=str(folder),
                revision=revision,
                commit_message=message or "Upload ReFT interventions (reft.save)",
            )
        except (OSError, ConnectionError) as e:
            raise ConnectionError(f"could not upload to the Hugging Face Hub repo {repo!r}: {e}") from None
    return path


_FILES = ["config.json", "weights.safetensors"]


def pull(path: str) -> Path:
    """Download the saved ReFT of the Hub repo ``path`` and return its local folder (the Hugging Face cache).

    Example:
        >>> pull("hf://me/style")        # offline here, and not in the cache
        Traceback (most recent call last):
        ConnectionError: cannot load from the Hugging Face Hub repo 'me/style': HF_HUB_OFFLINE=1 ... is set; ...
    """
    repo, revision = parse(path)
    local = _cached(repo, revision) if _offline_or_unreachable() else None
    if local is None:
        _refuse_offline(repo, "load from", cache_ok=True)
        try:
            local = huggingface_hub.snapshot_download(repo, revision=revision, allow_patterns=_FILES)
        except LocalEntryNotFoundError as e:
            raise ConnectionError(f"could not download the Hugging Face Hub repo {repo!r}: {e}") from None
    folder = Path(local)
    missing = [f for f in _FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the Hugging Face Hub repo {repo!r} has no {' or '.join(missing)}: it holds no ReFT saved by reft.save"
        )
    return folder


def _offline_or_unreachable() -> bool:
    return hub_offline() or not hub_reachable()


# ---- the model card ---------------------------------------------------------------------------------------


def base_model(lm) -> str:
    """The base model's name or path as it was loaded (``""`` for a model built in memory).

    Example:
        >>> base_model(lm)                # the doctests' tiny model is built in memory
        ''
    """
    return str(getattr(lm.hf.config, "_name_or_path", "") or getattr(lm.hf, "name_or_path", "") or "")


def model_card(rlm, *, task: str | None = None, repo: str | None = None) -> str:
    """A ``README.md`` for a saved ReFT: YAML metadata, what is where, and how to load it.

    Example:
        >>> card = model_card(rlm, task="style", repo="me/style")
        >>> "| resid_post | 1 | first(1)+last() | all | LoReFT | 4 | 0 |" in card, "Trainable parameters: 260" in card
        (True, True)
    """
    lm = rlm.lm
    base = base_model(lm)
    index = {id(iv): i for i, iv in enumerate(rlm.interventions)}
    uses: dict[int, int] = {}
    for p in rlm.placements:
        uses[index[id(p.intervention)]] = uses.get(index[id(p.intervention)], 0) + 1
    kinds = sorted({type(iv).__name__ for iv in rlm.interventions})
    tags = ["reft", "interp-toolkit", *(k.lower() for k in kinds)]
    meta = ["---", "library_name: interp-toolkit", "tags:", *(f"- {t}" for t in tags)]
    if _REPO.match(base) and not os.path.exists(base):
        meta.append(f"base_model: {base}")  # only a Hub id: the Hub refuses other values here
    meta.append("---")
    spec = lm.spec
    rows = []
    for p in rlm.placements:
        s, iv = p.site, p.intervention
        i = index[id(iv)]
        layer = "" if s.layer is None else s.layer
        where = s.component if s.component != "module" else f"{s.path} ({s.io})"
        part = "all" if p.part is None else str(p.part)
        rows.append(f"| {where} | {layer} | {s.pos!r} | {part} | {type(iv).__name__} | {iv.rank} | {i} |")
    shared = [i for i, n in uses.items() if n > 1]
    name = repo or "<folder>"
    target = f"hf://{repo}" if repo else "path/to/folder"
    load_model = f"interp.load({base!r})" if base else "interp.LM(model)  # the model it was trained on"
    lines = [
        *meta,
        "",
        f"# {name}: ReFT interventions",
        "",
        "Representation finetuning (ReFT) interventions for a frozen language model, saved by `reft.save` "
        "(interp-toolkit). The base model's weights are not in this repo.",
        "",
        f"- Base model: `{base or '(built in memory)'}` ({spec.architecture}, {spec.n_layers} layers, "
        f"d_model {spec.d_model})",
        f"- Task: {task if task else 'not recorded'}",
        f"- Interventions: {len(rlm.interventions)} ({', '.join(kinds)}); tied prefix/suffix weights: {rlm.tied}",
        f"- Trainable parameters: {rlm.trainable_params}",
    ]
    if shared:
        lines.append(
            f"- Shared weights: intervention {', '.join(map(str, shared))} serves several sites (one set of weights)"
        )
    if rlm.head is not None:
        lines.append(f"- Classifier head: {rlm.head.in_features} -> {rlm.head.out_features} classes")
    lines += [
        "",
        "| site | layer | positions | part | intervention | rank | weights |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "## How to load",
        "",
        "```python",
        "import interp, reft",
        "",
        f"lm = {load_model}",
        f'rlm = reft.load("{target}", lm)   # checks that lm is the model it was trained on',
        'reft.generate(rlm, "Question: ...", max_new_tokens=32)',
        "```",
        "",
        "`config.json` records the sites, positions, intervention classes and the model's fingerprint; "
        "`weights.safetensors` holds the weights.",
        "",
    ]
    return "\n".join(lines)
