"""Layer x position images: heatmaps of patching effects, IIA, ReFT edit sizes, logit lens, and a learned basis.

Example:
    >>> ax = plot_iia_grid([[0.5, 0.9], [0.6, 1.0]], layers=[0, 1], positions=["name", "last"])
    >>> ax.get_ylabel(), ax.images[0].get_cmap().name
    ('layer', 'viridis')

Layer 0 is drawn at the **bottom** (depth grows upwards), token labels run along the x axis, rotated, and NaN
cells (sites not evaluated) are grey.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import EFFECT_LABEL, as_array, matrix_image

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn (interp.viz.base)
    from matplotlib.axes import Axes


def heatmap(
    values: Any,
    *,
    rows: Sequence[Any] | None = None,
    cols: Sequence[Any] | None = None,
    title: str | None = None,
    xlabel: str = "position",
    ylabel: str = "layer",
    cbar_label: str | None = None,
    ax: Axes | None = None,
    cmap: str = "RdBu_r",
    center: float | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    annotate: bool = False,
) -> Axes:
    """A layers x positions grid with token labels, a labelled colour bar and NaN cells in grey.

    Example:
        >>> effect = torch.rand(12, 4) * 2 - 1                  # (layers, positions), e.g. a Grid's effect
        >>> ax = heatmap(effect, rows=range(12), cols=[" When", " Mary", " John", " to"],
        ...              title="Activation patching", cbar_label="effect", center=0.0)
        >>> ax.get_title(), ax.get_xlabel(), ax.get_ylabel()
        ('Activation patching', 'position', 'layer')

    Row 0 (layer 0) is drawn at the **bottom**; columns run left to right with their labels rotated.

    Args:
        values: (n_rows, n_cols) tensor, array, nested list or DataFrame; NaN marks a cell not computed.
        rows: one label per row (layers); default: the DataFrame index, else 0..n_rows-1.
        cols: one label per column (tokens / positions); default: the DataFrame columns, else 0..n_cols-1.
        title: axes title.
        xlabel: x-axis label.
        ylabel: y-axis label.
        cbar_label: colour-bar label (say what the number is, with its units).
        ax: axes to draw on; a new figure when None.
        cmap: matplotlib colormap name.
        center: value drawn white in a diverging map; the limits are made symmetric about it.
        vmin: lower colour limit (default: from the data).
        vmax: upper colour limit (default: from the data).
        annotate: write each cell's value in it (for small grids).

    Returns:
        The Axes drawn on.
    """
    return matrix_image(
        values,
        rows=rows,
        cols=cols,
        origin="lower",
        title=title,
        xlabel=xlabel,
        ylabel=ylabel,
        cbar_label=cbar_label,
        ax=ax,
        cmap=cmap,
        center=center,
        vmin=vmin,
        vmax=vmax,
        annotate=annotate,
        name="heatmap",
    )


def plot_patching_grid(
    effect: Any,
    layers: Sequence[Any],
    positions: Sequence[Any],
    *,
    ax: Axes | None = None,
    title: str = "Activation patching: effect per layer and position",
    annotate: bool = False,
) -> Axes:
    """Patching effect per (layer, position), diverging and centred on 0, on a scale of at least [-1, 1].

    Example:
        >>> res = {"effect": [[0.0, 0.1, 0.2], [0.0, 0.3, 1.0]], "layers": [0, 1], "positions": ["bos", "IO", "end"]}
        >>> ax = plot_patching_grid(res["effect"], res["layers"], res["positions"])   # e.g. `interp patch --json`

    Args:
        effect: (n_layers, n_positions); 0 = unchanged from the base run, 1 = fully the source's.
        layers: one label per row, layer 0 first (drawn at the bottom).
        positions: one token label per column.
        ax: axes to draw on; a new figure when None.
        title: axes title.
        annotate: write each cell's value in it.

    Returns:
        The Axes drawn on.
    """
    a = as_array(effect, name="plot_patching_grid: effect", ndim=2)
    finite = a[np.isfinite(a)]
    lim = max(1.0, float(np.max(np.abs(finite)))) if finite.size else 1.0  # comparable colours across grids
    return heatmap(
        a,
        rows=layers,
        cols=positions,
        title=title,
        cbar_label=EFFECT_LABEL,
        ax=ax,
        cmap="RdBu_r",
        center=0.0,
        vmin=-lim,
        vmax=lim,
        annotate=annotate,
    )


def plot_iia_grid(
    iia: Any,
    layers: Sequence[Any],
    positions: Sequence[Any],
    *,
    ax: Axes | None = None,
    title: str = "DAS: interchange intervention accuracy",
    annotate: bool = False,
) -> Axes:
    """IIA per (layer, position) on a fixed sequential 0..1 scale.

    Example:
        >>> sweep = sweep_das(lm, train, test, layers=[0, 1], positions={"a": at(1), "last": last()}, steps=1)
        >>> ax = plot_iia_grid(sweep.iia[0], sweep.layers, sweep.positions)   # the first rank; sweep.plot() does this

    Args:
        iia: (n_layers, n_positions) accuracies in [0, 1]; NaN for sites not trained.
        layers: one label per row, layer 0 first (drawn at the bottom).
        positions: one token label per column.
        ax: axes to draw on; a new figure when None.
        title: axes title.
        annotate: write each cell's value in it.

    Returns:
        The Axes drawn on.
    """
    return heatmap(
        iia,
        rows=layers,
        cols=positions,
        title=title,
        cbar_label="IIA",
        ax=ax,
        cmap="viridis",
        vmin=0.0,
        vmax=1.0,
        annotate=annotate,
    )


def plot_edit_norms(
    norms: Any,
    layers: Sequence[Any],
    positions: Sequence[Any],
    *,
    ax: Axes | None = None,
    title: str = "ReFT edit size per layer and position",
    cbar_label: str = "mean ‖h' − h‖₂",
    annotate: bool = False,
) -> Axes:
    """The size of a ReFT edit per (layer, position); positions not intervened on are NaN (grey).

    Example:
        >>> nan = float("nan")                                    # first(1)+last(1): the middle tokens are not edited
        >>> norms = [[2.0, nan, nan, 1.5], [3.1, nan, nan, 2.2]]
        >>> ax = plot_edit_norms(norms, layers=[3, 9], positions=["<bos>", " Who", " you", "?"])

    Args:
        norms: (n_layers, n_positions) non-negative norms, NaN where nothing is edited.
        layers: one label per row, layer 0 first (drawn at the bottom).
        positions: one token label per column.
        ax: axes to draw on; a new figure when None.
        title: axes title.
        cbar_label: colour-bar label (which norm, averaged how).
        annotate: write each cell's value in it.

    Returns:
        The Axes drawn on.
    """
    return heatmap(
        norms,
        rows=layers,
        cols=positions,
        title=title,
        cbar_label=cbar_label,
        ax=ax,
        cmap="magma",
        vmin=0.0,
        annotate=annotate,
    )


def plot_logit_lens(
    values: Any,
    layers: Sequence[Any],
    positions: Sequence[Any],
    *,
    kind: str = "prob",
    token: str | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    annotate: bool = False,
) -> Axes:
    """Logit lens: a chosen token's probability (0..1) or rank (log scale) per (layer, position).

    Example:
        >>> lens = logit_lens(lm, base[:1], pos=first(6))                  # one prompt, every token
        >>> ax = plot_logit_lens(lens.prob(5)[:, 0], lens.layers, list(range(6)), token="5")
        >>> ax.get_title()
        "logit lens: p('5')"
        >>> ax = plot_logit_lens(lens.rank(5)[:, 0], lens.layers, list(range(6)), kind="rank")

    Args:
        values: (n_layers, n_positions): probabilities in [0, 1] (``kind="prob"``) or ranks, 0 = top (``"rank"``).
        layers: one label per row, layer 0 first (drawn at the bottom).
        positions: one token label per column.
        kind: ``"prob"`` or ``"rank"`` (coloured by log10(1 + rank), so rank 0 is brightest).
        token: the token's text for the title and colour bar.
        ax: axes to draw on; a new figure when None.
        title: axes title (default: says what is drawn).
        annotate: write each cell's value in it.

    Returns:
        The Axes drawn on.
    """
    if kind not in ("prob", "rank"):
        raise ValueError(f"plot_logit_lens: kind must be 'prob' or 'rank'; got {kind!r}")
    a = as_array(values, name="plot_logit_lens: values", ndim=2)
    what = f"p({token!r})" if kind == "prob" else f"rank of {token!r}"
    what = what if token is not None else ("probability" if kind == "prob" else "rank")
    title = title or f"logit lens: {what}"
    if kind == "prob":
        return heatmap(
            a,
            rows=layers,
            cols=positions,
            title=title,
            cbar_label=what,
            ax=ax,
            cmap="viridis",
            vmin=0.0,
            vmax=1.0,
            annotate=annotate,
        )
    shown = np.log10(1.0 + a)
    hi = max(float(np.nanmax(shown)) if np.isfinite(shown).any() else 1.0, 1.0)
    return heatmap(
        shown,
        rows=layers,
        cols=positions,
        title=title,
        cbar_label=f"log10(1 + {what})",
        ax=ax,
        cmap="viridis_r",
        vmin=0.0,
        vmax=hi,
        annotate=annotate,
    )


def plot_rotation(
    R: Any,
    *,
    ax: Axes | None = None,
    title: str = "Learned rotation (rows = subspace basis)",
    cbar_label: str = "weight",
) -> Axes:
    """A learned basis R (rank x d_model, orthonormal rows) as an image, centred on 0, row 0 at the top.

    Example:
        >>> ax = plot_rotation(das.rotation)             # (rank, d_model)

    Args:
        R: (rank, d) matrix whose rows span the subspace.
        ax: axes to draw on; a new figure when None.
        title: axes title.
        cbar_label: colour-bar label.

    Returns:
        The Axes drawn on.
    """
    a = as_array(R, name="plot_rotation: R", ndim=2)
    return matrix_image(
        a,
        rows=range(a.shape[0]),
        cols=range(a.shape[1]),
        origin="upper",
        title=title,
        xlabel="input dim",
        ylabel="subspace dim",
        cbar_label=cbar_label,
        ax=ax,
        cmap="RdBu_r",
        center=0.0,
        vmin=None,
        vmax=None,
        annotate=False,
        name="plot_rotation",
    )


__all__ = ["heatmap", "plot_patching_grid", "plot_iia_grid", "plot_edit_norms", "plot_logit_lens", "plot_rotation"]
