"""Examples -> padded batches with prompt locations and response targets (loss on response tokens only).

Example:
    >>> data = as_examples([{"prompt": "Q: 2+2?\\nA:", "response": " 4"}])    # text, for a model with a tokenizer
    >>> as_examples([{"text": "a gem", "label": 1}], label_words={0: " bad", 1: " good"})
    [Example(prompt='a gem', response=' good', label=1)]
    >>> data = as_examples([{"prompt_ids": [1, 5, 6], "response_ids": [7, 8]},       # token ids, for a model
    ...                     {"prompt_ids": [1, 9], "response_ids": [10]}])            # without one
    >>> rb = collate(lm, tokenize(lm, data))
    >>> rb.batch.input_ids.tolist()                 # prompt + response, right-padded
    [[1, 5, 6, 7, 8], [1, 9, 10, 0, 0]]
    >>> rb.pred_at.tolist(), rb.labels.tolist()     # (B, k): the columns whose logits predict the response
    ([[2, 3], [1, 1]], [[7, 8], [10, 0]])
    >>> rb.label_mask.tolist()                      # row 1 has one response token
    [[True, True], [True, False]]

A row is ``prompt tokens + response tokens`` (right-padded). The logits at column ``c`` predict the token
at ``c + 1``, so the loss reads logits only at the ``k`` columns before each response token; everything
else, and the 262k-word unembedding at the prompt's columns, is never computed. Classification is the same
thing with a one-token response: the label word.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from interp.engine import Batch
from interp.inputs import pad

from .interventions import ReftError


@dataclass(frozen=True)
class Example:
    """One prompt and the response to learn (strings, or token ids for models without a tokenizer)."""

    prompt: str | tuple[int, ...]
    response: str | tuple[int, ...]
    label: int | None = None  # classification: the index of the label word


def as_examples(data, *, label_words: dict | list | None = None) -> list[Example]:
    """Examples from dicts ``{"prompt", "response"}``, ``{"prompt"|"text", "label"}`` (with ``label_words``),
    ``(prompt, response)`` pairs, ``{"prompt_ids", "response_ids"}`` or a JSONL file of any of these.
    """
    if isinstance(data, (str, os.PathLike)):
        data = read_jsonl(data)
    data = list(data)
    if not data:
        raise ReftError("the dataset is empty; expected at least one example such as {'prompt': ..., 'response': ...}")
    words = _label_words(label_words)
    out = []
    for i, ex in enumerate(data):
        if isinstance(ex, Example):
            out.append(ex)
            continue
        if isinstance(ex, (tuple, list)) and len(ex) == 2:
            ex = {"prompt": ex[0], "response": ex[1]}
        if not isinstance(ex, dict):
            raise ReftError(f"example {i} is a {type(ex).__name__}; expected a dict with 'prompt' and 'response'")
        prompt = ex.get("prompt", ex.get("text"))
        if "prompt_ids" in ex:
            prompt = tuple(int(t) for t in ex["prompt_ids"])
        label = ex.get("label")
        if "response_ids" in ex:
            response = tuple(int(t) for t in ex["response_ids"])
        elif "response" in ex:
            response = ex["response"]
        elif label is not None:
            if words is None:
                raise ReftError(
                    f"example {i} has a label but no label_words were given; pass e.g. "
                    "label_words={0: ' negative', 1: ' positive'}"
                )
            key = _label_key(label, words, i)
            response, label = words[key], key
            if isinstance(response, int):  # a label given as a token id (models without a tokenizer)
                response = (response,)
        else:
            response = None
        if prompt is None or (isinstance(prompt, str) and not prompt.strip()) or len(prompt) == 0:
            raise ReftError(f"example {i} has an empty prompt: {ex!r}; ReFT intervenes on prompt positions")
        if response is None or len(response) == 0:
            raise ReftError(
                f"example {i} has no response (keys {sorted(ex)}): the loss is on response tokens, so "
                "give 'response' (or 'label' with label_words)"
            )
        out.append(Example(prompt, response, label if words is not None else None))
    return out


def read_jsonl(path: str | os.PathLike) -> list:
    """The examples in a JSONL file, one JSON object a line (blank lines skipped).

    Raises ReftError naming ``file:line`` for a line that is not JSON.

    Example:
        >>> _ = (tmp / "bad.jsonl").write_text('{"prompt": "a", "response": "b"}\\n{"prompt": "c",\\n')
        >>> read_jsonl(tmp / "bad.jsonl")
        Traceback (most recent call last):
        interp.errors.ReftError: .../bad.jsonl:2: not valid JSON (Expecting property name enclosed in double
        quotes at column 16); expected one example per line, a JSON object such as {"prompt": "...", "response": "..."}
    """
    path = Path(path)
    if not path.exists():
        raise ReftError(f"dataset file {str(path)!r} does not exist; expected a JSONL file, one example a line")
    if path.is_dir():
        raise ReftError(f"dataset file {str(path)!r} is a folder; expected a JSONL file, one example a line")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ReftError(
            f"{path}: not UTF-8 text: byte {raw[e.start]:#04x} at byte offset {e.start} (line {line}) cannot be "
            f"decoded ({e.reason}); expected a UTF-8 JSONL file: re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ReftError(
                f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno}); expected one example per line, a JSON "
                'object such as {"prompt": "...", "response": "..."}'
            ) from None
        except (ValueError, RecursionError) as e:  # an integer of thousands of digits; nesting too deep
            what = "nested too deeply" if isinstance(e, RecursionError) else str(e).split(";")[0]
            raise ReftError(
                f"{path}:{n}: cannot read this line as JSON ({what}); expected one example per line, a JSON object "
                'such as {"prompt": "...", "response": "..."}'
            ) from None
    return out


def _label_words(label_words):
    if label_words is None:
        return None
    if isinstance(label_words, (list, tuple)):
        return dict(enumerate(label_words))
    return dict(label_words)


def _label_key(label, words, i):
    for k in (label, str(label)):
        if k in words:
            return k
    try:
        if int(label) in words:
            return int(label)
    except (TypeError, ValueError):
        pass
    raise ReftError(f"example {i} has label {label!r}, not among label_words keys {list(words)}")


@dataclass
class Tokenized:
    prompt: list[int]
    response: list[int]
    label: int | None = None  # classification: index into the label words


def tokenize(
    lm,
    examples: list[Example],
    *,
    max_prompt_tokens: int | None = None,
    max_response_tokens: int | None = None,
    add_eos: bool = False,
    label_words=None,
) -> list[Tokenized]:
    """Token ids per example. A long prompt keeps its first token (BOS) and its end; a long response its start."""
    tok = lm.tokenizer
    out = []
    for i, ex in enumerate(examples):
        if isinstance(ex.prompt, str) or isinstance(ex.response, str):
            if tok is None:
                raise ReftError(
                    "this model has no tokenizer; give examples as {'prompt_ids': [...], 'response_ids': [...]}"
                )
        p = list(ex.prompt) if not isinstance(ex.prompt, str) else tok(ex.prompt)["input_ids"]
        r = (
            list(ex.response)
            if not isinstance(ex.response, str)
            else tok(ex.response, add_special_tokens=False)["input_ids"]
        )
        if add_eos and tok is not None and tok.eos_token_id is not None:
            r = r + [tok.eos_token_id]
        if not p:
            raise ReftError(f"example {i}: the prompt {ex.prompt!r} tokenizes to nothing")
        if not r:
            raise ReftError(f"example {i}: the response {ex.response!r} tokenizes to nothing")
        if max_prompt_tokens and len(p) > max_prompt_tokens:
            p = p[:1] + p[len(p) - max_prompt_tokens + 1 :]
        if max_response_tokens:
            r = r[:max_response_tokens]
        label = None
        if ex.label is not None:
            label = list(_label_words(label_words)).index(ex.label) if label_words is not None else int(ex.label)
        out.append(Tokenized(p, r, label))
    return out


@dataclass
class ReftBatch:
    """A right-padded batch of prompt+response rows.

    Attributes:
        batch: input ids, attention mask (and position ids) as :class:`interp.engine.Batch`.
        starts, lengths: where each prompt lies in its row (prompt ``b`` is ``[starts[b], starts[b]+lengths[b])``).
        pred_at: (B, k) columns whose logits predict the response tokens ``labels`` (B, k).
        label_mask: (B, k) True for real response tokens (rows with shorter responses are padded).
        vocab: classification only: the label words' token ids; ``labels`` (B, 1) then index into them and
            the rows hold the prompt only (the answer is read at its last token).
    """

    batch: Batch
    starts: list[int]
    lengths: list[int]
    pred_at: torch.Tensor
    labels: torch.Tensor
    label_mask: torch.Tensor
    vocab: torch.Tensor | None = None

    def __len__(self):
        return len(self.batch)

    @property
    def prompt_mask(self) -> torch.Tensor:
        """(B, T) True on each row's prompt tokens: where ReFT positions are counted."""
        cols = torch.arange(self.batch.input_ids.shape[1], device=self.batch.input_ids.device)
        starts = torch.tensor(self.starts, device=cols.device)[:, None]
        return (cols >= starts) & (cols < starts + torch.tensor(self.lengths, device=cols.device)[:, None])

    @property
    def last_prompt(self) -> torch.Tensor:
        """(B, 1) column of each prompt's last token (its logits give a classifier's answer)."""
        return torch.tensor([[s + n - 1] for s, n in zip(self.starts, self.lengths)])


def collate(lm, rows: list[Tokenized], vocab: torch.Tensor | None = None) -> ReftBatch:
    """Right-pad ``prompt + response`` rows into one :class:`ReftBatch` (prompt only when ``vocab`` is given)."""
    classify = vocab is not None
    seqs = [r.prompt if classify else r.prompt + r.response for r in rows]
    batch = pad(lm, seqs, padding_side="right")  # the one padding rule (interp.inputs.pad)
    k = 1 if classify else max(len(r.response) for r in rows)
    B = len(rows)
    pred_at = torch.zeros(B, k, dtype=torch.long)
    labels = torch.zeros(B, k, dtype=torch.long)
    label_mask = torch.zeros(B, k, dtype=torch.bool)
    for b, r in enumerate(rows):
        n, m = len(r.prompt), (1 if classify else len(r.response))
        pred_at[b, :m] = torch.arange(n - 1, n - 1 + m)
        pred_at[b, m:] = n - 1  # padding slots reuse a real column; the mask drops them from the loss
        labels[b, :m] = torch.tensor([r.label] if classify else r.response)
        label_mask[b, :m] = True
    dev = lm.device
    return ReftBatch(
        batch,
        [0] * B,
        [len(r.prompt) for r in rows],
        pred_at.to(dev),
        labels.to(dev),
        label_mask.to(dev),
        None if vocab is None else vocab.to(dev),
    )


def label_vocab(lm, label_words) -> torch.Tensor | None:
    """Token ids of the label words (each must be one token), in the order of ``label_words``."""
    words = _label_words(label_words)
    if words is None:
        return None
    ids = []
    for key, word in words.items():
        t = lm.tokenizer(word, add_special_tokens=False)["input_ids"] if isinstance(word, str) else [int(word)]
        if len(t) != 1:
            raise ReftError(
                f"label word {word!r} (label {key!r}) is {len(t)} tokens; expected one, e.g. ' good' "
                "(mind the leading space)"
            )
        ids.append(t[0])
    if len(set(ids)) != len(ids):
        raise ReftError(f"label words {list(words.values())} map to repeated token ids {ids}; use distinct words")
    return torch.tensor(ids)
