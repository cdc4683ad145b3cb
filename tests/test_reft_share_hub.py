"""One intervention shared across layers (``at_layers(share=True)``, ``reft train --share-weights``), and sharing
trained interventions on the Hugging Face Hub (``hf://owner/name``), on tiny random models with the Hub faked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
from conftest import randomize, sharp_llama
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors import safe_open

import interp
import reft
from interp import Site, first, last
from interp.engine import Batch, execute
from reft import hub
from reft.cli import build_parser, main

POS = first(1) + last(1)
PROMPTS = [[1, 5, 6, 7, 8], [1, 9, 3, 4]]
EXAMPLES = [
    {"prompt_ids": [1, 5, 6, 7], "response_ids": [9]},
    {"prompt_ids": [1, 8, 3], "response_ids": [11]},
    {"prompt_ids": [1, 3, 4, 20, 21], "response_ids": [30]},
    {"prompt_ids": [1, 2, 6], "response_ids": [40]},
]


def _logits(rlm_or_lm) -> torch.Tensor:
    """Last-column logits of PROMPTS (right-padded) with the model's edits, or without (a plain LM)."""
    T = max(map(len, PROMPTS))
    ids = torch.zeros(len(PROMPTS), T, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, r in enumerate(PROMPTS):
        ids[b, : len(r)], mask[b, : len(r)] = torch.tensor(r), 1
    batch = Batch(ids, mask)
    at = torch.tensor([[len(r) - 1] for r in PROMPTS])
    lm = getattr(rlm_or_lm, "lm", rlm_or_lm)
    ops = rlm_or_lm.edit_ops(batch) if isinstance(rlm_or_lm, reft.ReftModel) else []
    with torch.no_grad():
        return execute(lm, batch, ops, logits_at=at, backend="hooks").logits


def _shared(lm, layers=(0, 1, 2), **kw):
    return reft.attach(lm, reft.at_layers(lm, list(layers), pos=POS, rank=4, share=True), **kw)


# ---- one intervention at several layers --------------------------------------------------------------------


def test_a_shared_intervention_is_one_parameter_set_at_every_layer():
    lm = sharp_llama(3)
    sites = reft.at_layers(lm, [0, 1, 2], pos=POS, rank=4, share=True)
    assert [s.layer for s in sites] == [0, 1, 2] and len({id(iv) for iv in sites.values()}) == 1
    rlm = reft.attach(lm, sites)
    one = reft.attach(lm, reft.at_layers(lm, [0], pos=POS, rank=4))
    assert len(rlm.interventions) == 1 and len(rlm.placements) == 3
    assert all(p.intervention is rlm.interventions[0] for p in rlm.placements)
    assert rlm.trainable_params == one.trainable_params == 4 * 32 * 2 + 4
    separate = reft.attach(lm, reft.at_layers(lm, [0, 1, 2], pos=POS, rank=4))
    assert len(separate.interventions) == 3 and separate.trainable_params == 3 * one.trainable_params
    assert "share" in reft.at_layers.__doc__


def test_a_shared_intervention_trains_once_and_stays_shared():
    lm = sharp_llama(3)
    rlm = _shared(lm)
    before = [p.detach().clone() for p in rlm.trainable_parameters()]
    hist = reft.train_reft(rlm, EXAMPLES, reft.TrainConfig(steps=40, lr=2e-2, batch_size=4, progress=False))
    assert hist.losses[-1] < hist.losses[0] / 2, (hist.losses[0], hist.losses[-1])
    after = rlm.trainable_parameters()
    assert len(after) == len(before)
    assert all(not torch.allclose(b, a, atol=1e-4) for b, a in zip(before, after))  # every tensor moved
    assert len(rlm.interventions) == 1 and all(p.intervention is rlm.interventions[0] for p in rlm.placements)


def test_a_shared_intervention_edits_every_layer():
    lm = sharp_llama(3)
    rlm = _shared(lm)
    randomize(rlm)
    iv = rlm.interventions[0]
    shared = _logits(rlm)
    only_first = _logits(reft.attach(lm, {Site("resid_post", 0, POS): iv}))
    assert not torch.allclose(shared, only_first, atol=1e-3)  # layers 1 and 2 edit too
    assert not torch.allclose(only_first, _logits(lm), atol=1e-3)
    # the same as three separate interventions holding the same weights
    copies = reft.attach(lm, {Site("resid_post", layer, POS): _copy(iv) for layer in (0, 1, 2)})
    assert len(copies.interventions) == 3
    torch.testing.assert_close(shared, _logits(copies), atol=1e-5, rtol=1e-5)


def _copy(iv):
    import copy

    return copy.deepcopy(iv)


def test_a_shared_intervention_saves_once_and_loads_shared(tmp_path):
    lm = sharp_llama(3)
    rlm = _shared(lm)
    randomize(rlm)
    path = reft.save(rlm, tmp_path / "run")
    cfg = json.loads((path / "config.json").read_text())
    assert len(cfg["interventions"]) == 1
    assert [p["intervention"] for p in cfg["placements"]] == [0, 0, 0]
    assert [p["site"]["layer"] for p in cfg["placements"]] == [0, 1, 2]
    with safe_open(str(path / "weights.safetensors"), "pt") as f:
        keys = sorted(f.keys())
    assert keys and all(k.startswith("0.") for k in keys), keys  # one tensor set
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "weights.safetensors"]

    again = reft.load(path, lm)
    assert len(again.interventions) == 1 and len(again.placements) == 3
    assert all(p.intervention is again.interventions[0] for p in again.placements)
    assert again.trainable_params == rlm.trainable_params
    torch.testing.assert_close(_logits(again), _logits(rlm), atol=1e-6, rtol=0)
    # trained after the load, it is still one set of weights for all three layers
    reft.train_reft(again, EXAMPLES, reft.TrainConfig(steps=2, lr=1e-2, batch_size=4, progress=False))
    assert len(again.interventions) == 1

    # a save without sharing (the layout every earlier save has) loads as separate interventions, as before
    separate = reft.attach(lm, reft.at_layers(lm, [0, 1], pos=POS, rank=4))
    back = reft.load(reft.save(separate, tmp_path / "separate"), lm)
    assert len(back.interventions) == 2 and back.placements[0].intervention is not back.placements[1].intervention


def test_sharing_with_untied_parts_shares_each_part_across_layers(tmp_path):
    """``attach(tied=False)`` with one intervention at three layers: one copy per part (prefix, suffix), each
    shared by every layer; it saves and loads with that sharing, and ``reft train`` accepts the combination."""
    lm = sharp_llama(3)
    rlm = _shared(lm, tied=False)
    assert len(rlm.interventions) == 2  # one for the prefix at every layer, one for the suffix at every layer
    for part in (0, 1):
        assert len({id(p.intervention) for p in rlm.placements if p.part == part}) == 1
    back = reft.load(reft.save(rlm, tmp_path / "untied"), lm)
    assert len(back.interventions) == 2
    for part in (0, 1):
        assert len({id(p.intervention) for p in back.placements if p.part == part}) == 1
    with pytest.raises(Exception, match="no/such/model"):  # past the checks, on to the (missing) model
        _check(["--share-weights", "--untied", "--layers", "0;1"])


# ---- the command line ----------------------------------------------------------------------------------------


def _check(extra, model="/no/such/model"):
    """``reft train``'s checks (before any data or model is read); the model path does not exist."""
    from reft.cli import train

    args = build_parser().parse_args(["train", "--data", __file__, "--model", model, *extra])
    train.check(args)


def test_share_weights_is_checked_before_the_model_loads():
    assert build_parser().parse_args(["train", "--task", "style", "--share-weights"]).share_weights
    assert not build_parser().parse_args(["train", "--task", "style"]).share_weights
    with pytest.raises(reft.ReftError, match="--share-weights .*--method lora"):
        _check(["--share-weights", "--method", "lora"])
    with pytest.raises(Exception, match="no/such/model"):  # otherwise fine: it goes on to the model
        _check(["--share-weights", "--layers", "0;1"])


def test_cli_trains_shares_saves_and_reloads_one_intervention(tmp_path, capsys, fake_hub):
    from test_reft_cli import _tiny_model_dir

    model = str(_tiny_model_dir(tmp_path / "tiny"))
    data = tmp_path / "train.jsonl"
    rows = [{"prompt": "say red now", "response": " green"}, {"prompt": "say blue now", "response": " ok"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train = ["train", "--model", model, "--data", str(data), "--json", "--layers", "0;1", "--positions", "l1"]
    train += ["--rank", "4", "--steps", "30", "--lr", "5e-2", "--share-weights"]
    assert main([*train, "--out", str(tmp_path / "run")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["share_weights"] is True and out["trainable_params"] == 4 * 32 * 2 + 4
    assert out["train_loss_last"] < out["train_loss_first"] / 2
    lm = interp.load(model)
    again = reft.load(tmp_path / "run", lm)
    assert len(again.interventions) == 1 and [p.site.layer for p in again.placements] == [0, 1]

    # --out hf://owner/name: the same folder and a model card, uploaded
    assert main([*train, "--steps", "2", "--out", "hf://me/tiny-shared"]) == 0
    assert json.loads(capsys.readouterr().out)["saved"] == "hf://me/tiny-shared"
    repo = fake_hub.store / "me" / "tiny-shared"
    assert sorted(p.name for p in repo.iterdir()) == ["README.md", "config.json", "weights.safetensors"]
    card = (repo / "README.md").read_text()
    assert "Shared weights: intervention 0" in card and model in card
    assert len(reft.load("hf://me/tiny-shared", lm).interventions) == 1
    evaluate = ["eval", "--model", model, "--data", str(data), "--eval-data", str(data), "--json"]
    assert main([*evaluate, "--load", "hf://me/tiny-shared"]) == 0


# ---- the Hugging Face Hub, faked: uploads land in a local folder ------------------------------------------------


class FakeHub:
    def __init__(self, store: Path):
        self.store = store
        self.calls: list[tuple] = []


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """``HfApi.create_repo`` / ``upload_folder`` and ``snapshot_download`` on a local folder; the Hub online."""
    fake = FakeHub(tmp_path / "hub")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)

    def create_repo(self, repo_id, *, private=None, exist_ok=False, **kw):
        fake.calls.append(("create_repo", repo_id, exist_ok))
        assert exist_ok

    def upload_folder(self, *, repo_id, folder_path, revision=None, commit_message=None, **kw):
        fake.calls.append(("upload_folder", repo_id, revision, commit_message))
        shutil.copytree(folder_path, fake.store / repo_id, dirs_exist_ok=True)

    def snapshot_download(repo_id, *, revision=None, allow_patterns=None, local_files_only=False, **kw):
        fake.calls.append(("snapshot_download", repo_id, revision, tuple(allow_patterns or ())))
        if not (fake.store / repo_id).is_dir():
            raise LocalEntryNotFoundError(f"{repo_id} is not on the fake Hub")
        return str(fake.store / repo_id)

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return fake


def test_hub_round_trip_keeps_the_weights_and_the_sharing(fake_hub):
    lm = sharp_llama(3)
    rlm = _shared(lm)
    randomize(rlm)
    assert reft.save(rlm, "hf://me/shared", task="style") == "hf://me/shared"
    assert [c[0] for c in fake_hub.calls] == ["create_repo", "upload_folder"]
    assert fake_hub.calls[0][1] == "me/shared" and fake_hub.calls[1][1] == "me/shared"
    repo = fake_hub.store / "me" / "shared"
    assert sorted(p.name for p in repo.iterdir()) == ["README.md", "config.json", "weights.safetensors"]

    again = reft.load("hf://me/shared", lm)
    assert fake_hub.calls[-1] == ("snapshot_download", "me/shared", None, ("config.json", "weights.safetensors"))
    assert len(again.interventions) == 1 and all(p.intervention is again.interventions[0] for p in again.placements)
    torch.testing.assert_close(_logits(again), _logits(rlm), atol=1e-6, rtol=0)

    reft.load("hf://me/shared@v1", lm)  # a revision reaches the download
    assert fake_hub.calls[-1][:3] == ("snapshot_download", "me/shared", "v1")
    # a load is as strict as a local one: the model is checked against the saved fingerprint
    with pytest.raises(ValueError, match="architecture|n_layers|model"):
        reft.load("hf://me/shared", sharp_llama(layers=2))
    with pytest.raises(Exception, match="me/missing"):
        reft.load("hf://me/missing", lm)
    (fake_hub.store / "me" / "card-only").mkdir()
    (fake_hub.store / "me" / "card-only" / "README.md").write_text("# hi")
    with pytest.raises(FileNotFoundError, match="'me/card-only' has no config.json or weights.safetensors"):
        reft.load("hf://me/card-only", lm)


@pytest.mark.parametrize("bad", ["hf://nope", "hf://a/b/c", "hf://me/x@", "hf://../x"])
def test_a_malformed_repo_id_is_refused_before_any_work(bad, fake_hub):
    lm = sharp_llama(layers=1)
    rlm = reft.attach(lm, reft.at_layers(lm, [0], rank=2))
    with pytest.raises(ValueError, match="not a Hub repo: expected hf://owner/name"):
        reft.save(rlm, bad)
    with pytest.raises(ValueError, match="not a Hub repo"):
        reft.load(bad, lm)
    assert fake_hub.calls == []


def test_offline_fails_naming_the_repo_and_the_setting_before_any_work(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def never(*a, **kw):
        raise AssertionError("offline: nothing may be uploaded or downloaded")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", never)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", never)
    monkeypatch.setattr(hub, "model_card", never)  # the check comes first
    lm = sharp_llama(layers=1)
    rlm = reft.attach(lm, reft.at_layers(lm, [0], rank=2))
    with pytest.raises(ConnectionError, match=r"save to the Hugging Face Hub repo 'me/offline-x': HF_HUB_OFFLINE=1"):
        reft.save(rlm, "hf://me/offline-x")
    # a load uses the local Hugging Face cache (the real one, offline); this repo is not in it
    with pytest.raises(ConnectionError, match=r"load from the Hugging Face Hub repo 'me/offline-x': HF_HUB_OFFLINE=1"):
        reft.load("hf://me/offline-x", lm)
    # the command lines refuse it in their checks, before reading data or loading a model
    with pytest.raises(ConnectionError, match="'me/offline-x': HF_HUB_OFFLINE=1"):
        _check(["--out", "hf://me/offline-x"])
    from reft.cli import eval as _eval

    args = build_parser().parse_args(["eval", "--data", __file__, "--load", "hf://me/offline-x"])
    with pytest.raises(ConnectionError, match="'me/offline-x': HF_HUB_OFFLINE=1"):
        _eval.check(args)


def test_an_unreachable_hub_fails_naming_the_repo(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    lm = sharp_llama(layers=1)
    rlm = reft.attach(lm, reft.at_layers(lm, [0], rank=2))
    with pytest.raises(ConnectionError, match=r"'me/x': the Hub cannot be reached .*HF_HUB_OFFLINE is not set"):
        reft.save(rlm, "hf://me/x")
    with pytest.raises(ConnectionError, match=r"'me/x': the Hub cannot be reached"):
        reft.load("hf://me/x", lm)


# ---- the model card --------------------------------------------------------------------------------------------


def test_the_model_card_says_what_is_where_and_how_to_load_it():
    lm = sharp_llama(3)
    lm.hf.config._name_or_path = "someone/tiny-llama"  # as if loaded from the Hub
    rlm = _shared(lm, layers=(0, 2))
    card = hub.model_card(rlm, task="style", repo="me/style")
    head, body = card.split("---\n", 2)[1:]
    assert "library_name: interp-toolkit" in head and "- loreft" in head and "base_model: someone/tiny-llama" in head
    assert "# me/style" in body
    assert "Base model: `someone/tiny-llama` (LlamaForCausalLM, 3 layers, d_model 32)" in body
    assert "Task: style" in body
    assert f"Trainable parameters: {rlm.trainable_params}" in body and rlm.trainable_params == 260
    assert "Shared weights: intervention 0 serves several sites" in body
    assert "| resid_post | 0 | first(1)+last() | all | LoReFT | 4 | 0 |" in body
    assert "| resid_post | 2 | first(1)+last() | all | LoReFT | 4 | 0 |" in body
    assert "lm = interp.load('someone/tiny-llama')" in body and 'reft.load("hf://me/style", lm)' in body

    # a model built in memory has no name; a local path is shown but is no Hub metadata; no task: said so
    lm.hf.config._name_or_path = ""
    untied = reft.attach(lm, reft.at_layers(lm, [1], pos=POS, rank=2), tied=False)
    card = hub.model_card(untied)
    assert "base_model:" not in card and "(built in memory)" in card and "Task: not recorded" in card
    assert "Shared weights" not in card and "tied prefix/suffix weights: False" in card
    assert "| resid_post | 1 | first(1)+last() | 0 | LoReFT | 2 | 0 |" in card
    assert "| resid_post | 1 | first(1)+last() | 1 | LoReFT | 2 | 1 |" in card
    lm.hf.config._name_or_path = __file__
    assert "base_model:" not in hub.model_card(untied) and __file__ in hub.model_card(untied)
