"""Fixtures: tiny random models built in memory (one per architecture) and the embedded Gemma-3-270M."""

from __future__ import annotations

import os

import pytest
import torch
import transformers as tf

import interp

# Under pytest-xdist (`make test` runs `-n 2`), each worker owns one core: every test, and every process a test
# starts (notebook kernels, scripts, torchrun), runs on one thread instead of two workers fighting over both cores.
ONE_CORE_PER_WORKER = "PYTEST_XDIST_WORKER" in os.environ
if ONE_CORE_PER_WORKER:
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread_for_tiny_models(request):
    """Tests not marked slow run tiny models on one thread: on 2 cores, thread hand-offs cost more than the
    arithmetic (the tiny-model tables run about 7x faster). Tests on the real model keep every thread, except
    under xdist, where each worker has one core."""
    if request.node.get_closest_marker("slow") and not ONE_CORE_PER_WORKER:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _tiny(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    common = dict(vocab_size=97, hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=64)
    if arch == "gpt2":
        return tf.GPT2LMHeadModel(
            tf.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=97, bos_token_id=1, eos_token_id=2)
        )
    if arch == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(num_key_value_heads=2, **common))
    if arch == "qwen2":
        return tf.Qwen2ForCausalLM(tf.Qwen2Config(num_key_value_heads=2, **common))
    if arch == "gemma3":
        return tf.Gemma3ForCausalLM(
            tf.Gemma3TextConfig(
                num_key_value_heads=1,
                head_dim=8,
                sliding_window=4,
                layer_types=["sliding_attention", "full_attention"],
                **common,
            )
        )
    if arch == "gpt_neox":
        return tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(use_parallel_residual=False, **common))
    raise ValueError(arch)


ARCHS = ("gpt2", "llama", "qwen2", "gemma3", "gpt_neox")


def tiny_lm(arch: str) -> interp.LM:
    return interp.LM(_tiny(arch).eval())


@pytest.fixture(params=ARCHS)
def tiny(request) -> interp.LM:
    """A tiny random model of each architecture (2 layers, d_model 32, 4 heads, vocab 97)."""
    return tiny_lm(request.param)


@pytest.fixture(scope="session")
def gemma() -> interp.LM:
    """The embedded Gemma-3-270M, loaded once per test session."""
    return interp.load()


def sharp_llama(layers: int = 2, *, width: int = 32, kv_heads: int = 2, init: float = 0.3) -> interp.LM:
    """A tiny random Llama (4 heads, MLP twice ``width``) with a large init, so its predictions depend strongly
    on the residual stream."""
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(
        vocab_size=97,
        hidden_size=width,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        num_hidden_layers=layers,
        intermediate_size=2 * width,
        initializer_range=init,
    )
    return interp.LM(tf.LlamaForCausalLM(cfg).eval())


def randomize(rlm, scale: float = 0.5, seed: int = 1, *, head: bool = False):
    """Move a ReftModel's W, b (and unconstrained bases; with ``head=True`` its head too) away from init, so that
    an edit is visible (a fresh LoReFT with W = R, b = 0 is the identity). Returns ``rlm``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in (rlm if head else rlm.interventions).named_parameters():
            if "original" not in name:
                p.add_(scale * torch.randn(p.shape, generator=g))
    return rlm
