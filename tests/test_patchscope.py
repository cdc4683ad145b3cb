"""The patchscope lens on tiny random models of every architecture (and one check on the real model)."""

from __future__ import annotations

import pytest
import torch
from conftest import ARCHS, tiny_lm

import reft
from interp import Site, at, collect, fastpatch, first, intervene, last, logit_lens, run
from interp.patchscope import patchscope

TARGET = [5, 6, 7, 8, 9, 8, 3]  # a target of ids (no tokenizer): placeholder 9 at column 4, two tokens after it
COL = 4
OTHER = [[11, 12, 13, 14, 15, 16, 17], [40, 41, 42, 43, 44, 45, 46]]  # two sources unlike the target


def _patched(lm, src, layer, tokens=TARGET):
    """The reference: the target run with ``src`` (B, 1, d) written over the placeholder's resid_post at ``layer``,
    a full forward through interp.intervene (no cache), logits at the last token: (B, V)."""
    base = torch.tensor([tokens] * src.shape[0])
    return intervene(lm, base, at=Site("resid_post", layer, at(COL)), sources=[src]).logits


@pytest.mark.parametrize("arch", ARCHS)
def test_own_state_changes_nothing(arch):
    """The target's own hidden state at the placeholder, patched into itself at the same layer: the target's run."""
    lm = tiny_lm(arch)
    scope = patchscope(lm, [TARGET], target=TARGET, placeholder=9, pos=at(COL))
    assert scope.logits.shape == (lm.n_layers, 1, 1, lm.spec.vocab_size) and scope.placeholder == COL
    clean = run(lm, [TARGET]).logits[0]
    for layer in range(lm.n_layers):
        torch.testing.assert_close(scope.logits[layer, 0, 0], clean, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("target_layer", [None, 0])
def test_another_prompts_state_reaches_the_output(arch, target_layer):
    """States of other prompts, each layer into its own (or into layer 0): every row is the target run with that
    state written over the placeholder (a full forward), and at layer 0 it moves the decode."""
    lm = tiny_lm(arch)
    scope = patchscope(lm, OTHER, target=TARGET, placeholder=9, pos=at(2) + last(), target_layer=target_layer)
    assert scope.logits.shape == (lm.n_layers, 2, 2, lm.spec.vocab_size)
    reads = collect(lm, OTHER, at=[Site("resid_post", layer, at(2) + last()) for layer in range(lm.n_layers)])
    for layer, states in enumerate(reads):  # (2, 2, d): prompts x positions
        into = layer if target_layer is None else target_layer
        for j in range(2):
            ref = _patched(lm, states[:, j : j + 1], into)
            torch.testing.assert_close(scope.logits[layer, :, j], ref, atol=1e-4, rtol=1e-4)
    moved = (scope.logits[0] - run(lm, [TARGET]).logits[0]).abs().amax(-1)  # (2, 2)
    assert (moved > 1e-3).all()


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_greedy_tokens_continue_the_patched_target(arch):
    lm = tiny_lm(arch)
    scope = patchscope(lm, OTHER, target=TARGET, placeholder=9, target_layer=0, new_tokens=2)
    assert scope.tokens.shape == (lm.n_layers, 2, 1, 2)
    assert torch.equal(scope.tokens[..., 0], scope.logits.argmax(-1))
    states = collect(lm, OTHER, at=[Site("resid_post", layer, last()) for layer in range(lm.n_layers)])
    for layer, s in enumerate(states):
        for b in range(2):  # the second token: the patched target with its first token appended, run in full
            longer = TARGET + [int(scope.tokens[layer, b, 0, 0])]
            nxt = _patched(lm, s[b : b + 1], 0, longer).argmax(-1)
            assert int(nxt) == int(scope.tokens[layer, b, 0, 1])
    assert len(scope.text(row=1)) == lm.n_layers  # ids joined by spaces without a tokenizer


def test_full_path_and_batches_agree_with_the_cached_one(monkeypatch):
    """A model outside the site table runs every row in full; rows split into batches give the same numbers."""
    lm = tiny_lm("qwen2")
    cached = patchscope(lm, OTHER, target=TARGET, placeholder=9)
    monkeypatch.setattr(fastpatch, "supported", lambda lm, component: "outside the table (test)")
    full = patchscope(lm, OTHER, target=TARGET, placeholder=9, batch_size=3)
    torch.testing.assert_close(full.logits, cached.logits, atol=1e-5, rtol=1e-5)


def test_a_reft_model_is_read_under_its_edits():
    """The source states come from the ReFT model's run (its edit at layer 0); the target runs on the plain LM."""
    lm = tiny_lm("llama")
    iv = reft.LoReFT(lm.d_model, rank=2)
    with torch.no_grad():
        iv.W.bias.add_(1.0)
    rlm = reft.attach(lm, {Site("resid_post", 0, last()): iv})
    edited = patchscope(rlm, OTHER, layers=[0], target=TARGET, placeholder=9)
    states = collect(rlm, OTHER, at=Site("resid_post", 0, last()))
    torch.testing.assert_close(edited.logits[0, :, 0], _patched(lm, states, 0), atol=1e-4, rtol=1e-4)
    plain = patchscope(lm, OTHER, layers=[0], target=TARGET, placeholder=9)
    assert (edited.logits - plain.logits).abs().max() > 1e-3


def test_reads_like_a_logit_lens():
    lm = tiny_lm("llama")
    scope = patchscope(lm, OTHER, target=TARGET, placeholder=9, pos=first(2), top_k=3)
    top = scope.logits.argmax(-1)  # (L, B, k)
    assert (scope.rank(top[-1, :, 0].tolist())[-1, :, 0] == 0).all()
    best = scope.top_k()  # top_k=3 by default, prompt 0 at its last position read
    assert len(best) == lm.n_layers and len(best[0]) == 3 and best[-1][0][0] == int(top[-1, 0, -1])
    assert scope.positions.tolist() == [[0, 1], [0, 1]] and "target_layers=[0, 1]" in repr(scope)


@pytest.mark.slow
def test_on_ioi_the_patchscope_reads_the_name_the_logit_lens_the_answer(gemma):
    """Gemma-3-270M: at the IO name's own token the identity patchscope says the name at early layers; at the last
    token it never says the answer, which the logit lens ranks first at the last layer."""
    from interp.tasks import ioi_pairs

    pairs = ioi_pairs(2)
    scope = patchscope(gemma, pairs.base, layers=[0, 4, 17], pos=at(2) + last())  # default identity prompt and "?"
    rank = scope.rank(pairs.base_answer)  # (3 layers, 2 prompts, 2 positions)
    assert (rank[:2, :, 0] == 0).all()  # the IO token's state reads as the IO name at layers 0 and 4
    assert (rank[:, :, 1] > 100).all()  # the last token's state never reads as the answer
    assert (logit_lens(gemma, pairs.base, layers=[17]).rank(pairs.base_answer)[0, :, 0] == 0).all()
