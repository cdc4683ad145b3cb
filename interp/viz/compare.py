"""Comparisons: probe accuracy against IIA, accuracy against parameters, principal angles, AtP against exact.

Example:
    >>> ax = plot_principal_angles([3.0, 40.0, 88.0])                  # degrees, smallest first
    >>> [round(b.get_height()) for b in ax.patches]
    [3, 40, 88]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import as_array, declutter, label_axes, new_axes, tick_text

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn (interp.viz.base)
    from matplotlib.axes import Axes


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
    p = as_array(probe_acc, name="plot_probe_vs_iia: probe_acc", ndim=1)
    q = as_array(iia, name="plot_probe_vs_iia: iia", ndim=1)
    if not len(sites_labels) == len(p) == len(q):
        raise ValueError(
            f"plot_probe_vs_iia: {len(sites_labels)} site labels, {len(p)} probe accuracies and "
            f"{len(q)} IIA values; pass one of each per site"
        )
    ax = new_axes(ax, (max(4.5, 0.7 * len(p) + 2.0), 3.8))
    x = np.arange(len(p))
    ax.bar(x - 0.2, p, width=0.4, label="probe accuracy", color="#8da0cb")
    ax.bar(x + 0.2, q, width=0.4, label="IIA", color="#fc8d62")
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(x, [tick_text(s) for s in sites_labels])
    if any(len(tick_text(s)) > 4 for s in sites_labels):
        ax.tick_params(axis="x", labelrotation=30)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
            tick.set_rotation_mode("anchor")
    ax.set_ylim(0.0, 1.17)  # headroom for the legend above the bars
    ax.set_yticks(np.linspace(0.0, 1.0, 6))
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper center", ncol=3, fontsize="small", frameon=False)
    return label_axes(ax, title=title, xlabel="site", ylabel="accuracy")


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
    n = as_array(params, name="plot_tradeoff: params", ndim=1)
    acc = as_array(accuracy, name="plot_tradeoff: accuracy", ndim=1)
    sec = None
    if seconds_per_step is not None:
        sec = as_array(seconds_per_step, name="plot_tradeoff: seconds_per_step", ndim=1)
    if not len(methods) == len(n) == len(acc) == (len(sec) if sec is not None else len(n)):
        raise ValueError(
            "plot_tradeoff: methods, params, accuracy (and seconds_per_step) must have one entry "
            f"per method; got {len(methods)}, {len(n)}, {len(acc)}" + (f", {len(sec)}" if sec is not None else "")
        )
    ax = new_axes(ax, (5.5, 4.0))
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
    declutter(ax, notes, np.stack([n, acc], axis=1))
    ax.grid(True, which="major", alpha=0.3)
    return label_axes(ax, title=title, xlabel="trainable parameters (log scale)", ylabel="accuracy")


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
    arrays = {k: as_array(v, name="plot_principal_angles: angles_deg", ndim=1) for k, v in groups.items()}
    k = max(len(a) for a in arrays.values())
    ax = new_axes(ax, (max(4.5, 0.5 * k * len(arrays) + 2.0), 3.6))
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
    return label_axes(ax, title=title, xlabel="principal angle (smallest first)", ylabel="angle (degrees)")


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
    ax = new_axes(ax, (4.8, 4.5))
    lo, hi = 0.0, 1.0
    for i, (name, e) in enumerate(series.items()):
        x = as_array(e, name=f"plot_atp_vs_exact: exact[{name!r}]").ravel()
        y = as_array(other[name], name=f"plot_atp_vs_exact: atp[{name!r}]").ravel()
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
    return label_axes(ax, title=title, xlabel="exact patching effect", ylabel="AtP estimate")


__all__ = ["plot_probe_vs_iia", "plot_tradeoff", "plot_principal_angles", "plot_atp_vs_exact"]
