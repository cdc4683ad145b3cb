"""How results show themselves in a notebook: a short ``repr`` and an HTML table, never a whole tensor.

Example:
    >>> res = interchange(lm, base, source, at=Site("resid_post", 1, last()))
    >>> print(repr(res)[:45])                      # shape, where, then the top token of the first prompts
    DIIResult((4, 97) logits at the last token; t
    >>> g = Grid("iia", torch.tensor([[0.5, 1.0]]), {"layers": [3], "positions": ["name", "last"]})
    >>> g
    Grid(iia: layers [3] x positions ['name', 'last']; best layer 3, position 'last': 1.00)
    >>> "<table" in g._repr_html_()                # Jupyter shows the grid as a coloured table
    True

:class:`interp.DIIResult`, :class:`interp.Grid` and :class:`interp.DASResult` call these functions for their
``__repr__`` (and the first two for ``_repr_html_``); they read the results' public fields only.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import torch

ROWS = 3  # prompts summarised in a repr
HTML_ROWS = 8  # prompts shown in a DIIResult's table
HTML_CELLS = 4096  # a Grid larger than this shows its summary only
LABELS = 5  # axis labels listed before eliding the middle ones


# ------------------------------------------------------------------------------------------- tokens


def token_text(tokenizer, token_id: int, width: int = 16) -> str:
    """A token as its quoted text (``' Mary'``), or its id without a tokenizer; long texts are cut at ``width``.

    Example:
        >>> token_text(None, 17)
        '17'
    """
    if tokenizer is None:
        return str(token_id)
    text = repr(tokenizer.decode([token_id]))
    return text if len(text) <= width else text[: width - 2] + "…" + text[-1]


def top_tokens(logits: torch.Tensor, tokenizer, k: int, vocab=None) -> list[list[tuple[str, float]]]:
    """Per row of ``logits`` (n, vocab): the ``k`` most likely tokens as (text, probability), most likely first.

    With ``vocab`` (token ids, one per column) the columns are those words and probabilities are among them.

    Example:
        >>> top_tokens(torch.tensor([[0.0, 2.0, 1.0]]), None, 2)
        [[('1', 0.665...), ('2', 0.244...)]]
        >>> top_tokens(torch.tensor([[0.0, 2.0]]), None, 1, vocab=torch.tensor([40, 41]))
        [[('41', 0.880...)]]
    """
    p, i = logits.detach().float().softmax(-1).topk(min(k, logits.shape[-1]), dim=-1)
    if vocab is not None:
        i = vocab.to(i.device)[i]
    return [[(token_text(tokenizer, int(t)), float(q)) for t, q in zip(ti, pi)] for ti, pi in zip(i, p)]


def labels_text(labels: Sequence, n: int = LABELS) -> str:
    """Axis labels as a list, the middle elided when there are more than ``n``: ``[0, 1, 2, …, 17]``.

    Example:
        >>> labels_text(list(range(18)))
        '[0, 1, 2, …, 17] (18)'
    """
    labels = list(labels)
    if len(labels) <= n:
        return repr(labels)
    head = ", ".join(repr(x) for x in labels[: n - 2])
    return f"[{head}, …, {labels[-1]!r}] ({len(labels)})"


# ------------------------------------------------------------------------------------------- DII


def _where(logits: torch.Tensor) -> str:
    return "at the last token" if logits.dim() == 2 else f"at {logits.shape[1]} positions per prompt"


def dii_repr(result) -> str:
    """``DIIResult((4, 262144) logits at the last token; top-1 of 4 prompts: ' Mary' 0.81, ' John' 0.77, …)``."""
    logits, tokenizer = result.logits, getattr(result.lm, "tokenizer", None)
    vocab = getattr(result, "vocab", None)
    over = "" if vocab is None else f" over {vocab.numel()} words"
    head = f"DIIResult({tuple(logits.shape)} logits{over} {_where(logits)}"
    n = logits.shape[0]
    if n == 0 or logits.shape[-1] == 0:
        return head + ")"
    last = logits if logits.dim() == 2 else logits[:, -1]
    tops = [f"{t} {p:.2f}" for ((t, p),) in top_tokens(last[:ROWS], tokenizer, 1, vocab)]
    more = ", …" if n > ROWS else ""
    return f"{head}; top-1 of {n} prompt{'s' * (n != 1)}: {', '.join(tops)}{more})"


def dii_html(result, k: int = 3) -> str:
    """A table of the first prompts' ``k`` most likely next tokens (at the last position read)."""
    logits, tokenizer = result.logits, getattr(result.lm, "tokenizer", None)
    n = logits.shape[0]
    caption = f"DIIResult: logits {tuple(logits.shape)} {_where(logits)}"
    if n == 0 or logits.shape[-1] == 0:
        return f"<p>{html.escape(caption)}</p>"
    last = logits if logits.dim() == 2 else logits[:, -1]
    rows = top_tokens(last[:HTML_ROWS], tokenizer, k, getattr(result, "vocab", None))
    head = "".join(f"<th>top {j + 1}</th>" for j in range(len(rows[0])))
    body = "".join(
        f"<tr><td>{i}</td>" + "".join(f"<td>{html.escape(t)} {p:.2f}</td>" for t, p in row) + "</tr>"
        for i, row in enumerate(rows)
    )
    if n > HTML_ROWS:
        body += f"<tr><td colspan='{len(rows[0]) + 1}'>… {n - HTML_ROWS} more prompts</td></tr>"
    return f"<table><caption>{html.escape(caption)}</caption><tr><th>prompt</th>{head}</tr>{body}</table>"


# ------------------------------------------------------------------------------------------- Grid


def _number(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:.2f}"


def grid_repr(grid) -> str:
    """``Grid(effect: layers [0, 1, 2, …, 17] (18) x positions [...]; best layer 16, position 'end': 0.98)``."""
    axes = " x ".join(f"{k} {labels_text(v)}" for k, v in grid.axes.items())
    best = grid.best() if grid.values.numel() else {}
    value = best.pop(grid.name, float("nan"))
    where = ", ".join(f"{k} {v!r}" if isinstance(v, str) else f"{k} {v}" for k, v in best.items())
    text = f"Grid({grid.name}: {axes}" + (f"; best {where}: {_number(value)}" if best else "")
    if grid.extra:
        text += f"; extra {list(grid.extra)}"
    if getattr(grid, "per_pair", None) is not None:
        text += f"; per_pair over {grid.per_pair.shape[-1]} pairs"
    if grid.meta.get("component"):
        text += f"; component {grid.meta['component']!r}"
    return text + ")"


def _colour(v: float, lo: float, hi: float, diverging: bool) -> str:
    """Background colour of a cell: blue-white-red about 0 (effects), white to green (accuracies); NaN grey."""
    if math.isnan(v):
        return "#bdbdbd"
    if diverging:
        t = max(-1.0, min(1.0, v / hi)) if hi else 0.0
        r, g, b = (255, int(255 * (1 - t)), int(255 * (1 - t))) if t >= 0 else (int(255 * (1 + t)),) * 2 + (255,)
    else:
        t = max(0.0, min(1.0, (v - lo) / (hi - lo))) if hi > lo else 0.0
        r, g, b = int(255 * (1 - 0.8 * t)), int(255 * (1 - 0.35 * t)), int(255 * (1 - 0.8 * t))
    return f"#{r:02x}{g:02x}{b:02x}"


def _table(values: torch.Tensor, rows: list, cols: list, diverging: bool, title: str) -> str:
    finite = values[torch.isfinite(values)]
    hi = max(1.0, float(finite.abs().max())) if diverging and finite.numel() else 1.0
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = ""
    for i in reversed(range(len(rows))):  # layer 0 at the bottom, as the heatmaps draw it
        cells = "".join(
            f"<td style='background:{_colour(float(v), 0.0, hi, diverging)};color:black'>{_number(float(v))}</td>"
            for v in values[i]
        )
        body += f"<tr><th>{html.escape(str(rows[i]))}</th>{cells}</tr>"
    return f"<table><caption>{html.escape(title)}</caption><tr><th></th>{head}</tr>{body}</table>"


def grid_html(grid) -> str:
    """The grid as coloured tables over its last two axes (one per label of any leading axis), small grids only."""
    summary = f"<p>{html.escape(grid_repr(grid))}</p>"
    values = grid.values.detach().float().cpu()
    if values.dim() == 0 or values.numel() > HTML_CELLS:
        return summary
    names, labels = list(grid.axes), list(grid.axes.values())
    if values.dim() == 1:
        values, names, labels = values[None], ["", *names], [[grid.name], *labels]
    lead = values.reshape(-1, *values.shape[-2:])
    lead_labels = [[]] if values.dim() == 2 else [list(t) for t in _product(labels[:-2])]
    diverging = grid.name == "effect"
    tables = []
    for block, fixed in zip(lead, lead_labels):
        where = ", ".join(f"{n.removesuffix('s')} {v}" for n, v in zip(names, fixed))
        axes = f"{names[-2]} x {names[-1]}" if names[-2] else names[-1]
        title = f"{grid.name} ({axes}" + (f", {where})" if where else ")")
        tables.append(_table(block, labels[-2], labels[-1], diverging, title))
    return summary + "".join(tables)


def _product(lists: list[list]) -> list[tuple]:
    out: list[tuple] = [()]
    for labels in lists:
        out = [(*t, x) for t in out for x in labels]
    return out


# ------------------------------------------------------------------------------------------- PairScores


def _signed(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:+.2f}"


def scores_repr(scores) -> str:
    """``PairScores(40 pairs: iia 0.60, iia_labels 0.75, logit_diff +1.20 (clean -0.90), log_odds_ratio +2.10)``."""
    n, k = len(scores), scores.n_contrast
    parts = [] if scores.iia is None else [f"iia {_number(scores.iia)}"]
    parts.append(f"iia_labels {_number(scores.iia_labels)}" + (f" ({k} of {n} with distinct labels)" if k < n else ""))
    parts.append(f"logit_diff {_signed(scores.mean_logit_diff)} (clean {_signed(scores.mean_clean_logit_diff)})")
    parts.append(f"log_odds_ratio {_signed(scores.mean_log_odds_ratio)}")
    return f"PairScores({n} pair{'s' * (n != 1)}: " + ", ".join(parts) + ")"


# ------------------------------------------------------------------------------------------- DAS


def das_repr(result) -> str:
    """``DASResult(Site('resid_post', 14, last()), LowRankRotation rank 1 of 640, variables ('G',), IIA ...)``."""
    basis = result.basis
    shape = f"rank {getattr(basis, 'rank', '?')} of {getattr(basis, 'd_model', '?')}"
    scores = ", ".join(
        f"{name} {_number(v)}" for name, v in (("train", result.iia_train), ("test", result.iia_test)) if v is not None
    )
    steps = result.history[-1].get("step", len(result.history)) if result.history else 0
    return (
        f"DASResult({result.site!r}, {type(basis).__name__} {shape}, variables {tuple(result.variables)}"
        + (f", IIA {scores}" if scores else ", IIA not measured")
        + f", {steps} steps)"
    )


__all__ = [
    "token_text",
    "top_tokens",
    "labels_text",
    "dii_repr",
    "dii_html",
    "grid_repr",
    "grid_html",
    "scores_repr",
    "das_repr",
]
