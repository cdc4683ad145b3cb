"""LoRA and DoRA baselines through ``peft`` (extra ``[baselines]``), on ReFT's exact data, loop and metric.

Example:
    >>> reviews = [{"prompt_ids": p, "label": i % 2} for i, p in enumerate(prompts.tolist())]
    >>> res = train_lora(lm, reviews, TrainConfig(steps=2, lr=1e-3), rank=8, eval_examples=reviews,
    ...                  label_words={0: 5, 1: 6})     # token ids here; with a tokenizer {0: " negative", ...}
    >>> res.metrics["accuracy"], res.trainable_params   # rank-8 adapters on q, k, v and o of both layers
    (0.625, 3584)
    >>> res = train_lora(lm, examples, TrainConfig(steps=2), dora=True)          # DoRA: weight-decomposed LoRA
    >>> res.trainable_params                            # LoRA's, plus a magnitude per output feature
    3776

The adapters go on a private copy of the model (``lm`` is untouched), and training goes through
:func:`reft.train.fit` with the same batches, steps, schedule, response-only loss and evaluation as
:func:`reft.train_reft`; only the trainable parameters differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from interp.engine import execute

from .data import label_vocab
from .interventions import ReftError
from .train import History, TrainConfig, evaluate, fit, prepare

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class BaselineResult:
    """A trained peft model, its trainable parameter count, its training history and held-out metrics."""

    model: torch.nn.Module
    trainable_params: int
    history: History
    metrics: dict


@dataclass
class Adapter:
    """A peft model (LoRA or DoRA adapters on a copy of the LM) and its trainable parameter count."""

    model: torch.nn.Module
    trainable_params: int


def fresh_copy(lm) -> torch.nn.Module:
    """An independent copy of ``lm``'s Hugging Face model (no nnsight wrapping), frozen."""
    path = getattr(lm.hf.config, "_name_or_path", "") or ""
    if path and Path(path).is_dir() and (Path(path) / "config.json").exists():
        hf = AutoModelForCausalLM.from_pretrained(path, dtype=lm.dtype)
    else:
        hf = type(lm.hf)(lm.hf.config).to(lm.dtype)
        hf.load_state_dict(lm.hf.state_dict())
    hf.to(lm.device).eval()
    for p in hf.parameters():
        p.requires_grad_(False)
    return hf


def lora(lm, *, rank: int = 8, dora: bool = False, target_modules=ATTENTION, alpha: int | None = None) -> Adapter:
    """A peft LoRA (or DoRA) model on a copy of ``lm``, as an :class:`Adapter`."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ReftError("LoRA/DoRA baselines need peft: pip install 'interp-toolkit[baselines]'") from None
    hf = fresh_copy(lm)
    present = {n.rsplit(".", 1)[-1] for n, _ in hf.named_modules()}
    targets = [t for t in target_modules if t in present]
    if not targets:
        raise ReftError(
            f"none of the LoRA target modules {list(target_modules)} exist in {lm.spec.architecture}; "
            f"pass target_modules= with names such as {sorted(present)[:8]}"
        )
    cfg = LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, lora_dropout=0.0, target_modules=targets, use_dora=dora)
    model = get_peft_model(hf, cfg)
    return Adapter(model, sum(p.numel() for p in model.parameters() if p.requires_grad))


def train_lora(
    lm,
    examples,
    config: TrainConfig | None = None,
    *,
    rank: int = 8,
    dora: bool = False,
    target_modules=ATTENTION,
    eval_examples=None,
    label_words=None,
) -> BaselineResult:
    """Train a LoRA/DoRA baseline with :func:`reft.train.fit` and evaluate it like a ReFT run."""
    config = config or TrainConfig()
    rows = prepare(lm, examples, config, label_words=label_words)
    vocab = label_vocab(lm, label_words)
    adapter = lora(lm, rank=rank, dora=dora, target_modules=target_modules)
    model, n = adapter.model, adapter.trainable_params
    inner = model.get_base_model()  # the HF model with adapters injected in place

    def forward(rb):
        return execute(lm, rb.batch, logits_at=rb.pred_at, vocab=rb.vocab, backend="hooks", hf=inner).logits

    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    hist = fit(lm, [{"params": params, "weight_decay": config.weight_decay}], forward, rows, config, vocab=vocab)
    model.eval()
    metrics = {}
    if eval_examples is not None:
        metrics = evaluate(lm, eval_examples, label_words=label_words, config=config, forward=forward)
    return BaselineResult(model, n, hist, metrics)
