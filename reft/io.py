"""Save and load trained interventions: ``weights.safetensors`` + ``config.json``, never pickle.

Example:
    >>> path = save(rlm, tmp / "style")               # a few KB for a rank-4 LoReFT
    >>> rlm2 = load(lm, path)                         # checks the model fingerprint first
    >>> h = torch.randn(2, lm.d_model)
    >>> torch.equal(rlm2.interventions[0](h), rlm.interventions[0](h))   # bit-identical
    True
    >>> save(rlm, path)
    Traceback (most recent call last):
    FileExistsError: '.../style' already exists and is not empty; pass overwrite=True (CLI: --overwrite) or choose
    another directory

``config.json`` records the model fingerprint (architecture, d_model, n_layers), ``tied``, and per placement
the site, the positions (their repr, e.g. ``first(1)+last()``), the part and the intervention's class and
constructor arguments, and the classifier head's size if there is one. Weights are the interventions' (and the
head's) state dicts; a reload is bit-identical.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from interp import sites as _sites
from interp.sites import Site

from . import positions as _pos
from .interventions import REGISTRY, ReftError
from .model import Placement, ReftModel, check_head, to_model

FORMAT = "reft-interventions/1"
_DTYPES = {str(d): d for d in (torch.float32, torch.float16, torch.bfloat16, torch.float64)}


def save(rlm: ReftModel, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``path/config.json`` and ``path/weights.safetensors``; ``overwrite=True`` to replace a saved run."""
    path = Path(path)
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{str(path)!r} already exists and is not empty; pass overwrite=True (CLI: --overwrite) "
            "or choose another directory"
        )
    index = {id(iv): i for i, iv in enumerate(rlm.interventions)}
    placements = []
    for pl in rlm.placements:
        s = pl.site
        if s.component == "module":
            site = {"module": s.path, "io": s.io}
        else:
            site = {"component": s.component, "layer": s.layer, "head": s.head}
        placements.append(
            {"site": site, "positions": repr(s.pos), "part": pl.part, "intervention": index[id(pl.intervention)]}
        )
    config = {
        "format": FORMAT,
        "model": rlm.lm.spec.fingerprint(),
        "tied": rlm.tied,
        "dtype": str(rlm.lm.dtype),
        "interventions": [{"class": type(iv).__name__, "config": iv.config()} for iv in rlm.interventions],
        "placements": placements,
        "head": None if rlm.head is None else {"d_model": rlm.head.in_features, "n_labels": rlm.head.out_features},
    }
    tensors = {f"{i}.{k}": v for i, iv in enumerate(rlm.interventions) for k, v in _compact_state(iv).items()}
    if rlm.head is not None:
        tensors.update({f"head.{k}": v.detach().contiguous().cpu() for k, v in rlm.head.state_dict().items()})
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    save_file(tensors, str(tmp / "weights.safetensors"))
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path


def load(lm, path: str | os.PathLike) -> ReftModel:
    """Rebuild a saved :class:`ReftModel` on ``lm``; refuses a model whose fingerprint differs."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no ReFT run at {str(path)!r} (expected config.json and weights.safetensors)")
    config = json.loads((path / "config.json").read_text())
    if config.get("format") != FORMAT:
        raise ReftError(f"{str(path)!r} has format {config.get('format')!r}; expected {FORMAT!r}")
    want, have = config["model"], lm.spec.fingerprint()
    if want != have:
        diff = {k: (want.get(k), have.get(k)) for k in set(want) | set(have) if want.get(k) != have.get(k)}
        raise ReftError(
            f"the interventions in {str(path)!r} were trained on a different model: "
            f"{', '.join(f'{k} saved {a!r}, this model {b!r}' for k, (a, b) in diff.items())}; "
            "load them into the model they were trained on"
        )
    ivs = []
    for spec in config["interventions"]:
        cls = REGISTRY.get(spec["class"])
        if cls is None:
            raise ReftError(
                f"unknown intervention class {spec['class']!r}; import the module that defines it "
                "before loading (subclasses of ReftIntervention register themselves)"
            )
        cfg = dict(spec["config"])
        ivs.append(cls(cfg.pop("d_model"), cfg.pop("rank"), **cfg))  # float32; attach() casts to the model
    weights = load_file(str(path / "weights.safetensors"))
    for i, iv in enumerate(ivs):
        _load_compact(iv, {k.split(".", 1)[1]: v for k, v in weights.items() if k.split(".", 1)[0] == str(i)})
    placements = []
    for p in config["placements"]:
        s = p["site"]
        pos = _pos.parse_positions(p["positions"])
        if "module" in s:
            site = Site.module(s["module"], pos, io=s["io"])
        else:
            site = Site(s["component"], s["layer"], pos, s["head"])
        target = _sites.resolve(lm, site)
        iv = ivs[p["intervention"]]
        iv.check(target.width)
        placements.append(Placement(site, target, iv, p["part"]))
    for iv in ivs:
        to_model(iv, lm)
    head = None
    if config.get("head"):
        from .head import ClassifierHead

        head = ClassifierHead(config["head"]["d_model"], config["head"]["n_labels"])
        head.load_state_dict({k[len("head.") :]: v for k, v in weights.items() if k.startswith("head.")})
        check_head(head, lm)
        to_model(head, lm)
    for p in lm.hf.parameters():
        p.requires_grad_(False)
    return ReftModel(lm, placements, tied=config["tied"], head=head)


_ORIGINAL = "parametrizations.weight.original"
_BASE = "parametrizations.weight.0.base"


def _compact_state(iv: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each orthogonal parametrisation stored as its (rank, d) matrix ``R`` only.

    torch keeps a (d, d) ``base`` per orthogonal parametrisation (1.6 MB at d = 640); R itself is rank x d.
    """
    out = {}
    for k, v in iv.state_dict().items():
        if k.endswith(_BASE):
            continue
        if k.endswith(_ORIGINAL):
            prefix = k[: -len(_ORIGINAL)]
            v = iv.get_submodule(prefix.rstrip(".")).weight  # the materialised R
            k = prefix + "weight"
        out[k] = v.detach().contiguous().cpu()
    return out


@torch.no_grad()
def _load_compact(iv: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`_compact_state`, reproducing each R bit for bit.

    An orthogonal parametrisation computes ``R^T = base @ Q(original)``; with ``original = -I`` the
    Householder map gives ``Q = [I; 0]`` exactly, so R^T is the first ``rank`` columns of ``base``: set them
    to the saved R^T and complete ``base`` to an orthogonal matrix, so training can continue from there.
    """
    plain = {}
    for k, v in state.items():
        prefix = k[: -len("weight")].rstrip(".")
        mod = iv.get_submodule(prefix) if prefix else iv
        par = getattr(getattr(mod, "parametrizations", None), "weight", None)
        if k.endswith("weight") and par is not None and hasattr(par[0], "base"):
            R = v.to(par.original.dtype)  # (r, d)
            r, d = R.shape
            q, _ = torch.linalg.qr(torch.cat([R.T, torch.randn(d, d - r, dtype=R.dtype)], 1))
            par[0].base.copy_(torch.cat([R.T, q[:, r:]], 1))  # (d, d): R^T, then an orthonormal complement
            par.original.copy_(-torch.eye(r, d, dtype=R.dtype))
            continue
        plain[k] = v
    missing, unexpected = iv.load_state_dict(plain, strict=False)
    missing = [m for m in missing if _ORIGINAL not in m and _BASE not in m]
    if missing or unexpected:
        raise ReftError(f"saved weights do not fit {type(iv).__name__}: missing {missing}, unexpected {unexpected}")
