"""Curves: IIA against subspace rank, and learning curves of training runs.

Example:
    >>> ax = plot_rank_curve([1, 2, 4], [0.6, 0.8, 0.9], label="layer 6")
    >>> ax.get_xscale(), ax.get_ylabel()                                 # powers of two: a log2 axis
    ('log', 'IIA')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .base import as_array, label_axes, new_axes

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn (interp.viz.base)
    from matplotlib.axes import Axes


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
    x = as_array(ranks, name="plot_rank_curve: ranks", ndim=1)
    y = as_array(iia, name="plot_rank_curve: iia", ndim=1)
    if x.shape != y.shape:
        raise ValueError(f"plot_rank_curve: {len(x)} ranks but {len(y)} IIA values; pass one IIA per rank")
    ax = new_axes(ax, (5.0, 3.6))
    ax.plot(x, y, marker="o", label=label)
    if all(_is_power_of_two(r) for r in x):
        from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(sorted(set(x.tolist()))))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_ylim(0.0, 1.02)
    ax.grid(True, alpha=0.3)
    if label is not None:
        ax.legend()
    return label_axes(ax, title=title, xlabel="rank (subspace dimensions)", ylabel="IIA")


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
    ax = new_axes(ax, (5.5, 3.6))
    for name, values in curves.items():
        ax.plot(as_array(values, name=f"plot_learning_curves: curves[{name!r}]", ndim=1), label=str(name))
    if logy:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return label_axes(ax, title=title, xlabel=xlabel, ylabel=ylabel)


__all__ = ["plot_rank_curve", "plot_learning_curves"]
