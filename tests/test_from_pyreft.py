"""reft.from_pyreft: checkpoints in pyreft / pyvene's layout (config.json + intkey_<key>.bin), written here.

Each row writes a checkpoint the way pyvene's ``IntervenableModel.save`` lays it out (no pyreft install), loads it
with ``reft.from_pyreft`` and compares the logits with (a) pyreft's formulas applied to the raw saved tensors in a
plain forward hook on the HF model, outside this package's engine, and (b) our own interventions built with the same
weights through ``reft.attach``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import tiny_lm

import interp
import reft
from interp import Site, first, last
from interp.engine import options
from interp.io import FormatError, load_compact
from interp.sites import architecture

T = 6  # prompt length of the test inputs
PYREFT = "<class 'pyreft.interventions.{}'>"
ORTHOGONAL = ("DireftIntervention", "ConsreftIntervention", "LobireftIntervention")  # parametrised rotate_layer
ROT_ORIGINAL = "rotate_layer.parametrizations.weight.original"
ROT_BASE = "rotate_layer.parametrizations.weight.0.base"
LEARNED = ("weight", "bias", "learned_source", "learned_source.weight", "learned_source.bias")


# ---- pyvene's layout, written from scratch ----------------------------------------------------------------


def pyvene_keys(reps: list[dict]) -> list[str]:
    """pyvene's keys: ``layer_<L>_comp_<c>_unit_pos_nunit_1#<i>``, or ``comp_<path with _>_unit_...`` for paths."""
    seen: dict[str, int] = {}
    keys = []
    for r in reps:
        c = r["component"]
        stem = (
            f"comp_{c.replace('.', '_')}_unit_pos_nunit_1"
            if "." in c
            else f"layer_{r['layer']}_comp_{c}_unit_pos_nunit_1"
        )
        seen[stem] = seen.get(stem, -1) + 1
        keys.append(f"{stem}#{seen[stem]}")
    return keys


def _orthonormal(d: int, r: int, gen) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(d, r, generator=gen)).Q  # (d, r), orthonormal columns


def _parametrised(d: int, r: int, gen) -> tuple[torch.Tensor, dict]:
    """A (d, r) orthogonal rotate_layer as torch's parametrisation stores it (pyreft's default state_dict), moved
    off its initial point as training would; returns the matrix it stands for and the saved entries."""
    holder = torch.nn.Module()
    holder.weight = torch.nn.Parameter(_orthonormal(d, r, gen))
    torch.nn.utils.parametrizations.orthogonal(holder)
    with torch.no_grad():
        # training moves the strictly lower triangle (the Householder vectors); the diagonal holds signs
        holder.parametrizations.weight.original.add_((0.3 * torch.randn(d, r, generator=gen)).tril(-1))
    sd = holder.state_dict()
    Rw = holder.weight.detach().clone()
    return Rw, {ROT_ORIGINAL: sd["parametrizations.weight.original"], ROT_BASE: sd["parametrizations.weight.0.base"]}


def random_state(kind: str, d: int, r: int, gen, *, proj_bias: bool = True) -> tuple[dict, dict]:
    """(saved state dict in pyreft's layout, the tensors pyreft's forward uses) for one intervention."""
    W, b = torch.randn(r, d, generator=gen), torch.randn(r, generator=gen)
    if kind == "LoreftIntervention":  # pyreft's own state_dict(): learned_source's weight/bias + rotate_layer
        Rw = _orthonormal(d, r, gen)
        return {"weight": W, "bias": b, "rotate_layer": Rw}, {"W": W, "b": b, "Rw": Rw}
    buffers = {"embed_dim": torch.tensor(d), "interchange_dim": torch.tensor(d)}
    if kind in ORTHOGONAL:
        Rw, rot = _parametrised(d, r, gen)
        if kind == "DireftIntervention":
            return {**buffers, **rot, "learned_source.weight": W, "learned_source.bias": b}, {"W": W, "b": b, "Rw": Rw}
        return {**buffers, **rot, "learned_source": b}, {"b": b, "Rw": Rw}
    P = 0.5 * torch.randn(r, d, generator=gen)
    saved = {**buffers, "proj_layer.weight": P, "learned_source.weight": W, "learned_source.bias": b}
    truth = {"W": W, "b": b, "P": P, "pb": torch.zeros(r)}
    if proj_bias:
        saved["proj_layer.bias"] = truth["pb"] = torch.randn(r, generator=gen)
    return saved, truth


def write_pyreft(folder: Path, reps: list[dict], *, d: int = 32, seed: int = 0, dtype=torch.float32) -> list[dict]:
    """Write ``folder`` as pyvene saves it; ``reps``: dicts with layer, component, kind, rank (optional: link).
    Returns, per representation, the tensors pyreft's forward uses (in float32)."""
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    keys = pyvene_keys(reps)
    config = {
        "intervention_constant_sources": [True] * len(reps),
        "intervention_dimensions": [d] * len(reps),
        "intervention_types": [PYREFT.format(r["kind"]) for r in reps],
        "mode": "parallel",
        "representations": [
            [
                r["layer"],
                r["component"],
                "pos",
                1,
                r["rank"],
                None,
                None,
                None,
                None,
                r.get("link"),
                None,
                None,
                None,
                None,
            ]
            for r in reps
        ],
        "sorted_keys": keys,
        "transformers_version": "4.40.2",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    truths: list[dict] = []
    linked: dict = {}
    for r, key in zip(reps, keys):
        if r.get("link") is not None and r["link"] in linked:
            saved, truth = linked[r["link"]]  # pyvene saves a tied intervention once per key
        else:
            saved, truth = random_state(r["kind"], d, r["rank"], gen)
            # pyreft builds learned_source in its dtype (bfloat16 by default) and rotate_layer in float32
            saved = {k: v.to(dtype) if k in LEARNED else v for k, v in saved.items()}
            truth = {k: v.to(dtype).float() if k in ("W", "b") else v for k, v in truth.items()}
            linked[r.get("link")] = (saved, truth)
        torch.save(saved, folder / f"intkey_{key}.bin")
        truths.append(truth)
    return truths


def edit_config(folder: Path, edit) -> Path:
    file = folder / "config.json"
    config = json.loads(file.read_text())
    edit(config)
    file.write_text(json.dumps(config))
    return folder


# ---- pyreft's forward, from the raw tensors ------------------------------------------------------------------


def pyreft_edit(kind: str, h: torch.Tensor, t: dict) -> torch.Tensor:
    """pyreft's formulas with their tensors as saved: ``Rw`` (d, r), ``W`` (r, d), ``P`` = proj_layer (r, d)."""
    if kind == "LoreftIntervention":
        return h + (h @ t["W"].T + t["b"] - h @ t["Rw"]) @ t["Rw"].T
    if kind == "DireftIntervention":
        return h + (h @ t["W"].T + t["b"]) @ t["Rw"].T
    if kind == "NoreftIntervention":
        return h + (h @ t["W"].T + t["b"] - (h @ t["P"].T + t["pb"])) @ t["P"]
    if kind == "NodireftIntervention":
        return h + (h @ t["W"].T + t["b"]) @ t["P"]
    if kind == "ConsreftIntervention":
        return h + (t["b"] - h @ t["Rw"]) @ t["Rw"].T
    if kind == "LobireftIntervention":
        return h + t["b"] @ t["Rw"].T
    raise ValueError(kind)


def reference_logits(lm, ids: torch.Tensor, edits: list[tuple[int, list[int], str, dict]]) -> torch.Tensor:
    """Logits (B, T, V) of a plain HF forward with pyreft's edits on decoder layer outputs: ``(layer, columns,
    kind, tensors)`` each, applied by forward hooks, not by this package's engine."""
    layers = lm.hf.get_submodule(architecture(lm).layers)
    handles = []
    for layer, cols, kind, t in edits:

        def hook(mod, args, out, cols=cols, kind=kind, t=t):
            h = out[0] if isinstance(out, tuple) else out
            h = h.clone()
            h[:, cols] = pyreft_edit(kind, h[:, cols], t)
            return (h, *out[1:]) if isinstance(out, tuple) else h

        handles.append(layers[layer].register_forward_hook(hook))
    try:
        with torch.no_grad():
            return lm.hf(input_ids=ids).logits
    finally:
        for h in handles:
            h.remove()


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), options(backend="hooks"):
        return interp.run(model, ids, logits_at=first(ids.shape[1])).logits  # (B, T, V)


def _ids(seed: int = 1) -> torch.Tensor:
    return torch.randint(3, 97, (3, T), generator=torch.Generator().manual_seed(seed))


# ---- the table ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    arch: str
    kind: str
    rank: int
    layers: tuple[int, ...]
    untied: bool = False  # two interventions per layer (pyreft's train.py "f1+l1" without --share_weights)
    path: bool = False  # component as a module path, "model.layers[L].output"
    dtype: torch.dtype = torch.float32  # pyreft's learned_source defaults to bfloat16

    def __str__(self):
        extra = "-untied" * self.untied + "-path" * self.path + "-bf16" * (self.dtype == torch.bfloat16)
        return f"{self.arch}-{self.kind}-r{self.rank}-L{'.'.join(map(str, self.layers))}{extra}"

    def reps(self, lm) -> list[dict]:
        def comp(layer):
            return f"{architecture(lm).layers}[{layer}].output" if self.path else "block_output"

        one = [{"layer": L, "component": comp(L), "kind": self.kind, "rank": self.rank} for L in self.layers]
        return one + one if self.untied else one  # pyreft doubles its layer list: prefix halves, then suffix halves

    def edits(self, reps, truths) -> list[tuple[int, list[int], str, dict]]:
        n = len(self.layers)
        cols = [[0]] * n + [[T - 1]] * n if self.untied else [[T - 1]] * n  # default: first(1) + last(1), or last(1)
        return [(r["layer"], c, r["kind"], t) for r, c, t in zip(reps, cols, truths)]


CASES = [
    Case("llama", "LoreftIntervention", 4, (1,)),  # pyreft's README: one LoReFT, last prompt token
    Case("gpt2", "LoreftIntervention", 2, (0, 1), untied=True),
    Case("gemma3", "LoreftIntervention", 1, (0,), untied=True, path=True),
    Case("gpt_neox", "LoreftIntervention", 3, (1,), dtype=torch.bfloat16),
    Case("qwen2", "DireftIntervention", 3, (1,)),
    Case("gpt_neox", "NoreftIntervention", 4, (0,)),
    Case("llama", "NodireftIntervention", 2, (1,)),
    Case("gpt2", "ConsreftIntervention", 2, (1,)),
    Case("qwen2", "LobireftIntervention", 4, (0, 1)),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_checkpoint_in_pyreft_layout_gives_pyreft_logits(case, tmp_path):
    lm = tiny_lm(case.arch)
    reps = case.reps(lm)
    truths = write_pyreft(tmp_path / "run", reps, d=lm.d_model, dtype=case.dtype)
    rlm = reft.from_pyreft(tmp_path / "run", lm)
    ids = _ids()
    ours, plain = logits(rlm, ids), logits(lm, ids)
    want = reference_logits(lm, ids, case.edits(reps, truths))
    torch.testing.assert_close(ours, want, atol=1e-5, rtol=1e-5)
    assert (ours - plain).abs().max() > 1e-2  # the edit matters: far above the tolerance
    assert rlm.tied is not case.untied
    assert len(rlm.placements) == len(reps)


LOREFT = [c for c in CASES if c.kind == "LoreftIntervention"]


@pytest.mark.parametrize("case", LOREFT, ids=str)
def test_loreft_checkpoint_equals_our_own_loreft_with_the_same_weights(case, tmp_path):
    lm = tiny_lm(case.arch)
    reps = case.reps(lm)
    truths = write_pyreft(tmp_path / "run", reps, d=lm.d_model, dtype=case.dtype)
    loaded = reft.from_pyreft(tmp_path / "run", lm)
    n = len(case.layers)
    own = {}
    for L, t_first, t_last in zip(case.layers, truths[:n], truths[n:] if case.untied else truths):
        site = Site("resid_post", L, first(1) + last(1) if case.untied else last())
        ivs = []
        for t in (t_first, t_last) if case.untied else (t_first,):
            iv = reft.LoReFT(lm.d_model, case.rank)
            load_compact(iv, {"R.proj.weight": t["Rw"].T, "W.weight": t["W"], "W.bias": t["b"]})
            ivs.append(iv)
        own[site] = ivs
    ours = reft.attach(lm, {s: ivs[0] for s, ivs in own.items()}, tied=not case.untied)
    if case.untied:  # attach copies the intervention for part 1; give that copy the second file's weights
        for pl in ours.placements:
            if pl.part == 1:
                pl.intervention.load_state_dict(own[pl.site][1].state_dict())
    ids = _ids(2)
    torch.testing.assert_close(logits(loaded, ids), logits(ours, ids), atol=1e-5, rtol=1e-5)
    assert (logits(loaded, ids) - logits(lm, ids)).abs().max() > 1e-2


def test_R_is_their_rotate_layer_transposed_at_the_edited_position(tmp_path):
    """The edited vector equals pyreft's LoReFT on the raw tensors, ``h + (W h + b - h Rw) Rw^T``, Rw (d, r)."""
    lm = tiny_lm("llama")
    (t,) = write_pyreft(
        tmp_path / "run", [{"layer": 1, "component": "block_output", "kind": "LoreftIntervention", "rank": 4}]
    )
    rlm = reft.from_pyreft(tmp_path / "run", lm)
    R = rlm.interventions[0].R.weight  # (rank, d)
    assert R.shape == (4, 32) and torch.equal(R, t["Rw"].T)
    site = Site("resid_post", 1, last())
    ids = _ids()
    with torch.no_grad():
        h = interp.collect(lm, ids, at=site)  # (B, 1, d), before the edit
        edited = interp.collect(rlm, ids, at=site)  # what the loaded model writes there
    Rw, W, b = t["Rw"], t["W"], t["b"]
    torch.testing.assert_close(edited, h + (h @ W.T + b - h @ Rw) @ Rw.T, atol=1e-5, rtol=1e-5)
    assert (edited - h).abs().max() > 1e-2


# ---- no code from a file ever runs ------------------------------------------------------------------------


def _payload(marker: str) -> None:  # what the pickled object below would run on an unsafe load
    Path(marker).write_text("the payload ran")


class Payload:
    """An object whose unpickling calls ``_payload(marker)``: code in a checkpoint."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (_payload, (self.marker,))


def test_weights_only_refuses_a_file_with_pickled_code_and_runs_nothing(tmp_path):
    lm = tiny_lm("llama")
    folder = tmp_path / "run"
    reps = [{"layer": 1, "component": "block_output", "kind": "LoreftIntervention", "rank": 4}]
    write_pyreft(folder, reps)
    file = folder / f"intkey_{pyvene_keys(reps)[0]}.bin"
    state = torch.load(file, weights_only=True)
    marker = tmp_path / "payload-ran"
    torch.save({**state, "bias": Payload(marker)}, file)
    with pytest.raises(FormatError, match=r"intkey_layer_1_.*refused: it holds pickled objects other than tensors"):
        reft.from_pyreft(folder, lm)
    assert not marker.exists(), "from_pyreft ran code from the file"
    torch.load(file, weights_only=False)  # the control: an unsafe load does run it
    assert marker.read_text() == "the payload ran"


# ---- positions: not stored by pyreft -------------------------------------------------------------------------


def _reps(layers, kind="LoreftIntervention", rank=2, component="block_output"):
    return [{"layer": L, "component": component, "kind": kind, "rank": rank} for L in layers]


def test_default_positions_follow_pyreft_usage(tmp_path):
    lm = tiny_lm("llama")
    write_pyreft(tmp_path / "one", _reps([0, 1]))
    one = reft.from_pyreft(tmp_path / "one", lm)  # one per layer: the last prompt token (pyreft's README)
    assert [(p.site, p.part) for p in one.placements] == [(Site("resid_post", L, last()), None) for L in (0, 1)]
    write_pyreft(tmp_path / "two", _reps([0, 1, 0, 1]))
    two = reft.from_pyreft(tmp_path / "two", lm)  # two per layer: train.py's "f1+l1", untied
    fl = first(1) + last(1)
    assert [(p.site, p.part) for p in two.placements] == [
        (Site("resid_post", L, fl), j) for L in (0, 1) for j in (0, 1)
    ]
    assert [two.interventions[i] for i in range(4)] == [p.intervention for p in two.placements]
    assert not two.tied and one.tied


def test_positions_given_take_the_parts_of_each_layer(tmp_path):
    lm = tiny_lm("llama")
    truths = write_pyreft(tmp_path / "two", _reps([1, 1]))
    rlm = reft.from_pyreft(tmp_path / "two", lm, positions=first(2) + last(2))
    ids = _ids()
    want = reference_logits(
        lm, ids, [(1, [0, 1], "LoreftIntervention", truths[0]), (1, [T - 2, T - 1], "LoreftIntervention", truths[1])]
    )
    torch.testing.assert_close(logits(rlm, ids), want, atol=1e-5, rtol=1e-5)
    truths = write_pyreft(tmp_path / "shared", _reps([1]))
    rlm = reft.from_pyreft(tmp_path / "shared", lm, positions=first(1) + last(1))  # pyreft's share_weights
    want = reference_logits(lm, ids, [(1, [0, T - 1], "LoreftIntervention", truths[0])])
    torch.testing.assert_close(logits(rlm, ids), want, atol=1e-5, rtol=1e-5)
    with pytest.raises(reft.ReftError, match=r"has 3 interventions and pyreft does not store their positions"):
        write_pyreft(tmp_path / "three", _reps([1, 1, 1]))
        reft.from_pyreft(tmp_path / "three", lm)


# ---- components, links, and our own format -------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch, component, layer, want",
    [
        ("llama", "block_input", 1, Site("resid_pre", 1)),
        ("llama", "mlp_output", 0, Site("mlp_out", 0)),
        ("llama", "attention_output", 1, Site("attn_out", 1)),
        ("gpt2", "mlp_output", 1, Site("mlp_out", 1)),
        ("gemma3", "mlp_output", 1, Site.module("model.layers.1.mlp")),  # ours is after the post-MLP norm
        ("gemma3", "attention_output", 0, Site.module("model.layers.0.self_attn")),
        ("llama", "model.layers[1].input", 0, Site("resid_pre", 1)),
        ("llama", "model.layers[0].mlp.output", 0, Site("mlp_out", 0)),
        ("llama", "model.layers[0].mlp.act_fn.output", 0, Site.module("model.layers.0.mlp.act_fn")),
    ],
)
def test_components_map_to_the_same_point(arch, component, layer, want, tmp_path):
    lm = tiny_lm(arch)
    kind = "LoreftIntervention"
    d = 64 if component.endswith("act_fn.output") else lm.d_model  # the MLP's neurons: intermediate_size
    write_pyreft(tmp_path / "run", [{"layer": layer, "component": component, "kind": kind, "rank": 2}], d=d)
    (p,) = reft.from_pyreft(tmp_path / "run", lm).placements
    assert p.site == want


def test_linked_interventions_share_one_set_of_weights(tmp_path):
    lm = tiny_lm("llama")
    reps = [{**r, "link": 0} for r in _reps([0, 1])]
    write_pyreft(tmp_path / "run", reps)
    rlm = reft.from_pyreft(tmp_path / "run", lm)
    assert len(rlm.interventions) == 1 and rlm.placements[0].intervention is rlm.placements[1].intervention
    file = tmp_path / "run" / f"intkey_{pyvene_keys(reps)[1]}.bin"
    state = torch.load(file, weights_only=True)
    torch.save({**state, "bias": state["bias"] + 1}, file)
    with pytest.raises(FormatError, match=r"intervention_link_key 0 ties it to .*different weights"):
        reft.from_pyreft(tmp_path / "run", lm)


def test_loaded_checkpoint_saves_and_reloads_in_our_format(tmp_path):
    lm = tiny_lm("gpt2")
    write_pyreft(tmp_path / "theirs", _reps([0, 1, 0, 1], kind="DireftIntervention", rank=3))
    rlm = reft.from_pyreft(tmp_path / "theirs", lm)
    again = reft.load(reft.save(rlm, tmp_path / "ours"), lm)
    ids = _ids()
    torch.testing.assert_close(logits(again, ids), logits(rlm, ids), atol=1e-6, rtol=0)
    with pytest.raises(FormatError, match=r"this package's format .* reft\.load"):
        reft.from_pyreft(tmp_path / "ours", lm)
