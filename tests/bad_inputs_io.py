"""Bad-input rows: saving and loading (interp.io, DAS results, ReFTs). Joined into one table by test_bad_inputs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil

import torch
import transformers as tf
from conftest import tiny_lm
from safetensors.torch import load_file, save_file
from test_bad_inputs import Bad

import interp
import reft
from interp import LowRankRotation, Site, first, last
from interp.das import DASResult
from interp.io import FormatError, WeightsChangedWarning, check_output_dir
from interp.positions import Position


def _file(env, name="a-file"):
    p = env.tmp / name
    p.write_text("not a folder")
    return p


def _full(env, name="a-run"):
    p = env.tmp / name
    p.mkdir()
    (p / "kept.txt").write_text("earlier work")
    return p


# ---- saved results to spoil ----------------------------------------------------------------------------------


def _das_result(env, pos=None, basis=None, **kw):
    basis = basis if basis is not None else LowRankRotation(32, 2)
    site = Site("resid_post", 1, pos if pos is not None else last())
    kw = {"history": [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4}], "lm": env.lm, **kw}
    return DASResult(site=site, basis=basis, variables=("G",), splits=(basis.rank,), **kw)


def _das(env, name="das"):
    return _das_result(env).save(env.tmp / name)


def _rlm(env, pos=None, iv=None):
    pos = pos if pos is not None else first(1) + last()
    return reft.attach(env.lm, {Site("resid_post", 1, pos): iv if iv is not None else reft.LoReFT(32, 4)})


def _reft(env, name="run"):
    return reft.save(_rlm(env), env.tmp / name)


def _config(path, edit):
    """``path/config.json`` changed by ``edit(config)`` (in place)."""
    file = path / "config.json"
    config = json.loads(file.read_text())
    edit(config)
    file.write_text(json.dumps(config))
    return path


def _text(path, text, name="config.json"):
    (path / name).write_text(text)
    return path


def _tensors(path, edit):
    """``path/weights.safetensors`` changed by ``edit(tensors)``, and config.json's record of its SHA-256 with it (an
    edit made on purpose: the checks of the values, not the binding, must refuse it)."""
    file = path / "weights.safetensors"
    tensors = load_file(str(file))
    edit(tensors)
    save_file(tensors, str(file))
    return _rehash(path)


def _rehash(path):
    digest = hashlib.sha256((path / "weights.safetensors").read_bytes()).hexdigest()
    return _config(path, _set("weights_sha256", value=digest))


def _mixed(save, load):
    """Load a folder whose weights.safetensors was copied from another save of the same shapes (other values)."""

    def call(env):
        path, other = save(env, "mine"), save(env, "other")
        shutil.copy(other / "weights.safetensors", path / "weights.safetensors")
        return load(path, env.lm)

    return call


def _header_claims(n):
    """A weights file whose header length field claims ``n`` bytes."""

    def spoil(path):
        file = path / "weights.safetensors"
        file.write_bytes(n.to_bytes(8, "little") + file.read_bytes()[8:])
        return path

    return spoil


def _wide_das(width):
    """A DAS folder edited consistently to a basis of ``width``: config, weights and their hash agree."""

    def spoil(path):
        _config(path, _set("basis", "d_model", value=width))
        return _tensors(path, lambda t: t.update(R=torch.linalg.qr(torch.randn(width, 2)).Q.T.contiguous()))

    return spoil


def _digits(key, n=5000):
    """config.json with the value of ``key`` replaced by an integer of ``n`` digits (json.dumps cannot write it)."""

    def spoil(path):
        text = (path / "config.json").read_text()
        return _text(path, re.sub(rf'"{key}": [^,\n]+', f'"{key}": {"9" * n}', text, count=1))

    return spoil


def _nested(depth):
    return lambda p: _text(p, "[" * depth + "]" * depth)


def load_das(spoil):
    """A row's call: save a DAS result, spoil its folder with ``spoil(path)``, load it."""
    return lambda env: DASResult.load(spoil(_das(env)), env.lm)


def load_reft(spoil):
    return lambda env: reft.load(spoil(_reft(env)), env.lm)


def das_config(edit):
    return load_das(lambda p: _config(p, edit))


def reft_config(edit):
    return load_reft(lambda p: _config(p, edit))


def _set(*keys, value):
    def edit(config):
        d = config
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return edit


def _del(*keys):
    def edit(config):
        d = config
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]

    return edit


def _pos(value, reft=False):
    return _set(*(("placements", 0, "site", "pos") if reft else ("site", "pos")), value=value)


# ---- models it was not saved from ------------------------------------------------------------------------------


def _llama(layers=2, intermediate=64):
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=97, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                         num_hidden_layers=layers, intermediate_size=intermediate)  # fmt: skip
    return interp.LM(tf.LlamaForCausalLM(cfg).eval())


def _changed():
    lm = tiny_lm("llama")
    with torch.no_grad():
        lm.hf.model.embed_tokens.weight[0, 0] += 1e-3
    return lm


# ---- what a file cannot restore ------------------------------------------------------------------------------


class _Middle(Position):
    """A user-defined position (fine to run; no file can restore it)."""

    def indices(self, n, ids, tokenizer):
        return [n // 2]

    def __repr__(self):
        return "middle()"


class _RowBasis(LowRankRotation):
    """A user-defined basis kind."""


class _RowUnbuildable(reft.ReftIntervention):
    """Takes an option its config() does not record (not passed on to ReftIntervention.__init__)."""

    def __init__(self, d_model, rank, scale, *, dtype=torch.float32):
        super().__init__(d_model, rank, dtype=dtype)
        self.scale = scale

    def target(self, h):
        return self.scale * (h @ self.R.weight.T)


def _twin():
    class _RowTwin(reft.ReftIntervention):
        def target(self, h):
            return h @ self.R.weight.T

    return _RowTwin


def _shadowed(env):
    """An intervention whose class name a later class took over: a load would build the other one."""
    first_twin, _ = _twin(), _twin()
    return reft.save(_rlm(env, iv=first_twin(32, 2)), env.tmp / "twin")


def _old_das(env, pos="middle()"):
    p = env.tmp / "old"
    p.mkdir()
    (p / "das.json").write_text(json.dumps({
        "format": "interp-das/1",
        "site": {"component": "resid_post", "layer": 1, "pos": pos, "head": None, "path": None, "io": "output"},
        "basis": {"kind": "LowRankRotation", "d_model": 32, "rank": 2}, "variables": ["G"], "splits": [2],
        "iia_train": None, "iia_test": None, "config": {}, "history": [], "fingerprint": env.lm.spec.fingerprint(),
    }))  # fmt: skip
    return DASResult.load(p, env.lm)


def _old_reft(env, positions="middle()"):
    p = env.tmp / "old"
    p.mkdir()
    (p / "config.json").write_text(json.dumps({
        "format": "reft-interventions/1", "model": env.lm.spec.fingerprint(), "tied": True, "dtype": "torch.float32",
        "interventions": [{"class": "LoReFT", "config": {"d_model": 32, "rank": 4}}],
        "placements": [{"site": {"component": "resid_post", "layer": 1, "head": None}, "positions": positions,
                        "part": None, "intervention": 0}],
        "head": None,
    }))  # fmt: skip
    return reft.load(p, env.lm)


def _checkpoints(env, holds, into=None):
    d = into or env.tmp / "ckpt"
    if into is None:
        d.mkdir()
    for name in holds:
        (d / name).mkdir()
    cfg = reft.TrainConfig(steps=4, checkpoint_every=2, checkpoint_dir=str(d), progress=False)
    return reft.train_reft(_rlm(env), [{"prompt_ids": [1, 4, 5], "response_ids": [7]}], cfg)



# ---- pyreft / pyvene checkpoints (reft.from_pyreft) ----------------------------------------------------------


def _pyreft(env, reps=None, d=32, name="theirs"):
    """A checkpoint in pyreft's layout (written by tests/test_from_pyreft.py's writer)."""
    from test_from_pyreft import write_pyreft

    reps = reps or [{"layer": 1, "component": "block_output", "kind": "LoreftIntervention", "rank": 4}]
    write_pyreft(env.tmp / name, reps, d=d)
    return env.tmp / name


_BIN = "intkey_layer_1_comp_block_output_unit_pos_nunit_1#0.bin"
_DAS_CLASS = "<class 'pyvene.models.interventions.LowRankRotatedSpaceIntervention'>"
_GPT2_CLASS = "<class 'transformers.models.gpt2.modeling_gpt2.GPT2LMHeadModel'>"


def from_pyreft(spoil=lambda p: p, **kw):
    """A row's call: write a pyreft checkpoint, spoil it with ``spoil(path)``, load it."""
    return lambda env: reft.from_pyreft(spoil(_pyreft(env)), env.lm, **kw)


def _pyreft_rep(field, value):
    def edit(config):
        from reft.pyreft import FIELDS

        config["representations"][0][FIELDS.index(field)] = value

    return lambda p: _config(p, edit)


def _bin(edit):
    """Spoil the intervention's state dict with ``edit(state)``."""

    def spoil(p):
        state = torch.load(p / _BIN, weights_only=True)
        edit(state)
        torch.save(state, p / _BIN)
        return p

    return spoil


def _pickled_code(p):
    from test_from_pyreft import Payload

    state = torch.load(p / _BIN, weights_only=True)
    torch.save({**state, "bias": Payload(p / "payload-ran")}, p / _BIN)
    return p


def _rotate(value):
    return _bin(lambda s: s.update(rotate_layer=value))


def _config_of_theirs(edit):
    return lambda p: _config(p, edit)

ROWS = [
    Bad("output dir is a file", lambda env: check_output_dir(_file(env)), NotADirectoryError, r"a-file' is a file"),
    Bad("output dir not empty", lambda env: check_output_dir(_full(env)), FileExistsError, r"a-run' already exists"),
    Bad(
        "output dir under a file",
        lambda env: check_output_dir(_file(env) / "sub"),
        NotADirectoryError,
        r"a-file' is a file",
    ),
    # ---- DAS results: loading an edited or damaged folder
    Bad("das config.json not JSON", load_das(lambda p: _text(p, '{"format": ')), FormatError,
        r"config\.json is not valid JSON \(Expecting value at line 1"),
    Bad("das config.json a list", load_das(lambda p: _text(p, "[1, 2]")), FormatError,
        r"config\.json holds a JSON list"),
    Bad("das unknown key", das_config(_set("colour", value="red")), FormatError,
        r"config\.json: unknown key 'colour' \(known: basis, config"),
    Bad("das missing key", das_config(_del("splits")), FormatError, r"config\.json: missing key 'splits'"),
    Bad("das wrong type", das_config(_set("basis", "rank", value="2")), FormatError,
        r"config\.json: basis\.rank is '2' \(a string\); expected an integer"),
    Bad("das iia wrong type", das_config(_set("iia_train", value="high")), FormatError,
        r"iia_train is 'high' \(a string\); expected a number or null"),
    Bad("das unknown basis kind", das_config(_set("basis", "kind", value="Spiral")), FormatError,
        r"unknown basis kind 'Spiral'; known: LowRankRotation"),
    Bad("das basis key of another kind", das_config(_set("basis", "temperature", value=2.0)), FormatError,
        r"basis: unknown key 'temperature'"),
    Bad("das rank edited", das_config(_set("basis", "rank", value=3)), FormatError,
        r"weights\.safetensors: tensor 'R' is torch\.float32 of shape \(2, 32\); expected .* shape \(3, 32\)"),
    Bad("das wrong shape tensor", load_das(lambda p: _tensors(p, lambda t: t.update(R=torch.zeros(2, 16)))),
        FormatError, r"tensor 'R' is torch\.float32 of shape \(2, 16\); expected a float tensor of shape \(2, 32\)"),
    Bad("das missing tensor", load_das(lambda p: _tensors(p, lambda t: t.pop("R"))), FormatError,
        r"weights\.safetensors does not match config\.json: missing tensors \['R'\]"),
    Bad("das stray tensor", load_das(lambda p: _tensors(p, lambda t: t.update(extra=torch.zeros(1)))), FormatError,
        r"unexpected tensors \['extra'\]"),
    Bad("das weights damaged", load_das(lambda p: _text(p, "not safetensors", "weights.safetensors")), FormatError,
        r"cannot read .*weights\.safetensors"),
    Bad("das weights missing", load_das(lambda p: (p / "weights.safetensors").unlink() or p), FileNotFoundError,
        r"weights\.safetensors is missing"),
    Bad("das unknown position kind", das_config(_pos({"kind": "middle"})), FormatError,
        r"config\.json: site: unknown position kind .middle.*known: first, last, at, span, token, generated, "
        r"recent, (all_tokens, )?sum"),
    Bad("das position field wrong type", das_config(_pos({"kind": "last", "n": "1"})), FormatError,
        r"last\.n is '1' \(a string\); expected an integer"),
    Bad("das position unknown field", das_config(_pos({"kind": "at", "i": 1, "j": 2})), FormatError,
        r"unknown field 'j'; at has the fields i"),
    Bad("das position missing field", das_config(_pos({"kind": "span", "start": 1})), FormatError,
        r"missing field 'stop'"),
    Bad("das position bad value", das_config(_pos({"kind": "first", "n": 0})), FormatError,
        r"config\.json: site: first\((0|n)\)"),
    Bad("das site layer edited", das_config(_set("site", "layer", value=7)), FormatError, r"site: .*layer 7"),
    Bad("das site key missing", das_config(_del("site", "io")), FormatError, r"site .* must have exactly the keys"),
    Bad("das unknown config key", das_config(_set("config", "stepz", value=3)), FormatError,
        r"config\.json: config: unknown DASConfig keys \['stepz'\]"),
    Bad("das bad config value", das_config(_set("config", "steps", value=0)), FormatError,
        r"config\.json: config: DASConfig\.steps"),
    Bad("das splits edited", das_config(_set("splits", value=[1, 1])), FormatError,
        r"2 row blocks for 1 variables \['G'\]"),
    Bad("das history ragged", das_config(lambda c: c["history"]["loss"].append(0.1)), FormatError,
        r"history: expected one list per field, all of the same length"),
    Bad("das unknown format", das_config(_set("format", value="interp/9")), FormatError,
        r"format: 'interp/9' is not a format this version reads"),
    Bad("das folder holds a reft", lambda env: DASResult.load(_reft(env), env.lm), FormatError,
        r"holds a ReFT, not a DAS result; load it with reft\.load\(path, lm\)"),
    Bad("das nothing there", lambda env: DASResult.load(env.tmp / "nowhere", env.lm), FileNotFoundError,
        r"no saved DAS result at '.*nowhere'"),
    Bad("das other architecture", lambda env: DASResult.load(_das(env), tiny_lm("gpt2")), FormatError,
        r"saved from a different model: architecture saved 'LlamaForCausalLM', this model 'GPT2LMHeadModel'"),
    Bad("das other shapes", lambda env: DASResult.load(_das(env), _llama(intermediate=48)), FormatError,
        r"other parameter shapes \(same architecture, d_model and n_layers; 24800 parameters saved, this model 21728"),
    Bad("das other weights", lambda env: DASResult.load(_das(env), _changed()), WeightsChangedWarning,
        r"same shapes but other weights \(weights hash saved [0-9a-f]{16}, this model [0-9a-f]{16}\)"),
    Bad("das load arguments swapped", lambda env: DASResult.load(env.lm, _das(env)), TypeError,
        r"DASResult\.load\(path, lm\): the folder comes first"),
    # ---- DAS results: values, sizes and the binding of config and weights (issue 22)
    Bad("das weights from another save", _mixed(_das, DASResult.load),
        FormatError, r"mine/weights\.safetensors does not match config\.json: its SHA-256 is [0-9a-f]{16}\.\.\., the "
        r"config records [0-9a-f]{16}\.\.\.: the weights file comes from another save"),
    Bad("das hash not hex", das_config(_set("weights_sha256", value="abc")), FormatError,
        r"config\.json: weights_sha256: 'abc' \(a string\); expected the 64 hex digits of a SHA-256"),
    Bad("das NaN in R", load_das(lambda p: _tensors(p, lambda t: t["R"].__setitem__((0, 0), float("nan")))),
        FormatError, r"weights\.safetensors: tensor 'R' holds 1 non-finite value\(s\) \(NaN or inf\) of 64"),
    Bad("das inf in R", load_das(lambda p: _tensors(p, lambda t: t["R"].__setitem__((1, 3), float("inf")))),
        FormatError, r"tensor 'R' holds 1 non-finite value"),
    Bad("das all-zero R", load_das(lambda p: _tensors(p, lambda t: t["R"].zero_())), FormatError,
        r"weights\.safetensors: tensor 'R': the rows are not orthonormal \(all zero\) "
        r"\(max \|R R\^T - I\| = 1 > 0\.001\)"),
    Bad("das R far from orthonormal", load_das(lambda p: _tensors(p, lambda t: t["R"].mul_(1000))), FormatError,
        r"tensor 'R': the rows are not orthonormal \(max \|R R\^T - I\| = 1e\+06 > 0\.001\)"),
    Bad("das R slightly off", load_das(lambda p: _tensors(p, lambda t: t["R"].mul_(1.01))), FormatError,
        r"tensor 'R': the rows are not orthonormal \(max \|R R\^T - I\| = 0\.0201 > 0\.001\)"),
    Bad("das R stored as int", load_das(lambda p: _tensors(p, lambda t: t.update(R=t["R"].long()))), FormatError,
        r"tensor 'R' is torch\.int64 of shape \(2, 32\); expected a float tensor"),
    Bad("das width 12000", load_das(_wide_das(12000)), FormatError,
        r"config\.json: basis\.d_model: 12000, but Site\('resid_post', 1, last\(\)\) of this model has width 32"),
    Bad("das rank beyond width", das_config(_set("basis", "rank", value=10**6)), FormatError,
        r"config\.json: basis\.rank is 1000000; expected 1\.\.32"),
    Bad("das header length hostile", load_das(_header_claims(2**40)), FormatError,
        r"weights\.safetensors: its header claims 1099511627776 bytes \(the file has \d+; at most 16777216\)"),
    Bad("das config nested deeply", load_das(_nested(100_000)), FormatError,
        r"config\.json nests JSON lists or objects deeper than Python's recursion limit"),
    Bad("das config 5000-digit integer", load_das(_digits("iia_train")), FormatError,
        r"config\.json holds a value JSON cannot be read into \(Exceeds the limit \(4300 digits\)"),
    Bad("das config is a pipe", load_das(lambda p: ((p / "config.json").unlink(), os.mkfifo(p / "config.json"), p)[2]),
        FormatError, r"config\.json is a named pipe \(FIFO\), not a regular file"),
    Bad("das weights are a folder", load_das(lambda p: ((p / "weights.safetensors").unlink(),
                                                        (p / "weights.safetensors").mkdir(), p)[2]),
        FormatError, r"weights\.safetensors is a folder, not a regular file"),
    Bad("das old layout unreadable position", _old_das, FormatError,
        r"cannot read positions 'middle\(\)': part .* not a position"),
    # ---- DAS results: saves refused before anything is written
    Bad("das save over a result", lambda env: _das_result(env).save(_das(env)), FileExistsError,
        r"'.*das' already exists and is not empty; pass overwrite=True"),
    Bad("das save into a file", lambda env: _das_result(env).save(_file(env)), NotADirectoryError,
        r"a-file' is a file"),
    Bad("das overwrite other files", lambda env: _das_result(env).save(_full(env), overwrite=True), FileExistsError,
        r"a-run' holds files that are not a saved result \(kept\.txt\)"),
    Bad("das save unrestorable position", lambda env: _das_result(env, pos=first(1) + _Middle()).save(env.tmp / "d"),
        FormatError, r"cannot save position middle\(\): _Middle is not one of interp\.positions' kinds"),
    Bad("das save unknown basis class", lambda env: _das_result(env, basis=_RowBasis(32, 2)).save(env.tmp / "d"),
        FormatError, r"cannot save a DAS result with a _RowBasis basis"),
    Bad("das save without a model", lambda env: _das_result(env, lm=None).save(env.tmp / "d"), FormatError,
        r"no model fingerprint"),
    # ---- ReFTs: loading an edited or damaged folder
    Bad("reft config.json not JSON", load_reft(lambda p: _text(p, "{'single': 'quotes'}")), FormatError,
        r"config\.json is not valid JSON \(Expecting property name"),
    Bad("reft unknown key", reft_config(_set("colour", value="red")), FormatError, r"unknown key 'colour'"),
    Bad("reft missing key", reft_config(_del("tied")), FormatError, r"config\.json: missing key 'tied'"),
    Bad("reft wrong type", reft_config(_set("tied", value="yes")), FormatError,
        r"tied is 'yes' \(a string\); expected true or false"),
    Bad("reft wrong shape tensor", load_reft(lambda p: _tensors(p, lambda t: t.update({"0.W.weight": torch.ones(3)}))),
        FormatError, r"tensor '0\.W\.weight' is torch\.float32 of shape \(3,\); expected .* \(4, 32\)"),
    Bad("reft basis R missing", load_reft(lambda p: _tensors(p, lambda t: t.pop("0.R.proj.weight"))), FormatError,
        r"missing tensors \['0\.R\.proj\.weight'\]"),
    Bad("reft stray tensor", load_reft(lambda p: _tensors(p, lambda t: t.update({"0.extra": torch.zeros(2)}))),
        FormatError, r"unexpected tensors \['0\.extra'\]"),
    Bad("reft unknown position kind", reft_config(_pos({"kind": "middle"}, reft=True)), FormatError,
        r"placements\[0\]\.site: unknown position kind 'middle'"),
    Bad("reft unknown intervention class", reft_config(_set("interventions", 0, "class", value="FancyReFT")),
        FormatError, r"interventions\[0\]: unknown intervention class 'FancyReFT'; import the module"),
    Bad("reft intervention option unknown", reft_config(_set("interventions", 0, "config", "colour", value=1)),
        FormatError, r"interventions\[0\]: .*colour"),
    Bad("reft intervention rank wrong type", reft_config(_set("interventions", 0, "config", "rank", value="4")),
        FormatError, r"interventions\[0\]\.config\.rank is '4' \(a string\)"),
    Bad("reft intervention rank edited", reft_config(_set("interventions", 0, "config", "rank", value=99)),
        FormatError, r"interventions\[0\]\.config\.rank is 99; expected 1\.\.32"),
    Bad("reft placement intervention missing", reft_config(_set("placements", 0, "intervention", value=5)),
        FormatError, r"placements\[0\]: intervention 5 does not exist \(the file has 1\)"),
    Bad("reft placement part missing", reft_config(_set("placements", 0, "part", value=7)), FormatError,
        r"placements\[0\]: part 7 does not exist: first\(1\)\+last\(\) has 2 part\(s\)"),
    Bad("reft placement layer edited", reft_config(_set("placements", 0, "site", "layer", value=9)), FormatError,
        r"placements\[0\]\.site: .*layer 9"),
    Bad("reft head wrong type", reft_config(_set("head", value={"d_model": 32, "n_labels": "two"})), FormatError,
        r"head\.n_labels is 'two' \(a string\); expected an integer"),
    Bad("reft unknown format", reft_config(_set("format", value="reft-interventions/0")), FormatError,
        r"'reft-interventions/0' is not a format this version reads \('interp/2', or the previous"),
    Bad("reft folder holds a das", lambda env: reft.load(_das(env), env.lm), FormatError,
        r"holds a DAS result, not a ReFT; load it with DASResult\.load\(path, lm\)"),
    Bad("reft nothing there", lambda env: reft.load(env.tmp / "nowhere", env.lm), FileNotFoundError,
        r"no ReFT run at '.*nowhere'"),
    Bad("reft other architecture", lambda env: reft.load(_reft(env), tiny_lm("gpt2")), FormatError,
        r"different model: architecture saved 'LlamaForCausalLM', this model 'GPT2LMHeadModel'"),
    Bad("reft other n_layers", lambda env: reft.load(_reft(env), _llama(layers=3)), FormatError,
        r"n_layers saved 2, this model 3"),
    Bad("reft other shapes", lambda env: reft.load(_reft(env), _llama(intermediate=48)), FormatError,
        r"other parameter shapes"),
    Bad("reft other weights", lambda env: reft.load(_reft(env), _changed()), WeightsChangedWarning,
        r"the ReFT in '.*run' was saved from a model with the same shapes but other weights"),
    Bad("reft load old argument order", lambda env: reft.load(env.lm, _reft(env)), TypeError,
        r"reft\.load\(path, lm\): the folder comes first, then the model .*call reft\.load\('.*run', lm\)"),
    # ---- ReFTs: values, sizes and the binding of config and weights (issue 22)
    Bad("reft weights from another save", _mixed(_reft, reft.load),
        FormatError, r"mine/weights\.safetensors does not match config\.json: its SHA-256 .*another save"),
    Bad("reft NaN W", load_reft(lambda p: _tensors(p, lambda t: t["0.W.weight"].__setitem__((0, 0), float("nan")))),
        FormatError, r"weights\.safetensors: tensor '0\.W\.weight' holds 1 non-finite value"),
    Bad("reft all-zero R", load_reft(lambda p: _tensors(p, lambda t: t["0.R.proj.weight"].zero_())), FormatError,
        r"weights\.safetensors: intervention 0: R\.proj\.weight: the rows are not orthonormal \(all zero\)"),
    Bad("reft R far from orthonormal", load_reft(lambda p: _tensors(p, lambda t: t["0.R.proj.weight"].mul_(1000))),
        FormatError, r"intervention 0: R\.proj\.weight: the rows are not orthonormal \(max \|R R\^T - I\| = 1e\+06"),
    Bad("reft width 24576", reft_config(_set("interventions", 0, "config", "d_model", value=24576)), FormatError,
        r"interventions\[0\]\.config\.d_model: 24576, but the intervention is placed at Site\('resid_post', 1, "
        r"first\(1\)\+last\(\)\), of width 32 in this model"),
    Bad("reft head of a billion labels", reft_config(_set("head", value={"d_model": 32, "n_labels": 10**9})),
        FormatError, r"config\.json: head\.n_labels is 1000000000; expected 2\.\.97"),
    Bad("reft intervention placed nowhere",
        reft_config(lambda c: c["interventions"].append(c["interventions"][0])), FormatError,
        r"config\.json: interventions\[1\]: is placed at no site; the file was edited"),
    Bad("reft config 5000-digit integer", load_reft(_digits("rank")),
        FormatError, r"config\.json holds a value JSON cannot be read into"),
    Bad("reft old layout unreadable position", _old_reft, FormatError,
        r"cannot read positions 'middle\(\)': part .* not a position"),
    # ---- ReFTs: saves refused before anything is written
    Bad("reft save over a result", lambda env: reft.save(_rlm(env), _reft(env)), FileExistsError,
        r"ReFT folder '.*run' already exists and is not empty; pass overwrite=True"),
    Bad("reft save into a file", lambda env: reft.save(_rlm(env), _file(env)), NotADirectoryError,
        r"a-file' is a file"),
    Bad("reft overwrite other files", lambda env: reft.save(_rlm(env), _full(env), overwrite=True), FileExistsError,
        r"kept\.txt"),
    Bad("reft save unrestorable position", lambda env: reft.save(_rlm(env, pos=_Middle()), env.tmp / "r"),
        FormatError, r"cannot save position middle\(\)"),
    Bad("reft save shadowed class", _shadowed, FormatError,
        r"cannot save a _twin\.<locals>\._RowTwin: .*another class named '_RowTwin'"),
    Bad("reft save config that does not rebuild",
        lambda env: reft.save(_rlm(env, iv=_RowUnbuildable(32, 2, 0.5)), env.tmp / "r"), FormatError,
        r"cannot save a _RowUnbuildable: its config\(\) \{'d_model': 32, 'rank': 2\} does not rebuild it"),
    # ---- training checkpoints
    Bad("checkpoints of an earlier run", lambda env: _checkpoints(env, ["step-2", "step-4", "notes"]), FileExistsError,
        r"checkpoint folder '.*ckpt' already holds step-2/, step-4/ from an earlier run"),
    Bad("checkpoint dir is a file", lambda env: _checkpoints(env, [], into=_file(env, "ckpt")), NotADirectoryError,
        r"checkpoint folder '.*ckpt' is a file"),
    # ---- pyreft / pyvene checkpoints
    Bad("pyreft no checkpoint", lambda env: reft.from_pyreft(env.tmp / "nothing", env.lm), FileNotFoundError,
        r"no pyreft checkpoint at '.*nothing': expected a folder with config\.json and one intkey_<key>\.bin"),
    Bad("pyreft our own format", lambda env: reft.from_pyreft(_reft(env), env.lm), FormatError,
        r"this package's format \('interp/2'\), not pyreft's; load it with reft\.load\(path, lm\)"),
    Bad("pyreft pickled code", from_pyreft(_pickled_code), FormatError,
        r"intkey_layer_1_.*refused: it holds pickled objects other than tensors .*weights_only=True"),
    Bad("pyreft damaged bin", from_pyreft(lambda p: _text(p, "not a torch file", _BIN)), FormatError,
        r"cannot read .*intkey_layer_1_.*damaged or not a state dict"),
    Bad("pyreft truncated bin", from_pyreft(lambda p: (p / _BIN).write_bytes((p / _BIN).read_bytes()[:300]) and p),
        FormatError, r"cannot read .*intkey_layer_1_.*RuntimeError: PytorchStreamReader failed"),
    Bad("pyreft bin not a state dict", from_pyreft(lambda p: torch.save([1, 2], p / _BIN) or p), FormatError,
        r"intkey_layer_1_.* holds a list, not a state dict of named tensors"),
    Bad("pyreft unknown intervention class",
        from_pyreft(_config_of_theirs(_set("intervention_types", 0, value=_DAS_CLASS))), FormatError,
        r"intervention_types\[0\]: .*LowRankRotatedSpaceIntervention.* is not one of pyreft's interventions "
        r"that from_pyreft maps \(LoreftIntervention, "),
    Bad("pyreft unsupported component", from_pyreft(_pyreft_rep("component", "mlp_activation")), FormatError,
        r"representations\[0\]: component 'mlp_activation' is not supported; "
        r"supported: block_output \(resid_post\)"),
    Bad("pyreft head unit", from_pyreft(_pyreft_rep("unit", "h.pos")), FormatError, r"unit 'h\.pos' is not supported"),
    Bad("pyreft layer out of range", from_pyreft(_pyreft_rep("layer", 7)), FormatError,
        r"layer 7 does not exist: LlamaForCausalLM has 2 layers \(0\.\.1\)"),
    Bad("pyreft peft module path", from_pyreft(_pyreft_rep("component", "base_model.model.model.layers[1].output")),
        FormatError, r"no module 'base_model\.model\.model\.layers\.1' in LlamaForCausalLM \(a "
        r"PEFT-wrapped model's path: pyreft with LoRA"),
    Bad("pyreft other model class", from_pyreft(_config_of_theirs(_set("model_type", value=_GPT2_CLASS))),
        FormatError, r"model_type: the checkpoint was trained on a GPT2LMHeadModel, but this model is a "
        r"LlamaForCausalLM"),
    Bad("pyreft other d_model",
        lambda env: reft.from_pyreft(_config(_pyreft(env, d=64), _del("intervention_dimensions")), env.lm),
        FormatError, r"tensor 'weight' is torch\.float32 of shape \(4, 64\); expected a float tensor of shape "
        r"\(4, 32\) \(d_model=32, rank=4\)"),
    Bad("pyreft other intervention_dimensions", lambda env: reft.from_pyreft(_pyreft(env, d=64), env.lm), FormatError,
        r"intervention_dimensions 64, but Site\('resid_post', 1, last\(\)\) of this model has width 32"),
    Bad("pyreft rank edited", from_pyreft(_pyreft_rep("low_rank_dimension", 3)), FormatError,
        r"tensor 'weight' .* shape \(4, 32\); expected .* \(3, 32\)"),
    Bad("pyreft stray tensor", from_pyreft(_bin(lambda s: s.update(extra=torch.zeros(1)))), FormatError,
        r"intkey_layer_1_.*: unexpected \['extra'\] for a LoreftIntervention"),
    Bad("pyreft missing tensor", from_pyreft(_bin(lambda s: s.pop("bias"))), FormatError,
        r"intkey_layer_1_.*: missing \['bias'\] for a LoreftIntervention"),
    Bad("pyreft not orthonormal", from_pyreft(_rotate(torch.ones(32, 4))), FormatError,
        r"rotate_layer columns are not orthonormal"),
    Bad("pyreft all-zero rotation", from_pyreft(_rotate(torch.zeros(32, 4))), FormatError,
        r"rotate_layer columns are not orthonormal \(max \|Rw\^T Rw - I\| = 1\)"),
    Bad("pyreft rotation far from orthonormal", from_pyreft(_rotate(1000 * torch.linalg.qr(torch.randn(32, 4)).Q)),
        FormatError, r"rotate_layer columns are not orthonormal \(max \|Rw\^T Rw - I\| = 1e\+06\)"),
    Bad("pyreft NaN weight", from_pyreft(_bin(lambda s: s["weight"].__setitem__((0, 0), float("nan")))), FormatError,
        r"intkey_layer_1_.*\.bin: tensor 'weight' holds 1 non-finite value\(s\) \(NaN or inf\)"),
    Bad("pyreft inf rotation", from_pyreft(_bin(lambda s: s["rotate_layer"].__setitem__((0, 0), float("inf")))),
        FormatError, r"intkey_layer_1_.*\.bin: tensor 'rotate_layer' holds 1 non-finite value"),
    Bad("pyreft bin is a pipe", from_pyreft(lambda p: ((p / _BIN).unlink(), os.mkfifo(p / _BIN), p)[2]), FormatError,
        r"intkey_layer_1_comp_block_output_unit_pos_nunit_1#0\.bin is a named pipe \(FIFO\), not a regular file"),
    Bad("pyreft missing file", from_pyreft(lambda p: (p / _BIN).unlink() or p), FileNotFoundError,
        r"intkey_layer_1_comp_block_output_unit_pos_nunit_1#0\.bin is missing"),
    Bad("pyreft stray file", from_pyreft(lambda p: _text(p, "x", _BIN.replace("layer_1", "layer_0"))), FormatError,
        r"names no intervention for .*intkey_layer_0_.*remove files left from another save"),
    Bad("pyreft model weights included", from_pyreft(lambda p: _text(p, "x", "pytorch_model.bin")), FormatError,
        r"pytorch_model\.bin: the checkpoint also changes the model's own weights \(saved with include_model=True"),
    Bad("pyreft unknown config key", from_pyreft(_config_of_theirs(_set("colour", value="red"))), FormatError,
        r"config\.json: unknown key 'colour'"),
    Bad("pyreft sorted_keys edited", from_pyreft(_config_of_theirs(_set("sorted_keys", 0, value="layer_9#0"))),
        FormatError, r"sorted_keys: \['layer_9#0'\] do not match the keys of the representations"),
    Bad("pyreft types count", from_pyreft(_config_of_theirs(_set("intervention_types", value=[]))), FormatError,
        r"intervention_types: has 0 entries for 1 representations"),
    Bad("pyreft positions as a string", from_pyreft(positions="f1+l1"), reft.ReftError,
        r"from_pyreft\(positions='f1\+l1'\): expected a typed position .*reft\.parse_positions\('f1\+l1'\)"),
    Bad("pyreft positions parts",
        lambda env: reft.from_pyreft(_pyreft(env, [{"layer": 1, "component": "block_output",
                                                    "kind": "LoreftIntervention", "rank": 4}] * 2), env.lm,
                                     positions=last(1)),
        reft.ReftError, r"Site\('resid_post', 1, last\(\)\) has 2 interventions \(.*#0, .*#1\) but positions=last\(\) "
        r"has 1 part\(s\)"),
]  # fmt: skip
