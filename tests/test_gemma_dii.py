"""Behaviour on the real embedded Gemma-3-270M: IOI is solved, and DII moves it where it should."""

import json

import pytest
import torch

import interp
from interp import Site, at, encode, interchange, last, token
from interp.cli import main
from interp.engine import options
from interp.patching import patch_grid
from interp.tasks import IOI_POSITIONS, ioi_pairs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pairs():
    return ioi_pairs(32, seed=0)


@pytest.fixture(scope="module")
def clean(gemma, pairs):
    return interp.run(gemma, pairs.base).logits


def test_gemma_solves_ioi(gemma, pairs, clean):
    answers = torch.tensor([gemma.tokenizer(a, add_special_tokens=False).input_ids[0] for a in pairs.base_answer])
    accuracy = (clean.argmax(-1) == answers).float().mean().item()
    print(f"Gemma-3-270M IOI accuracy on 32 built-in prompts: {accuracy:.3f}")
    assert accuracy > 0.9


def test_late_final_position_interchange_flips_to_the_source_name(gemma, pairs):
    out = interchange(gemma, pairs.base, pairs.source, at=Site("resid_post", 16, last()))
    assert out.accuracy(pairs.source_answer) > 0.9
    assert out.logit_diff(pairs.base_answer, pairs.source_answer).mean() < 0


def test_first_token_interchange_changes_nothing(gemma, pairs, clean):
    out = interchange(gemma, pairs.base, pairs.source, at=Site("resid_post", 16, at(0)))
    torch.testing.assert_close(out.logits, clean)


def test_optimised_dii_equals_the_unoptimised_path(gemma, pairs):
    b, s = encode(gemma, pairs.base[:8]), encode(gemma, pairs.source[:8])
    for site in (Site("resid_post", 13, last()), Site("attn_out", 6, at(10)), Site("head", 9, last(), head=2)):
        fast = interchange(gemma, b, s, at=site).logits
        with options(backend="hooks", full=True):  # the reference path
            slow = interchange(gemma, b, s, at=site).logits
        # Same arithmetic up to BLAS blocking: the unembedding runs on 1 row per prompt instead of all 15.
        torch.testing.assert_close(fast, slow, atol=2e-5, rtol=1e-6, msg=lambda m, site=site: f"{site}: {m}")


def test_token_matched_position_on_the_real_tokenizer(gemma, pairs):
    b = encode(gemma, pairs.base[:4])
    subject = [p.split(", ")[1].split()[0] for p in pairs.base[:4]]
    for k, name in enumerate(subject):
        pos = token(" " + name, occurrence=1).resolve(
            b.attention_mask[k : k + 1], b.input_ids[k : k + 1], gemma.tokenizer
        )
        assert pos.item() == 10  # S2 in every template


def test_patch_grid_finds_the_name_mover_handoff(gemma, pairs):
    positions = {k: IOI_POSITIONS[k] for k in ("IO", "S2", "end")}
    grid = patch_grid(gemma, pairs[:8], layers=[3, 16], positions=positions, progress=False)
    effect = dict(zip(grid.positions, grid.effect.T.tolist()))
    assert effect["end"][1] > 0.8 and abs(effect["end"][0]) < 0.2  # late: the answer sits at the last token
    assert effect["IO"][0] > 0.8 and abs(effect["IO"][1]) < 0.2  # early: it is still at the name


def test_cli_patch_json(tmp_path, capsys):
    argv = ["patch", "--task", "ioi", "--n", "4", "--layers", "16", "--out", str(tmp_path), "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"clean_accuracy", "layers", "positions", "effect"}
    assert result["layers"] == [16] and len(result["effect"][0]) == len(result["positions"]) == 15
    assert (tmp_path / "patch_ioi.png").stat().st_size > 10_000
    assert main(argv) == 2  # refuses to overwrite earlier results
    assert "already exist" in capsys.readouterr().err


@pytest.mark.parametrize("component", ["v", "attn_pattern"])
def test_cli_patch_inside_attention_and_mlp(tmp_path, capsys, component):
    argv = ["patch", "--n", "4", "--layers", "9", "--component", component, "--out", str(tmp_path), "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["component"] == component and len(result["effect"][0]) == 15
    assert max(abs(x) for x in result["effect"][0]) > 1e-3  # a lost edit gives exactly 0 everywhere
    atp = json.loads((tmp_path / "patch_ioi_atp.json").read_text())
    assert atp["component"] == component and -1 <= atp["pearson_r_with_exact"] <= 1
