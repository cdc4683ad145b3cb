"""Served in vLLM on a Llama (a small random one saved to a folder), edits at every served component give the
tokens of reft.generate: resid_pre (layer 0 and 1), resid_mid, resid_post, attn_out and mlp_out, prompt-only and
decode-time, one batch, prefill in chunks of 16 tokens, and a KV cache of 4 blocks of 32 tokens for 7 requests of
25-31 prompt tokens, so that vLLM preempts requests and recomputes them (their edits are applied again)."""

from __future__ import annotations

import pytest

vllm = pytest.importorskip("vllm")

import torch  # noqa: E402
import transformers as tf  # noqa: E402
from conftest import randomize  # noqa: E402

import interp  # noqa: E402
import reft  # noqa: E402
from interp import Site, all_tokens, first, generated, last, recent  # noqa: E402
from reft.serve import Server  # noqa: E402
from reft.steering import steer  # noqa: E402

NEW, EOS = 10, 2


def _vector(seed: int) -> torch.Tensor:
    return torch.randn(128, generator=torch.Generator().manual_seed(seed))


def _until_eos(ids: list[int]) -> list[int]:
    return ids[: ids.index(EOS) + 1] if EOS in ids else ids


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=128, hidden_size=128, num_attention_heads=2, num_key_value_heads=1,
                         num_hidden_layers=2, intermediate_size=256, initializer_range=0.2,
                         max_position_embeddings=128, eos_token_id=EOS)  # fmt: skip  # head_dim 64: CPU attention
    folder = tmp_path_factory.mktemp("llama") / "model"
    hf = tf.LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(folder)
    return interp.LM(hf), folder  # no tokenizer: prompts are token ids


def test_every_served_component_equals_reft_generate_on_llama(llama):
    lm, folder = llama
    untied = reft.attach(lm, {Site("resid_post", 0, first(1) + last(1)): reft.LoReFT(128, 4)}, tied=False)
    edits = {
        "post": randomize(untied, seed=1),
        "mid": randomize(reft.attach(lm, {Site("resid_mid", 1, last(1) + generated()): reft.LoReFT(128, 4)}), seed=2),
        "attn": steer(lm, Site("attn_out", 1, all_tokens()), _vector(3), scale=20.0),
        "pre1": steer(lm, Site("resid_pre", 1, recent(2)), _vector(4), scale=20.0),
        "mlp": steer(lm, Site("mlp_out", 0, last()), _vector(5), scale=20.0),
        "pre0": steer(lm, Site("resid_pre", 0, last()), _vector(6), scale=20.0),
    }
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(3, 128, (n,), generator=g).tolist() for n in (28, 30, 26, 29, 27, 31, 25)]
    names = [*edits, None]
    applied = []  # (prompt-token edits applied, planned) per edited request
    with Server(folder, edits, lm=lm, skip_tokenizer_init=True, max_model_len=64, max_num_batched_tokens=16,
                block_size=32, kv_cache_memory_bytes=4 * 32 * 1024) as server:  # fmt: skip  # 4 blocks of 32 tokens
        check = server.editor.check

        def counted(tag, name, n_cached, n_generated):
            req = server.editor.tags.get(tag)
            if name is not None:
                applied.append((server.editor.tally[req][0], sum(map(len, server.editor.plans[req].prompt_at))))
            return check(tag, name, n_cached, n_generated)

        server.editor.check = counted
        out = server.generate(prompts, names, {"max_tokens": NEW})
    served = [server.edits.get(n) for n in names]
    want = reft.generate_ids(lm, prompts, serve=served, max_new_tokens=NEW).new_ids.tolist()
    plain = reft.generate_ids(lm, prompts, max_new_tokens=NEW).new_ids.tolist()
    for name, o, w, p in zip(names, out, want, plain):
        assert o.token_ids == _until_eos(w), name
        assert name is None or _until_eos(w) != _until_eos(p), f"{name}: the edit changes nothing"
    assert any(done > planned for done, planned in applied), applied  # a request was preempted and recomputed
