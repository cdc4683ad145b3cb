"""What every plot of :mod:`interp.viz` shares: array checks, axes, labels, the one matrix image, and ``save``.

Example:
    >>> from interp.viz.base import as_array, matrix_image
    >>> as_array(torch.ones(2, 3), name="effect", ndim=2).shape      # any tensor, array or list -> float numpy
    (2, 3)
    >>> as_array([1.0, 2.0], name="effect", ndim=2)
    Traceback (most recent call last):
    ValueError: effect: expected a 2-D array, got shape (2,)

Plots live by family beside this module: :mod:`interp.viz.grids` (layer x position images),
:mod:`interp.viz.curves` (lines over steps or ranks) and :mod:`interp.viz.compare` (one method or site against
another); :mod:`interp.viz` re-exports them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # matplotlib is imported by the functions that draw, so importing interp never loads it
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

EFFECT_LABEL = "effect (0 = base, 1 = source)"
NAN_COLOUR = "#bdbdbd"
MAX_TICK_LABELS = 60  # beyond this many rows/columns, ticks are thinned by matplotlib


def as_array(x: Any, *, name: str, ndim: int | None = None) -> np.ndarray:
    """A float numpy copy of a tensor / array / list, with a clear error when its rank is wrong."""
    if hasattr(x, "detach"):  # torch.Tensor (any dtype, any device)
        x = x.detach().float().cpu().numpy()
    a = np.asarray(x, dtype=float)
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {tuple(a.shape)}")
    return a


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def label_axes(ax: Axes, *, title: str | None = None, xlabel: str | None = None, ylabel: str | None = None) -> Axes:
    if title is not None:
        ax.set_title(title)
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    return ax


def colorbar(ax: Axes, mappable: Any, label: str | None) -> None:
    cbar = ax.figure.colorbar(mappable, ax=ax, pad=0.02, aspect=30)
    if label:
        cbar.set_label(label)


def declutter(ax: Axes, notes: Sequence[Any], points: np.ndarray) -> None:
    """Move each point annotation that would cover an earlier label or any marker to the next free corner."""
    from matplotlib.transforms import Bbox

    get_renderer = getattr(ax.figure.canvas, "get_renderer", None)
    if get_renderer is None:  # a backend without a renderer to measure text with: leave them be
        return
    renderer = get_renderer()
    r = 4.0 * ax.figure.dpi / 72  # a marker's half-width in pixels
    obstacles = [Bbox.from_extents(x - r, y - r, x + r, y + r) for x, y in ax.transData.transform(points)]
    corners = [
        ((6, 6), "left", "bottom"),
        ((6, -6), "left", "top"),
        ((-6, 6), "right", "bottom"),
        ((-6, -6), "right", "top"),
    ]
    for note in notes:
        for offset, ha, va in corners:
            note.set_position(offset)
            note.set_horizontalalignment(ha)
            note.set_verticalalignment(va)
            if not any(note.get_window_extent(renderer).overlaps(box) for box in obstacles):
                break
        obstacles.append(note.get_window_extent(renderer))


def tick_text(label: Any) -> str:
    """Token labels stay readable: newlines and tabs are shown escaped, an empty token as ''."""
    text = str(label)
    return text.replace("\n", "\\n").replace("\t", "\\t") if text.strip() else repr(text)


def matrix_image(
    values: Any,
    *,
    rows: Sequence[Any] | None,
    cols: Sequence[Any] | None,
    origin: str,
    title: str | None,
    xlabel: str | None,
    ylabel: str | None,
    cbar_label: str | None,
    ax: Axes | None,
    cmap: str,
    center: float | None,
    vmin: float | None,
    vmax: float | None,
    annotate: bool,
    name: str,
) -> Axes:
    """The one matrix-image routine behind heatmap, plot_rotation and friends."""
    import matplotlib.pyplot as plt
    from matplotlib import colors as mcolors
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    if hasattr(values, "columns"):  # pandas DataFrame: labels from its index and columns unless given
        rows = list(values.index) if rows is None else rows
        cols = list(values.columns) if cols is None else cols
    a = as_array(values, name=name, ndim=2)
    n_rows, n_cols = a.shape
    if rows is not None and len(rows) != n_rows or cols is not None and len(cols) != n_cols:
        raise ValueError(
            f"{name}: values has shape {(n_rows, n_cols)} but got "
            f"{len(rows) if rows is not None else n_rows} row labels and "
            f"{len(cols) if cols is not None else n_cols} column labels; pass one label per row and per column"
        )
    finite = a[np.isfinite(a)]
    if center is not None:  # diverging: the same colour intensity for the same distance from center
        half = float(np.max(np.abs(finite - center))) if finite.size else 1.0
        half = half or 1.0
        vmin = center - half if vmin is None else vmin
        vmax = center + half if vmax is None else vmax
    if center is not None and vmin < center < vmax:
        norm: mcolors.Normalize = mcolors.TwoSlopeNorm(vcenter=center, vmin=vmin, vmax=vmax)
    else:
        norm = mcolors.Normalize(vmin=vmin, vmax=vmax)
    colormap = plt.get_cmap(cmap).with_extremes(bad=NAN_COLOUR)

    ax = new_axes(ax, (min(max(4.5, 0.5 * n_cols + 2.5), 16), min(max(3.0, 0.32 * n_rows + 1.8), 12)))
    image = ax.imshow(
        np.ma.masked_invalid(a), cmap=colormap, norm=norm, origin=origin, aspect="auto", interpolation="nearest"
    )
    for axis, labels, n in ((ax.xaxis, cols, n_cols), (ax.yaxis, rows, n_rows)):
        if labels is None or n > MAX_TICK_LABELS:
            continue  # integer ticks from matplotlib's default locator
        axis.set_major_locator(FixedLocator(range(n)))
        axis.set_major_formatter(FuncFormatter(lambda v, _p, lab=labels: tick_text(lab[int(round(v))])))
        axis.set_minor_locator(NullLocator())
    if cols is not None and n_cols <= MAX_TICK_LABELS and any(len(tick_text(c)) > 2 for c in cols):
        ax.tick_params(axis="x", labelrotation=60)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
            tick.set_rotation_mode("anchor")
    ax.tick_params(length=0)
    colorbar(ax, image, cbar_label)
    if annotate:
        for (i, j), v in np.ndenumerate(a):
            if np.isfinite(v):
                r, g, b, _ = colormap(norm(v))
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
    return label_axes(ax, title=title, xlabel=xlabel, ylabel=ylabel)


# ----------------------------------------------------------------------------------------------- output


def save(fig_or_ax: Figure | Axes, path: str | Path) -> Path:
    """Write a figure as PNG (dpi 150, tight bounding box), creating parent folders.

    Example:
        >>> from interp.viz import plot_iia_grid
        >>> path = save(plot_iia_grid([[0.5, 0.9], [0.6, 1.0]], [0, 1], ["a", "last"]), tmp / "03_gender" / "iia")
        >>> path.name, path.exists()                              # ".png" added, the folder made
        ('iia.png', True)

    Args:
        fig_or_ax: the Figure, or any Axes on it.
        path: output file; ".png" is used when it has no suffix.

    Returns:
        The path written.
    """
    from matplotlib.axes import Axes

    fig = fig_or_ax.figure if isinstance(fig_or_ax, Axes) else fig_or_ax
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path


__all__ = [
    "EFFECT_LABEL",
    "NAN_COLOUR",
    "MAX_TICK_LABELS",
    "as_array",
    "new_axes",
    "label_axes",
    "colorbar",
    "declutter",
    "tick_text",
    "matrix_image",
    "save",
]
