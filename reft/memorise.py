"""Memorisation (Wu et al. 2024, appendix F): how long a fixed text one rank-1 LoReFT at one position can store.

Example:
    >>> res = memorise(lm, [11, 12, 13, 14], layer=0, steps=3, lr=1e-2, prompt=[1, 5, 7])
    >>> res.length, res.steps, 0 <= res.recovered <= 4       # at most 3 updates (fewer if all 4 are recovered)
    (4, 3, True)
    >>> prefix_match([4, 5, 6, 0, 7], [4, 5, 6, 9, 7])         # exact leading tokens (the 4th differs)
    3

A rank-1 LoReFT edits the residual stream (``resid_post``) of one layer at the last prompt token only; it is
trained with the cross-entropy of the whole text after the prompt. The model then has to reproduce the text
from that one edited vector (the edited state reaches every later token through attention, the KV cache).

What is counted: the longest prefix of the text whose every token is the argmax given the prompt and the
text before it (teacher forcing), read from the same forward that computes the loss, so the check is free.
Up to its first error a teacher-forced argmax prefix *is* greedy decoding: each greedy step sees exactly the
tokens teacher forcing feeds, so both agree on the first ``recovered`` tokens and on the token after them.
``verify=True`` also decodes greedily (:func:`reft.generate_ids`, the edit on the prompt pass only) and
records that count (``greedy``), which is what the paper reports. Training stops as soon as the whole text
is recovered; the weights of the best step seen are kept.

The text: :data:`PASSAGE`, an English passage written for this project (no published text), tokenized and
truncated to each length by :func:`passage_ids`; or any string or list of token ids.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch

from interp import optim
from interp.checks import as_float
from interp.errors import TrainConfigError
from interp.positions import last
from interp.sites import Site

from . import data as _data
from .generate import generate_ids
from .interventions import LoReFT, ReftError
from .model import attach
from .train import response_loss

PROMPT = "Recite the passage.\n"  # the default prompt for a model with a tokenizer
MAX_LENGTH = 643  # tokens of PASSAGE under the embedded Gemma-3 tokenizer (the longest text a cell can take)

# Written for this project (public domain, no published source): plain prose of ~3,300 characters, which the
# Gemma-3 tokenizer turns into more than 600 tokens, so that every length up to 512 is a prefix of it.
PASSAGE = (
    "The lighthouse on the northern cape was built of grey stone, and for ninety years it had been kept by "
    "one family. Every evening the keeper climbed the one hundred and twelve steps of the spiral stair, "
    "trimmed the wick, polished the great lens with a soft cloth, and wrote the weather into a leather book. "
    "The entries were short: wind from the west, rain at dusk, two fishing boats returned before dark. On "
    "clear nights the beam reached twenty miles across the water, and sailors said they could feel it on "
    "their faces long before they saw the tower.\n\n"
    "Marta was eleven when her grandfather first let her carry the oil can. She counted the steps aloud, "
    "because he had told her that a keeper who loses count is a keeper who is thinking about something else. "
    "At the top she watched him light the lamp, and she held her breath while the flame grew steady behind "
    "the glass. Then he showed her how to wind the clockwork that turned the lens, eleven full turns of the "
    "brass handle, no more and no fewer, and how to listen for the soft tick that meant the gears had caught.\n\n"
    "In winter the storms came one after another. Waves broke over the lower rocks and threw spray as high as "
    "the kitchen window, and the whole tower hummed like a bell when the wind turned north. On those nights "
    "nobody slept. The keeper sat by the lamp with a pot of tea, and Marta sat on the stair below him with a "
    "blanket around her shoulders, listening to the radio for ships in trouble. Once, in the year the harbour "
    "froze, a cargo boat lost its engine off the point, and they watched its lights drift toward the reef for "
    "an hour before the lifeboat reached it. Her grandfather wrote only one line that night: all crew safe.\n\n"
    "When she was older Marta went away to the city to study engineering. She learned about electric motors, "
    "about lenses ground by machines to a thousandth of a millimetre, and about automatic lamps that needed no "
    "one to light them. She wrote long letters home, and her grandfather answered with short ones, mostly "
    "about the weather. Three winters later a letter came from the harbour office instead. The lighthouse was "
    "to be automated in the spring, and the keeper would retire to a cottage in the village below.\n\n"
    "She came back for the last night. Together they climbed the stair, and this time he let her count. At the "
    "top he handed her the cloth and stood aside while she polished the lens, slowly, the way he had taught "
    "her, and then she wound the clockwork, eleven turns, and listened for the tick. The beam swept out over "
    "the dark water as it had every night for ninety years. Her grandfather opened the leather book, wrote the "
    "weather one more time, and gave her the pen so that she could sign her name below his.\n\n"
    "The new lamp works well. It turns on by itself at dusk and off at dawn, and a technician visits twice a "
    "year. But people in the village say that on the first clear night of every spring a light still moves in "
    "the window of the old keeper's room, and that the beam, for a moment, seems to pause before it sweeps on."
)


@dataclass
class Memorised:
    """One memorisation run: ``recovered`` of ``length`` tokens after ``steps`` updates (``seconds`` of training).

    ``recovered`` is the teacher-forced argmax prefix of the kept (best) weights; ``greedy`` the prefix greedy
    decoding reproduces (None unless ``verify=True``); ``best_step`` the update count those weights had.
    """

    recovered: int
    length: int
    steps: int
    seconds: float
    layer: int
    rank: int
    lr: float
    best_step: int = 0
    greedy: int | None = None
    final_loss: float = float("nan")
    losses: list[float] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.recovered == self.length

    def to_dict(self, *, losses: bool = False) -> dict:
        d = asdict(self)
        if not losses:
            d.pop("losses")
        return d


def prefix_match(pred: Sequence[int] | torch.Tensor, target: Sequence[int] | torch.Tensor) -> int:
    """How many leading tokens of ``pred`` equal ``target``'s (up to the shorter of the two).

    Example:
        >>> prefix_match([1, 2, 3], [1, 2, 3, 4]), prefix_match([9, 2], [1, 2]), prefix_match([], [1])
        (3, 0, 0)
    """
    pred = [int(t) for t in (pred.tolist() if isinstance(pred, torch.Tensor) else pred)]
    target = [int(t) for t in (target.tolist() if isinstance(target, torch.Tensor) else target)]
    n = 0
    for a, b in zip(pred, target):
        if a != b:
            break
        n += 1
    return n


def passage_ids(lm, length: int | None = None, text: str = PASSAGE) -> list[int]:
    """The first ``length`` token ids of ``text`` (no special tokens); a ReftError if it is shorter.

    Example:
        >>> passage_ids(lm, 4)                  # the tiny test model has no tokenizer
        Traceback (most recent call last):
        interp.errors.ReftError: this model has no tokenizer to read the passage with; give the text as token ids
    """
    if lm.tokenizer is None:
        raise ReftError("this model has no tokenizer to read the passage with; give the text as token ids")
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    if length is not None:
        if length > len(ids):
            raise ReftError(f"the passage has {len(ids)} tokens; length {length} asks for more; give a longer text")
        ids = ids[:length]
    return list(ids)


def _ids(lm, x, what: str) -> list[int]:
    if isinstance(x, str):
        if lm.tokenizer is None:
            raise ReftError(f"this model has no tokenizer; give the {what} as a list of token ids")
        return list(lm.tokenizer(x, add_special_tokens=what == "prompt")["input_ids"])
    ids = [int(t) for t in (x.tolist() if isinstance(x, torch.Tensor) else x)]
    if not ids:
        raise ReftError(f"the {what} is empty; expected at least one token")
    return ids


def memorise(
    lm,
    text_ids_or_text,
    *,
    layer: int,
    rank: int = 1,
    steps: int = 300,
    lr: float = 4e-3,
    prompt=PROMPT,
    max_seconds: float | None = None,
    seed: int = 0,
    verify: bool = False,
    max_grad_norm: float = 1.0,
) -> Memorised:
    """Train a rank-``rank`` LoReFT at ``Site("resid_post", layer, last())`` to emit the text after ``prompt``.

    Args:
        text_ids_or_text: the text to store, a string (tokenized without special tokens) or token ids.
        steps: at most this many AdamW updates (constant ``lr``, no weight decay, gradients clipped to
            ``max_grad_norm``); training stops early once every token is recovered.
        prompt: a string (tokenized with BOS) or token ids; the edit is at its last token.
        max_seconds: also stop after this much training time (a budget for long texts).
        verify: also decode greedily with the kept weights and record that prefix in ``greedy``.

    Returns:
        A :class:`Memorised`; ``.recovered`` is the longest prefix recovered exactly.
    """
    target = _ids(lm, text_ids_or_text, "text")
    prompt_ids = _ids(lm, prompt, "prompt")
    if not 0 <= layer < lm.n_layers:
        raise ReftError(f"layer {layer}: the model has layers 0..{lm.n_layers - 1}")
    options = {"steps": steps, "lr": lr, "max_grad_norm": max_grad_norm, "seed": seed}
    optim.check_options(options, owner="memorise", error=TrainConfigError)
    if max_seconds is not None:
        as_float(max_seconds, "memorise: max_seconds", low=0, open_low=True, error=TrainConfigError)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        rlm = attach(lm, {Site("resid_post", layer, last()): LoReFT(lm.d_model, rank=rank)})
    rows = _data.tokenize(lm, [_data.Example(tuple(prompt_ids), tuple(target))])
    rb = _data.collate(lm, rows)
    n = len(target)
    losses: list[float] = []  # one per forward: before each update, and of the weights kept at the end
    best = {"got": -1, "step": 0, "state": None, "now": 0}

    def loss(batch):  # scores the weights as they are now, before this step's update
        logits = rlm.logits(batch)  # (1, n, V) at the columns predicting each text token
        got = prefix_match(logits[0].argmax(-1), target)
        value = response_loss(logits, batch)
        losses.append(value.item())
        if got > best["got"]:
            state = {k: v.detach().clone() for k, v in rlm.interventions.state_dict().items()}
            best.update(got=got, step=len(losses) - 1, state=state)
        best["now"] = got
        return value

    def done(hist) -> bool:  # every token recovered, or the time budget spent: no further update
        return best["now"] == n or (max_seconds is not None and hist.seconds >= max_seconds)

    rlm.train()
    try:  # constant lr, no weight decay, clipped gradients
        hist = optim.train(
            rlm.trainable_parameters(), loss, itertools.repeat(rb), steps=steps, lr=lr, schedule="constant",
            max_grad_norm=max_grad_norm, stop=done,
        )  # fmt: skip
        spent = hist.seconds
        if not hist.stopped:  # all `steps` updates taken: score the last weights too
            t0 = time.perf_counter()
            with torch.no_grad():
                loss(rb)
            spent += time.perf_counter() - t0
    finally:
        rlm.eval()
    rlm.interventions.load_state_dict(best["state"])
    got, step = best["got"], best["step"]
    res = Memorised(got, n, hist.steps, spent, layer, rank, lr, step, None, losses[step], losses)
    if verify:
        res.greedy = greedy_prefix(rlm, prompt_ids, target, upto=min(n, got + 1))
    res.model = rlm  # the trained ReftModel (not part of to_dict)
    return res


@torch.no_grad()
def greedy_prefix(rlm, prompt_ids: list[int], target: list[int], *, upto: int | None = None) -> int:
    """The prefix of ``target`` that greedy decoding from ``prompt_ids`` reproduces (decoding ``upto`` tokens;
    decoding stops at EOS, so a text holding the EOS token counts up to it).

    Example:
        >>> greedy_prefix(rlm, [1, 5, 7], [3, 4], upto=2) <= 2
        True
    """
    upto = len(target) if upto is None else upto
    g = generate_ids(rlm, torch.tensor([prompt_ids]), max_new_tokens=upto)
    return prefix_match(g.new_ids[0], target[:upto])


def cells_of(lengths=(32, 64, 128, 256, 512), layers=(3, 9, 15), *, layer=9, layers_at=128) -> list[tuple[int, int]]:
    """``(length, layer)`` cells: every length at ``layer``, then every one of ``layers`` at length ``layers_at``.

    Example:
        >>> cells_of((32, 64), (3, 9), layer=9, layers_at=64)
        [(32, 9), (64, 9), (64, 3)]
    """
    cells = [(int(n), int(layer)) for n in lengths]
    for lay in layers:
        if (int(layers_at), int(lay)) not in cells:
            cells.append((int(layers_at), int(lay)))
    return cells


def memorise_table(
    lm,
    lengths=(32, 64, 128, 256, 512),
    layers=(3, 9, 15),
    *,
    layer: int = 9,
    layers_at: int = 128,
    cells: Sequence[tuple[int, int]] | None = None,
    text=None,
    report=None,
    **kw,
) -> list[dict]:
    """:func:`memorise` on each ``(length, layer)`` cell (default :func:`cells_of`): one row per cell.

    Each cell stores the first ``length`` tokens of ``text`` (default: :data:`PASSAGE` through the model's
    tokenizer; token ids for a model without one). ``kw`` goes to :func:`memorise`; ``report(row)`` is called
    after each cell.

    Example:
        >>> ids = list(range(10, 40))
        >>> rows = memorise_table(lm, cells=[(4, 0), (8, 1)], text=ids, steps=3, lr=1e-2, prompt=[1, 2])
        >>> [(r["length"], r["layer"], r["steps"] <= 3) for r in rows]
        [(4, 0, True), (8, 1, True)]
    """
    cells = list(cells) if cells is not None else cells_of(lengths, layers, layer=layer, layers_at=layers_at)
    longest = max(n for n, _ in cells)
    if text is None or isinstance(text, str):
        ids = passage_ids(lm, longest, PASSAGE if text is None else text)
    else:
        ids = _ids(lm, text, "text")
        if len(ids) < longest:
            raise ReftError(f"the text has {len(ids)} tokens; a cell asks for {longest}")
    rows = []
    for n, lay in cells:
        res = memorise(lm, ids[:n], layer=lay, **kw)
        row = res.to_dict()
        row["fraction"] = res.recovered / n
        rows.append(row)
        if report is not None:
            report(row)
    return rows


def plot_table(rows: list[dict], *, layer: int | None = None, layers_at: int | None = None):
    """Two panels: recovered prefix against text length (at ``layer``), and by layer (at length ``layers_at``).

    Example:
        >>> rows = [{"length": 4, "layer": 1, "recovered": 4}, {"length": 8, "layer": 1, "recovered": 5},
        ...         {"length": 8, "layer": 0, "recovered": 2}]
        >>> fig = plot_table(rows, layer=1, layers_at=8)
        >>> len(fig.axes)
        2
    """
    import matplotlib.pyplot as plt

    layer = rows[0]["layer"] if layer is None else layer
    by_len = sorted((r["length"], r["recovered"], r.get("steps")) for r in rows if r["layer"] == layer)
    layers_at = max(n for n, _, _ in by_len) if layers_at is None else layers_at
    by_layer = sorted((r["layer"], r["recovered"], r.get("steps")) for r in rows if r["length"] == layers_at)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    xs = [n for n, _, _ in by_len]
    a.plot(xs, xs, ls="--", color="0.6", label="whole text")
    a.plot(xs, [r for _, r, _ in by_len], marker="o", label="recovered prefix")
    for n, r, k in by_len:
        if k is not None:
            a.annotate(f"{k} steps", (n, r), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    a.set_xscale("log", base=2)
    a.set_xticks(xs, [str(x) for x in xs])
    a.set(xlabel="text length (tokens)", ylabel="tokens recovered exactly", title=f"rank-1 LoReFT, layer {layer}")
    a.legend(frameon=False)
    bars = b.bar([str(lay) for lay, _, _ in by_layer], [r for _, r, _ in by_layer], color="C1")
    for bar, (_, r, k) in zip(bars, by_layer):
        if k is not None:
            b.annotate(
                f"{k} steps",
                (bar.get_x() + bar.get_width() / 2, r),
                textcoords="offset points",
                xytext=(0, 3),
                ha="center",
                fontsize=7,
            )
    b.axhline(layers_at, ls="--", color="0.6")
    b.set(xlabel="layer", ylabel="tokens recovered exactly", title=f"{layers_at}-token text, by layer")
    fig.tight_layout()
    return fig


__all__ = ["PASSAGE", "PROMPT", "Memorised", "memorise", "memorise_table", "prefix_match", "passage_ids", "cells_of"]
