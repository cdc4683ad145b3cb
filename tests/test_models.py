"""Loading: the embedded default's spec, any local HF checkpoint, and clear errors."""

import pytest
import torch
from conftest import ARCHS, tiny_lm
from transformers import LlamaConfig, LlamaForCausalLM

import interp
from interp import Site, interchange, last


@pytest.mark.slow
def test_embedded_default_spec(gemma):
    s = gemma.spec
    assert (s.architecture, s.n_layers, s.d_model, s.n_heads, s.head_dim) == ("Gemma3ForCausalLM", 18, 640, 4, 256)
    assert s.vocab_size == 262144 and gemma.tokenizer.tokenize(" capital") == ["▁capital"]
    assert s.fingerprint() == {"architecture": "Gemma3ForCausalLM", "d_model": 640, "n_layers": 18}


@pytest.mark.slow
def test_any_local_checkpoint_loads_the_same_way(gemma, tmp_path):
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=gemma.spec.vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    gemma.tokenizer.save_pretrained(tmp_path)
    lm = interp.load(tmp_path)
    assert lm.spec.architecture == "LlamaForCausalLM" and lm.d_model == 16
    out = interchange(lm, ["Hello there", "A cat"], ["Good bye", "The dog sat"], at=Site("resid_post", 1, last()))
    assert out.logits.shape == (2, gemma.spec.vocab_size)


def test_wrapping_freezes_the_model():
    lm = interp.LM(
        LlamaForCausalLM(
            LlamaConfig(vocab_size=97, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
        )
    )
    assert not any(p.requires_grad for p in lm.hf.parameters())
    assert "LlamaForCausalLM" in repr(lm) and lm.n_layers == 1


@pytest.mark.parametrize("arch", ARCHS)
def test_the_frozen_model_unembeds_a_contiguous_input(arch):
    """Freezing must not send Hugging Face's ``logits_to_keep`` slice into the unembedding's slow batched path:
    the wrapped (frozen) model's logits equal the trainable model's, which takes the fast path, to 1e-6."""
    lm = tiny_lm(arch)
    seen = []
    handle = lm.hf.get_output_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0]))
    ids = torch.randint(3, 97, (3, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        frozen = lm.hf(input_ids=ids, logits_to_keep=1).logits
        for p in lm.hf.parameters():
            p.requires_grad_(True)
        trainable = lm.hf(input_ids=ids, logits_to_keep=1).logits
    handle.remove()
    assert all(x.is_contiguous() for x in seen)
    torch.testing.assert_close(frozen, trainable, atol=1e-6, rtol=0)
    assert interp.LM(lm.hf).hf.get_output_embeddings()._forward_pre_hooks.__len__() == 1  # wrapped twice: one hook
