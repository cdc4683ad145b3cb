"""Plots for patching, DAS and ReFT results: functions of data, never of models.

Every function takes arrays (torch tensors, numpy arrays, lists or dicts of them), an optional ``ax`` to
draw on (a new figure is made when it is ``None``) and returns the ``Axes``, so plots compose into
``plt.subplots`` grids and work the same on a user's own numbers. Matplotlib only; safe under Agg.

Conventions:
    - Layer x position grids put **layer 0 at the bottom** (depth grows upwards) and token labels on
      the x axis, rotated; NaN cells (sites not evaluated) are drawn grey.
    - Patching effect is ``(m - m_base) / (m_source - m_base)`` for a metric ``m`` such as a logit
      difference: 0 = the base run, 1 = the source run (Heimersheim & Nanda 2024, "How to use and
      interpret activation patching"). IIA is interchange intervention accuracy (Geiger et al. 2023).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colors as mcolors
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator
from matplotlib.transforms import Bbox

__all__ = [
    "heatmap",
    "plot_patching_grid",
    "plot_iia_grid",
    "plot_rank_curve",
    "plot_probe_vs_iia",
    "plot_learning_curves",
    "plot_rotation",
    "plot_edit_norms",
    "plot_tradeoff",
    "plot_principal_angles",
    "plot_atp_vs_exact",
    "plot_logit_lens",
    "save",
]

EFFECT_LABEL = "effect (0 = base, 1 = source)"
NAN_COLOUR = "#bdbdbd"
_MAX_TICK_LABELS = 60  # beyond this many rows/columns, ticks are thinned by matplotlib


# ----------------------------------------------------------------------------------------------- helpers


def _array(x: Any, *, name: str, ndim: int | None = None) -> np.ndarray:
    """A float numpy copy of a tensor / array / list, with a clear error when its rank is wrong."""
    if hasattr(x, "detach"):  # torch.Tensor (any dtype, any device)
        x = x.detach().float().cpu().numpy()
    a = np.asarray(x, dtype=float)
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {tuple(a.shape)}")
    return a


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _label(ax: Axes, *, title: str | None = None, xlabel: str | None = None, ylabel: str | None = None) -> Axes:
    if title is not None:
        ax.set_title(title)
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    return ax


def _colorbar(ax: Axes, mappable: Any, label: str | None) -> None:
    cbar = ax.figure.colorbar(mappable, ax=ax, pad=0.02, aspect=30)
    if label:
        cbar.set_label(label)


def _declutter(ax: Axes, notes: Sequence[Any], points: np.ndarray) -> None:
    """Move each point annotation that would cover an earlier label or any marker to the next free corner."""
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


def _tick_text(label: Any) -> str:
    """Token labels stay readable: newlines and tabs are shown escaped, an empty token as ''."""
    text = str(label)
    return text.replace("\n", "\\n").replace("\t", "\\t") if text.strip() else repr(text)


def _grid(
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
    if hasattr(values, "columns"):  # pandas DataFrame: labels from its index and columns unless given
        rows = list(values.index) if rows is None else rows
        cols = list(values.columns) if cols is None else cols
    a = _array(values, name=name, ndim=2)
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

    ax = _axes(ax, (min(max(4.5, 0.5 * n_cols + 2.5), 16), min(max(3.0, 0.32 * n_rows + 1.8), 12)))
    image = ax.imshow(
        np.ma.masked_invalid(a), cmap=colormap, norm=norm, origin=origin, aspect="auto", interpolation="nearest"
    )
    for axis, labels, n in ((ax.xaxis, cols, n_cols), (ax.yaxis, rows, n_rows)):
        if labels is None or n > _MAX_TICK_LABELS:
            continue  # integer ticks from matplotlib's default locator
        axis.set_major_locator(FixedLocator(range(n)))
        axis.set_major_formatter(FuncFormatter(lambda v, _p, lab=labels: _tick_text(lab[int(round(v))])))
        axis.set_minor_locator(NullLocator())
    if cols is not None and n_cols <= _MAX_TICK_LABELS and any(len(_tick_text(c)) > 2 for c in cols):
        ax.tick_params(axis="x", labelrotation=60)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
            tick.set_rotation_mode("anchor")
    ax.tick_params(length=0)
    _colorbar(ax, image, cbar_label)
    if annotate:
        for (i, j), v in np.ndenumerate(a):
            if np.isfinite(v):
                r, g, b, _ = colormap(norm(v))
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
    return _label(ax, title=title, xlabel=xlabel, ylabel=ylabel)


# ----------------------------------------------------------------------------------------------- grids


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
    return _grid(
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
    a = _array(effect, name="plot_patching_grid: effect", ndim=2)
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
    a = _array(R, name="plot_rotation: R", ndim=2)
    return _grid(
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


# ----------------------------------------------------------------------------------------------- curves and bars


def _is_power_of_two(x: float) -> bool:
    return x >= 1 and float(x).is_integer() and (int(x) & (int(x) - 1)) == 0


def plot_rank_curve(
    ranks: Sequence[float],
    iia: Any,
    *,
    ax: Axes | None = None,
    label: str | None = None,
    title: str = "IIA against subspace rank",
) -> Axes:
    """IIA as a function of DAS rank; the x axis is log2 when every rank is a power of two.

    Example:
        >>> ax = plot_rank_curve([1, 2, 4, 8, 16], [0.61, 0.74, 0.9, 0.95, 0.96], label="layer 6")

    Call it again with the same ``ax`` and another ``label`` to overlay curves.

    Args:
        ranks: subspace ranks (x).
        iia: IIA per rank (y), in [0, 1].
        ax: axes to draw on; a new figure when None.
        label: legend entry for this curve.
        title: axes title.

    Returns:
        The Axes drawn on.
    """
    x = _array(ranks, name="plot_rank_curve: ranks", ndim=1)
    y = _array(iia, name="plot_rank_curve: iia", ndim=1)
    if x.shape != y.shape:
        raise ValueError(f"plot_rank_curve: {len(x)} ranks but {len(y)} IIA values; pass one IIA per rank")
    ax = _axes(ax, (5.0, 3.6))
    ax.plot(x, y, marker="o", label=label)
    if all(_is_power_of_two(r) for r in x):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(sorted(set(x.tolist()))))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_ylim(0.0, 1.02)
    ax.grid(True, alpha=0.3)
    if label is not None:
        ax.legend()
    return _label(ax, title=title, xlabel="rank (subspace dimensions)", ylabel="IIA")


def plot_probe_vs_iia(
    sites_labels: Sequence[Any],
    probe_acc: Any,
    iia: Any,
    *,
    ax: Axes | None = None,
    chance: float | None = None,
    title: str = "Probe accuracy vs IIA per site",
) -> Axes:
    """Paired bars per site: a linear probe's accuracy next to the interchange intervention accuracy.

    Example:
        >>> ax = plot_probe_vs_iia(["L2 name", "L6 name", "L6 last"], [0.99, 1.0, 0.97], [0.51, 0.93, 0.98],
        ...                        chance=0.5)

    A site where the probe succeeds but IIA stays near chance holds information the model does not use.

    Args:
        sites_labels: one label per site, e.g. "L6 ' Mary'".
        probe_acc: probe accuracy per site, in [0, 1].
        iia: IIA per site, in [0, 1].
        ax: axes to draw on; a new figure when None.
        chance: draw a dashed line at chance accuracy.
        title: axes title.

    Returns:
        The Axes drawn on.
    """
    p = _array(probe_acc, name="plot_probe_vs_iia: probe_acc", ndim=1)
    q = _array(iia, name="plot_probe_vs_iia: iia", ndim=1)
    if not len(sites_labels) == len(p) == len(q):
        raise ValueError(
            f"plot_probe_vs_iia: {len(sites_labels)} site labels, {len(p)} probe accuracies and "
            f"{len(q)} IIA values; pass one of each per site"
        )
    ax = _axes(ax, (max(4.5, 0.7 * len(p) + 2.0), 3.8))
    x = np.arange(len(p))
    ax.bar(x - 0.2, p, width=0.4, label="probe accuracy", color="#8da0cb")
    ax.bar(x + 0.2, q, width=0.4, label="IIA", color="#fc8d62")
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(x, [_tick_text(s) for s in sites_labels])
    if any(len(_tick_text(s)) > 4 for s in sites_labels):
        ax.tick_params(axis="x", labelrotation=30)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
            tick.set_rotation_mode("anchor")
    ax.set_ylim(0.0, 1.17)  # headroom for the legend above the bars
    ax.set_yticks(np.linspace(0.0, 1.0, 6))
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper center", ncol=3, fontsize="small", frameon=False)
    return _label(ax, title=title, xlabel="site", ylabel="accuracy")


def plot_learning_curves(
    curves: Mapping[str, Any],
    *,
    ax: Axes | None = None,
    xlabel: str = "step",
    ylabel: str = "loss",
    title: str | None = "Learning curves",
    logy: bool = False,
) -> Axes:
    """One line per run, x = index of the value (step or epoch).

    Example:
        >>> hist = train_reft(rlm, examples, TrainConfig(steps=3))       # a reft.History: .losses per step
        >>> ax = plot_learning_curves({"ReFT": hist.losses, "DAS": [h["loss"] for h in das.history]}, logy=True)
        >>> [line.get_label() for line in ax.get_lines()]
        ['ReFT', 'DAS']

    Args:
        curves: run name -> sequence of values.
        ax: axes to draw on; a new figure when None.
        xlabel: x-axis label (what one index is).
        ylabel: y-axis label (the quantity and its units).
        title: axes title.
        logy: log-scale y axis (losses spanning orders of magnitude).

    Returns:
        The Axes drawn on.
    """
    if not curves:
        raise ValueError("plot_learning_curves: curves is empty; pass {'run name': [values, ...]}")
    ax = _axes(ax, (5.5, 3.6))
    for name, values in curves.items():
        ax.plot(_array(values, name=f"plot_learning_curves: curves[{name!r}]", ndim=1), label=str(name))
    if logy:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _label(ax, title=title, xlabel=xlabel, ylabel=ylabel)


def plot_tradeoff(
    methods: Sequence[str],
    params: Any,
    accuracy: Any,
    seconds_per_step: Any = None,
    *,
    ax: Axes | None = None,
    title: str = "Accuracy against trainable parameters",
) -> Axes:
    """One labelled point per method: accuracy against trainable parameters (log x), with seconds/step noted.

    Example:
        >>> ax = plot_tradeoff(["LoReFT", "LoRA"], [18_432, 737_280], [0.91, 0.92], seconds_per_step=[0.21, 0.34])

    Args:
        methods: method names.
        params: trainable parameter count per method.
        accuracy: accuracy per method, in [0, 1].
        seconds_per_step: optional training seconds per step per method, written next to each point.
        ax: axes to draw on; a new figure when None.
        title: axes title.

    Returns:
        The Axes drawn on.
    """
    n = _array(params, name="plot_tradeoff: params", ndim=1)
    acc = _array(accuracy, name="plot_tradeoff: accuracy", ndim=1)
    sec = None if seconds_per_step is None else _array(seconds_per_step, name="plot_tradeoff: seconds_per_step", ndim=1)
    if not len(methods) == len(n) == len(acc) == (len(sec) if sec is not None else len(n)):
        raise ValueError(
            "plot_tradeoff: methods, params, accuracy (and seconds_per_step) must have one entry "
            f"per method; got {len(methods)}, {len(n)}, {len(acc)}" + (f", {len(sec)}" if sec is not None else "")
        )
    ax = _axes(ax, (5.5, 4.0))
    notes = []
    for i, method in enumerate(methods):
        ax.scatter(n[i], acc[i], s=60, zorder=3, color=f"C{i % 10}")
        text = str(method) if sec is None else f"{method}\n{sec[i]:.3g} s/step"
        notes.append(
            ax.annotate(text, (n[i], acc[i]), xytext=(6, 6), textcoords="offset points", fontsize=9, color=f"C{i % 10}")
        )
    ax.set_xscale("log")
    lo, hi = float(n.min()), float(n.max())
    ax.set_xlim(lo / 4, hi * 6)  # room for the annotations on either side
    span = max(float(acc.max() - acc.min()), 0.02)
    ax.set_ylim(float(acc.min()) - 0.3 * span, float(acc.max()) + 0.5 * span)
    _declutter(ax, notes, np.stack([n, acc], axis=1))
    ax.grid(True, which="major", alpha=0.3)
    return _label(ax, title=title, xlabel="trainable parameters (log scale)", ylabel="accuracy")


def plot_principal_angles(
    angles_deg: Any,
    *,
    ax: Axes | None = None,
    title: str = "Principal angles between subspaces",
) -> Axes:
    """Bars of principal angles in degrees (0 = shared direction, 90 = orthogonal); a dict overlays comparisons.

    Example:
        >>> angles = principal_angles(rlm.interventions[0].basis_weight(), das.rotation)   # (4,) degrees
        >>> random_angles = principal_angles(LowRankRotation(lm.d_model, 4).weight, das.rotation)
        >>> ax = plot_principal_angles({"ReFT vs DAS": angles, "random vs DAS": random_angles})

    Args:
        angles_deg: a sequence of angles in degrees, or name -> sequence for side-by-side groups.
        ax: axes to draw on; a new figure when None.
        title: axes title.

    Returns:
        The Axes drawn on.
    """
    groups = dict(angles_deg) if isinstance(angles_deg, Mapping) else {None: angles_deg}
    arrays = {k: _array(v, name="plot_principal_angles: angles_deg", ndim=1) for k, v in groups.items()}
    k = max(len(a) for a in arrays.values())
    ax = _axes(ax, (max(4.5, 0.5 * k * len(arrays) + 2.0), 3.6))
    width = 0.8 / len(arrays)
    for g, (name, a) in enumerate(arrays.items()):
        x = np.arange(1, len(a) + 1) + (g - (len(arrays) - 1) / 2) * width
        ax.bar(x, a, width=width, label=name, color=f"C{g}")
    ax.set_xticks(np.arange(1, k + 1))
    named = len(arrays) > 1 or None not in arrays
    ax.set_ylim(0.0, 104.0 if named else 90.0)  # headroom for the legend above 90 degrees
    ax.set_yticks([0, 15, 30, 45, 60, 75, 90])
    ax.grid(True, axis="y", alpha=0.3)
    if named:
        ax.legend(loc="upper center", ncol=len(arrays), fontsize="small", frameon=False)
    return _label(ax, title=title, xlabel="principal angle (smallest first)", ylabel="angle (degrees)")


def plot_atp_vs_exact(
    exact: Any,
    atp: Any,
    *,
    ax: Axes | None = None,
    title: str = "Attribution patching against exact patching",
    label: str | None = None,
) -> Axes:
    """Scatter of AtP's first-order effect against the exact patching effect per cell, with y = x and Pearson r.

    Example:
        >>> ax = plot_atp_vs_exact([[0.0, 0.2], [0.9, 1.0]], [[0.0, 0.1], [0.7, 0.4]], label="resid_post")
        >>> ax.get_xlabel()
        'exact patching effect'
        >>> ax = plot_atp_vs_exact({"resid_post": [0.1, 0.9], "mlp_out": [0.0, 0.3]},        # one colour each
        ...                        {"resid_post": [0.1, 0.6], "mlp_out": [0.0, 0.2]})

    Points on the diagonal are cells where the linear estimate is exact; points below it (towards 0 on the y axis)
    are effects AtP misses, e.g. through saturated attention or a large change of a normed residual.

    Args:
        exact: effects of exact patching (any shape, e.g. a Grid's ``effect``), or a dict name -> effects.
        atp: AtP's effects of the same shape (or a dict with the same keys).
        ax: axes to draw on; a new figure when None.
        title: axes title.
        label: legend label when ``exact`` and ``atp`` are arrays.

    Returns:
        The Axes drawn on.
    """
    series = dict(exact) if isinstance(exact, Mapping) else {label: exact}
    other = dict(atp) if isinstance(atp, Mapping) else {label: atp}
    if set(series) != set(other):
        raise ValueError(
            f"plot_atp_vs_exact: exact has series {sorted(map(str, series))} but atp has {sorted(map(str, other))}; "
            "pass the same names"
        )
    ax = _axes(ax, (4.8, 4.5))
    lo, hi = 0.0, 1.0
    for i, (name, e) in enumerate(series.items()):
        x = _array(e, name=f"plot_atp_vs_exact: exact[{name!r}]").ravel()
        y = _array(other[name], name=f"plot_atp_vs_exact: atp[{name!r}]").ravel()
        if x.shape != y.shape:
            raise ValueError(
                f"plot_atp_vs_exact: {name!r} has {x.size} exact cells but {y.size} AtP cells; pass the same grid"
            )
        ok = np.isfinite(x) & np.isfinite(y)
        r = np.corrcoef(x[ok], y[ok])[0, 1] if ok.sum() > 1 and x[ok].std() > 0 and y[ok].std() > 0 else np.nan
        text = f"r = {r:.2f}" if name is None else f"{name} (r = {r:.2f})"
        ax.scatter(x[ok], y[ok], s=16, alpha=0.7, color=f"C{i % 10}", label=text, zorder=3)
        if ok.any():
            lo, hi = min(lo, x[ok].min(), y[ok].min()), max(hi, x[ok].max(), y[ok].max())
    pad = 0.05 * (hi - lo)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", linestyle="--", linewidth=1, zorder=2)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal", adjustable="box")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    return _label(ax, title=title, xlabel="exact patching effect", ylabel="AtP estimate")


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
    a = _array(values, name="plot_logit_lens: values", ndim=2)
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


# ----------------------------------------------------------------------------------------------- output


def save(fig_or_ax: Figure | Axes, path: str | Path) -> Path:
    """Write a figure as PNG (dpi 150, tight bounding box), creating parent folders.

    Example:
        >>> path = save(plot_iia_grid([[0.5, 0.9], [0.6, 1.0]], [0, 1], ["a", "last"]), tmp / "03_gender" / "iia")
        >>> path.name, path.exists()                              # ".png" added, the folder made
        ('iia.png', True)

    Args:
        fig_or_ax: the Figure, or any Axes on it.
        path: output file; ".png" is used when it has no suffix.

    Returns:
        The path written.
    """
    fig = fig_or_ax.figure if isinstance(fig_or_ax, Axes) else fig_or_ax
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path
