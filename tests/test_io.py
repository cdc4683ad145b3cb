"""interp.io: saves are all or nothing, every position kind round-trips, loads are strict and check the model.

Refusals of bad files and bad saves (one row each) are in tests/bad_inputs_io.py.
"""

from __future__ import annotations

import itertools
import json
import os
import warnings

import pytest
import torch
import transformers as tf
from conftest import tiny_lm
from safetensors.torch import save_file

import interp
import interp.io
import reft
from interp import Boundless, Coordinate, LowRankRotation, Rotation, Site, at, first, interchange, last, span, token
from interp import positions as _positions
from interp.das import DASConfig, DASResult
from interp.io import FormatError, WeightsChangedWarning, position_from_json, position_to_json
from reft.model import serve_logits

WORDS = ["[PAD]", "[UNK]", "<s>", "</s>", "When", "Mary", "and", "John", "went", "to", "the", "store", "gave", "a",
         "drink", "you", "thank", "said", "then", "home"]  # fmt: skip


def word_lm() -> interp.LM:
    """The tiny random Llama (vocabulary 97) with a word-level tokenizer, so that ``token(" Mary")`` resolves."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = tf.PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="[PAD]", unk_token="[UNK]"
    )
    lm = tiny_lm("llama")
    return interp.LM(lm.hf, tok)


def das_result(lm, basis=None, pos=None, seed=0) -> DASResult:
    """A DAS result with a random basis (no fitting needed to test files)."""
    torch.manual_seed(seed)
    basis = basis if basis is not None else LowRankRotation(lm.d_model, 2)
    history = [{"step": 1, "loss": 0.7, "lr": 1e-3}, {"step": 2, "loss": 0.6, "lr": 2e-3, "val_iia": 0.5}]
    return DASResult(
        site=Site("resid_post", 1, pos if pos is not None else last()),
        basis=basis,
        variables=("G",),
        splits=(basis.rank,),
        history=history,
        iia_train=0.75,
        iia_test=None,
        config=DASConfig(steps=2),
        fingerprint=interp.io.fingerprint(lm),
        lm=lm,
    )


def reft_model(lm, pos=None, seed=0) -> reft.ReftModel:
    torch.manual_seed(seed)
    iv = reft.LoReFT(lm.d_model, rank=4)
    with torch.no_grad():
        for name, p in iv.named_parameters():
            if "original" not in name:
                p.add_(0.5 * torch.randn(p.shape))  # away from init, so the edit is visible
    pos = pos if pos is not None else first(1) + last()
    return reft.attach(lm, {Site("resid_post", 0, pos): iv}, tied=False)


def snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class Faults:
    """Counts the steps a save takes (each file written, the commit) and makes step ``fail_at`` raise."""

    def __init__(self, monkeypatch, fail_at: int):
        self.steps, self.fail_at, self.hit = 0, fail_at, False
        steps = ((interp.io.files, "write_bytes"), (interp.io.snapshot, "write_bytes"), (interp.io.commit, "renameat2"))
        for owner, name in steps:
            monkeypatch.setattr(owner, name, self.step(getattr(owner, name)))

    def step(self, fn):
        def wrapped(*args, **kwargs):
            self.steps += 1
            if self.steps == self.fail_at:
                self.hit = True
                raise OSError(f"injected fault at step {self.steps}")
            return fn(*args, **kwargs)

        return wrapped


SIBLINGS = ("exp.tmp", "exp.old", ".exp.keep", "exp.1")  # unrelated folders next to the target, never touched


def _siblings(root):
    for name in SIBLINGS:
        (root / name).mkdir()
        (root / name / "mine.txt").write_text(f"earlier work in {name}")


def _save(kind, obj, path, overwrite=False):
    return obj.save(path, overwrite=overwrite) if kind == "das" else reft.save(obj, path, overwrite=overwrite)


def _load(kind, path, lm):
    return DASResult.load(path, lm) if kind == "das" else reft.load(path, lm)


def _weights(kind, obj) -> torch.Tensor:
    return obj.basis.weight if kind == "das" else obj.interventions[0].W.weight


@pytest.mark.parametrize("kind", ["das", "reft"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_failed_save_leaves_the_old_result_or_nothing(kind, overwrite, tmp_path, monkeypatch):
    """Each write step in turn fails: the target holds the complete old result (or nothing), never a mix; no
    temporary folder is left and unrelated siblings (``exp.tmp``, ``exp.<anything>``) are untouched."""
    lm = tiny_lm("llama")
    make = das_result if kind == "das" else reft_model
    old, new = make(lm, seed=0), make(lm, seed=1)
    for k in itertools.count(1):
        root = tmp_path / f"run-{k}"
        root.mkdir()
        _siblings(root)
        target = root / "exp"
        if overwrite:
            _save(kind, old, target)
        before, siblings = snapshot(target) if overwrite else None, {n: snapshot(root / n) for n in SIBLINGS}
        with monkeypatch.context() as m:
            faults = Faults(m, k)
            try:
                _save(kind, new, target, overwrite=overwrite)
            except OSError as e:
                assert "injected" in str(e)
        assert sorted(os.listdir(root)) == sorted([*SIBLINGS, *(["exp"] if target.exists() else [])])
        assert {n: snapshot(root / n) for n in SIBLINGS} == siblings
        if not faults.hit:  # every step has failed once; now the save went through
            assert k - 1 == 3  # config.json, weights.safetensors, the commit (one renameat2)
            assert torch.equal(_weights(kind, _load(kind, target, lm)).cpu(), _weights(kind, new).detach().cpu())
            break
        if overwrite:
            assert snapshot(target) == before  # the complete old result
            assert torch.equal(_weights(kind, _load(kind, target, lm)).cpu(), _weights(kind, old).detach().cpu())
        else:
            assert not target.exists()


def test_a_failed_checkpoint_leaves_the_earlier_ones_complete(tmp_path, monkeypatch):
    lm = tiny_lm("llama")
    examples = [{"prompt_ids": [1, 4, 5], "response_ids": [7]}, {"prompt_ids": [1, 8], "response_ids": [9]}]
    for k in itertools.count(1):
        ckpt = tmp_path / f"ckpt-{k}"
        ckpt.mkdir()
        _siblings(ckpt)
        (ckpt / "step-2.tmp").mkdir()  # not a step-N folder of an earlier run: allowed, and untouched
        (ckpt / "step-2.tmp" / "mine.txt").write_text("mine")
        rlm = reft_model(lm)
        cfg = reft.TrainConfig(steps=2, batch_size=2, checkpoint_every=1, checkpoint_dir=str(ckpt), progress=False)
        with monkeypatch.context() as m:
            faults = Faults(m, k)
            try:
                reft.train_reft(rlm, examples, cfg)
            except OSError as e:
                assert "injected" in str(e)
        failed = (k - 1) // 3 + 1 if faults.hit else None  # the checkpoint being written: 3 steps each
        done = [f"step-{i}" for i in range(1, (failed or 3))]
        assert sorted(os.listdir(ckpt)) == sorted([*SIBLINGS, "step-2.tmp", *done])
        assert (ckpt / "step-2.tmp" / "mine.txt").read_text() == "mine"
        for name in done:
            reft.load(ckpt / name, lm)  # each one complete
        if not faults.hit:
            assert k == 7  # 2 checkpoints of 3 steps each, each step failed once
            break


def test_checkpoints_of_an_earlier_run_are_refused_before_training(tmp_path):
    lm = tiny_lm("llama")
    rlm = reft_model(lm)
    (tmp_path / "ckpt" / "step-5").mkdir(parents=True)
    before = [p.detach().clone() for p in rlm.trainable_parameters()]
    cfg = reft.TrainConfig(steps=2, checkpoint_every=1, checkpoint_dir=str(tmp_path / "ckpt"), progress=False)
    with pytest.raises(FileExistsError, match=r"already holds step-5/"):
        reft.train_reft(rlm, [{"prompt_ids": [1, 4], "response_ids": [7]}], cfg)
    assert all(torch.equal(a, b) for a, b in zip(before, rlm.trainable_parameters()))  # no step was taken


def test_overwrite_replaces_only_a_saved_result(tmp_path):
    lm = tiny_lm("llama")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"todo\.txt"):
        reft.save(reft_model(lm), tmp_path / "notes", overwrite=True)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    reft.save(reft_model(lm), tmp_path / "empty")  # an empty folder is fine
    reft.save(reft_model(lm), tmp_path / "a" / "b" / "c")  # parents are created
    assert sorted(p.name for p in (tmp_path / "a" / "b" / "c").iterdir()) == ["config.json", "weights.safetensors"]


def test_a_failed_save_removes_the_parent_folders_it_made(tmp_path, monkeypatch):
    lm = tiny_lm("llama")
    with monkeypatch.context() as m:
        Faults(m, 2)
        with pytest.raises(OSError, match="injected"):
            reft.save(reft_model(lm), tmp_path / "a" / "b" / "run")
    assert list(tmp_path.iterdir()) == []


def test_saving_and_loading_leave_the_random_state_alone(tmp_path):
    lm = tiny_lm("llama")
    rlm, das = reft_model(lm), das_result(lm, Rotation(32))
    state = torch.get_rng_state()
    reft.load(reft.save(rlm, tmp_path / "r"), lm)
    DASResult.load(das.save(tmp_path / "d"), lm)
    assert torch.equal(torch.get_rng_state(), state)


# ---- positions -------------------------------------------------------------------------------------------

POSITIONS = [first(2), last(), last(3), at(-2), at(0), span(1, 4), span(-3, -1), token(" Mary"),
             token(" Mary", occurrence=-1), token("say it, you"), first(1) + last(1), token(" you") + last(),
             at(0) + span(2, 3) + token("x", 1)]  # fmt: skip


@pytest.mark.parametrize("pos", POSITIONS, ids=repr)
def test_every_position_kind_round_trips_through_json(pos):
    data = json.loads(json.dumps(position_to_json(pos)))
    again = position_from_json(data)
    assert again == pos and type(again) is type(pos) and repr(again) == repr(pos)
    assert [type(p) for p in again.parts] == [type(p) for p in pos.parts]


def test_every_position_class_of_interp_positions_can_be_saved():
    kinds = [c for c in vars(_positions).values() if isinstance(c, type) and issubclass(c, _positions.Position)]
    for cls in kinds:
        if cls is not _positions.Position:
            assert cls is _positions.Concat or cls in interp.io.positions.KIND_OF, f"{cls.__name__} cannot be saved"


class Middle(_positions.Position):
    """A user-defined position: fine to run, impossible to restore from a file."""

    def indices(self, n, ids, tokenizer):
        return [n // 2]

    def __repr__(self):
        return "Middle()"


class Last2(type(last())):
    """A subclass of a known kind: its own behaviour would be lost, so it is refused too."""


@pytest.mark.parametrize("pos", [Middle(), first(1) + Middle(), Last2(1)], ids=repr)
@pytest.mark.parametrize("kind", ["das", "reft"])
def test_a_position_a_file_cannot_restore_is_refused_before_writing(kind, pos, tmp_path):
    lm = tiny_lm("llama")
    obj = das_result(lm, pos=pos) if kind == "das" else reft_model(lm, pos=pos)
    with pytest.raises(FormatError, match=r"cannot save position"):
        _save(kind, obj, tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


# ---- reloads are identical --------------------------------------------------------------------------------


def test_a_rank_1_das_result_at_gemma_width_is_small(tmp_path):
    """R is stored as its rank x d rows (before: the (d, d) orthogonal parametrisation, 1.66 MB at d = 640),
    the history as one list per field: under 50 KB even with 800 steps of history."""
    basis = LowRankRotation(640, 1)
    g = torch.Generator().manual_seed(0)
    rand = lambda: torch.rand(1, generator=g).item()  # noqa: E731
    history = [{"step": i + 1, "loss": rand(), "lr": 1e-3 * rand()} for i in range(800)]
    for h in history[24::25]:
        h["val_iia"] = rand()
    model = {"architecture": "Gemma3ForCausalLM", "d_model": 640, "n_layers": 18, "parameters": 268098176,
             "shapes": "0" * 16, "weights": "0" * 16}  # fmt: skip
    das = DASResult(Site("resid_post", 6, token(" Mary") + last()), basis, ("G",), (1,), history, 0.9, 0.8,
                    DASConfig(steps=800), model)  # fmt: skip
    path = das.save(tmp_path / "rank1")
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size < 50_000, size
    assert (path / "weights.safetensors").stat().st_size < 640 * 4 + 200


BASES = {
    "LowRankRotation": lambda: LowRankRotation(32, 1),
    "Rotation": lambda: Rotation(32),
    "Boundless": lambda: Boundless(32, init_fraction=0.3, temperature=2.0),
    "Coordinate": lambda: Coordinate(32, [3, 1]),
}


@pytest.mark.parametrize("basis", BASES)
def test_a_das_result_reloads_to_identical_outputs(basis, tmp_path):
    lm = word_lm()
    das = das_result(lm, BASES[basis](), pos=token(" Mary") + last())
    path = das.save(tmp_path / "das")
    again = DASResult.load(path, lm)
    assert torch.equal(again.rotation, das.rotation)
    assert again.site == das.site and again.history == das.history and again.config == das.config
    assert (again.variables, again.splits, again.iia_train, again.iia_test) == (("G",), das.splits, 0.75, None)
    base, source = ["When Mary and John went to the store John gave a drink to"], ["then Mary said thank you"]
    a = interchange(lm, base, source, at=das.site, via=das.basis).logits
    b = interchange(lm, base, source, at=again.site, via=again.basis).logits
    assert torch.equal(a, b)
    if isinstance(das.basis, Boundless):
        assert again.basis.temperature == das.basis.temperature
        assert torch.equal(again.basis.mask(), das.basis.mask())


def _mary_batch(lm):
    from reft.data import collate, tokenize

    examples = reft.as_examples([
        {"prompt": "When Mary and John went to the store John gave a drink to", "response": " Mary"},
        {"prompt": "then John said thank you to Mary and went", "response": " home"},
    ])  # fmt: skip
    return collate(lm, tokenize(lm, examples))


def test_a_reft_at_a_token_position_reloads_to_identical_outputs(tmp_path):
    lm = word_lm()
    rlm = reft_model(lm, pos=token(" Mary") + last())
    path = reft.save(rlm, tmp_path / "mary")
    again = reft.load(path, lm)
    assert again.placements[0].site.pos == token(" Mary") + last()
    assert [pl.part for pl in again.placements] == [0, 1]
    rb = _mary_batch(lm)
    with torch.no_grad():
        edited, reloaded, plain = rlm.logits(rb), again.logits(rb), serve_logits(lm, rb, [None] * len(rb))
    assert torch.equal(edited, reloaded)
    assert not torch.allclose(edited, plain, atol=1e-3)  # the edit at the token position matters


# ---- files of the previous layouts --------------------------------------------------------------------------


def test_a_das_folder_of_the_previous_layout_loads(tmp_path):
    """``das.json`` (``interp-das/1``, the position as its repr) and the basis's whole state dict, as the previous
    version wrote them."""
    lm = word_lm()
    das = das_result(lm, LowRankRotation(32, 2), pos=token(" Mary", occurrence=-1) + last())
    path = tmp_path / "old"
    path.mkdir()
    tensors = {k: v.detach().contiguous() for k, v in das.basis.state_dict().items()}
    save_file({**tensors, "weight": das.basis.weight.detach().contiguous()}, str(path / "basis.safetensors"))
    meta = {
        "format": "interp-das/1",
        "site": {"component": "resid_post", "layer": 1, "pos": repr(das.site.pos), "head": None, "path": None,
                 "io": "output"},
        "basis": {"kind": "LowRankRotation", "d_model": 32, "rank": 2},
        "variables": ["G"],
        "splits": [2],
        "iia_train": 0.75,
        "iia_test": None,
        "config": das.config.to_dict(),
        "history": das.history,
        "fingerprint": lm.spec.fingerprint(),
    }  # fmt: skip
    (path / "das.json").write_text(json.dumps(meta, indent=1))
    again = DASResult.load(path, lm)
    assert torch.equal(again.rotation, das.rotation) and again.site == das.site and again.history == das.history
    again.save(tmp_path / "new")  # saving again converts it
    assert json.loads((tmp_path / "new" / "config.json").read_text())["format"] == "interp/2"
    assert torch.equal(DASResult.load(tmp_path / "new", lm).rotation, das.rotation)


def test_a_reft_folder_of_the_previous_layout_loads(tmp_path):
    """``reft-interventions/1``: positions as their repr (which that version could not read back for token()),
    sites in short form; the weights were already stored compactly."""
    lm = word_lm()
    rlm = reft_model(lm, pos=token(" Mary") + last())
    path = tmp_path / "old"
    path.mkdir()
    reft.save(rlm, tmp_path / "new")
    (tmp_path / "new" / "weights.safetensors").rename(path / "weights.safetensors")
    config = {
        "format": "reft-interventions/1",
        "model": lm.spec.fingerprint(),
        "tied": False,
        "dtype": "torch.float32",
        "interventions": [{"class": "LoReFT", "config": {"d_model": 32, "rank": 4}}] * 2,
        "placements": [
            {"site": {"component": "resid_post", "layer": 0, "head": None}, "positions": "token(' Mary')+last()",
             "part": j, "intervention": j}
            for j in range(2)
        ],
        "head": None,
    }  # fmt: skip
    (path / "config.json").write_text(json.dumps(config, indent=2))
    again = reft.load(path, lm)
    rb = _mary_batch(lm)
    with torch.no_grad():
        assert torch.equal(again.logits(rb), rlm.logits(rb))


# ---- the model fingerprint ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["das", "reft"])
def test_other_weights_warn_and_other_shapes_are_refused(kind, tmp_path):
    lm = tiny_lm("llama")
    path = _save(kind, das_result(lm) if kind == "das" else reft_model(lm), tmp_path / "run")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _load(kind, path, tiny_lm("llama"))  # the same weights (same seed): no warning
    changed = tiny_lm("llama")
    with torch.no_grad():
        changed.hf.model.layers[1].mlp.up_proj.weight[0, 0] += 1e-3  # one weight
    with pytest.warns(WeightsChangedWarning, match=r"same shapes but other weights"):
        _load(kind, path, changed)
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=97, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                         num_hidden_layers=2, intermediate_size=48)  # fmt: skip
    with pytest.raises(FormatError, match=r"other parameter shapes"):
        _load(kind, path, interp.LM(tf.LlamaForCausalLM(cfg).eval()))


def test_the_fingerprint_is_fast_and_samples_large_tensors():
    lm = tiny_lm("llama")
    fp = interp.io.fingerprint(lm)
    assert fp["parameters"] == sum(p.numel() for p in lm.hf.parameters())
    assert interp.io.fingerprint(tiny_lm("llama")) == fp
    lm.hf.to(torch.float64)
    assert interp.io.fingerprint(lm)["weights"] != fp["weights"]  # dtypes count
    assert interp.io.fingerprint(lm)["shapes"] == fp["shapes"]


@pytest.mark.slow
def test_a_rank_1_das_result_on_gemma_is_small_and_reloads_identically(gemma, tmp_path):
    import time

    t0 = time.perf_counter()
    interp.io.fingerprint(gemma)
    assert time.perf_counter() - t0 < 1.0  # 0.03 s measured: not worth a cache
    das = das_result(gemma, LowRankRotation(gemma.d_model, 1), pos=token(" Mary") + last())
    path = das.save(tmp_path / "rank1")
    assert sum(f.stat().st_size for f in path.iterdir()) < 50_000
    again = DASResult.load(path, gemma)
    base = gemma.tokenizer(["When Mary and John went to the store, John gave a drink to"], return_tensors="pt")
    source = gemma.tokenizer(["When Mary and Anna went to the park, Anna gave a ball to"], return_tensors="pt")
    a = interchange(gemma, base.input_ids, source.input_ids, at=das.site, via=das.basis).logits
    b = interchange(gemma, base.input_ids, source.input_ids, at=again.site, via=again.basis).logits
    assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["das", "reft"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_non_finite_result_is_never_saved(kind, overwrite, tmp_path):
    """A NaN weight is refused by the save itself (a load would refuse it): the old result, or nothing, stays."""
    lm = tiny_lm("llama")
    obj = das_result(lm) if kind == "das" else reft_model(lm)
    path = tmp_path / "run"
    if overwrite:
        _save(kind, obj, path)
    before = snapshot(path) if overwrite else None
    with torch.no_grad():
        w = next(obj.basis.parameters()) if kind == "das" else obj.interventions[0].W.weight
        w.view(-1)[0] = float("nan")
    with pytest.raises(FormatError, match="NaN or inf|not orthonormal"):
        _save(kind, obj, path, overwrite=overwrite)
    assert (snapshot(path) == before) if overwrite else not path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["run"] if overwrite else [])
