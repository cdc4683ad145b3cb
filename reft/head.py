"""A classification head: class logits from the final hidden state at the last prompt token.

Example:
    >>> words = {0: 5, 1: 6}                 # label -> token id here; with a tokenizer {0: " negative", 1: " positive"}
    >>> head = ClassifierHead.from_label_words(lm, words)        # starts equal to scoring the label words
    >>> rlm = attach(lm, {Site("resid_post", 1, last()): LoReFT(lm.d_model, 4)}, head=head)
    >>> reviews = [{"prompt_ids": p, "label": i % 2} for i, p in enumerate(prompts.tolist())]
    >>> hist = train_reft(rlm, reviews, TrainConfig(steps=2), label_words=words)   # trains the edit and the head
    >>> hist.steps, rlm.trainable_params                         # LoReFT 260, head 2 x 32 + 2
    (2, 326)

Without a head, a decoder LM classifies by scoring the label words (only their rows of the unembedding are
computed), which is the right default when the words mean the classes. A head fits better when they don't (label
names the model has no reading for, many classes): an ``n_labels x d_model`` linear map trained with the
interventions, ``n_labels x (d_model + 1)`` more parameters. Initialised from the label words' unembedding rows,
its first step starts where label-word scoring is.
"""

from __future__ import annotations

import torch
from torch import nn

from .data import label_vocab
from .interventions import ReftError


class ClassifierHead(nn.Linear):
    """``logits = W h + b`` over ``n_labels`` classes; ``h`` is the model's final (normed) hidden state."""

    def __init__(self, d_model: int, n_labels: int, *, dtype: torch.dtype = torch.float32):
        if n_labels < 2:
            raise ReftError(f"a classifier head needs at least 2 labels; got n_labels={n_labels}")
        super().__init__(d_model, n_labels, dtype=dtype)

    @classmethod
    def from_label_words(cls, lm, label_words) -> ClassifierHead:
        """A head whose rows are the unembedding rows of ``label_words`` (bias 0): label-word scoring, trainable."""
        vocab = label_vocab(lm, label_words)
        if vocab is None:
            raise ReftError("from_label_words needs label words, e.g. {0: ' negative', 1: ' positive'}")
        unembed = lm.hf.get_output_embeddings()
        head = cls(unembed.weight.shape[1], len(vocab))
        with torch.no_grad():
            head.weight.copy_(unembed.weight[vocab.to(unembed.weight.device)].float())
            if getattr(unembed, "bias", None) is not None:
                head.bias.copy_(unembed.bias[vocab].float())
            else:
                head.bias.zero_()
        return head
