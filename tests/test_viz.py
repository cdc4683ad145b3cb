"""interp.viz: every plot runs on small synthetic data and returns Axes with the expected labels."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from interp import viz  # noqa: E402

TOKENS = ["<bos>", "When", " Mary", " and", " John", " to"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _ticks(labels) -> list[str]:
    return [t.get_text() for t in labels]


def _cbar_label(ax: Axes) -> str:
    """The label of the colour bar drawn for ax (the figure's other axes)."""
    (cax,) = [a for a in ax.figure.axes if a is not ax]
    return cax.get_ylabel()


def _image(ax: Axes):
    (image,) = ax.get_images()
    return image


def test_heatmap_labels_orientation_and_nan():
    values = np.arange(18, dtype=float).reshape(3, 6)
    values[1, 2] = np.nan
    ax = viz.heatmap(values, rows=[0, 1, 2], cols=TOKENS, title="grid", cbar_label="metric (nats)", center=0.0)
    assert isinstance(ax, Axes)
    assert ax.get_title() == "grid" and ax.get_xlabel() == "position" and ax.get_ylabel() == "layer"
    ax.figure.canvas.draw()
    assert _ticks(ax.get_xticklabels()) == TOKENS
    assert _ticks(ax.get_yticklabels()) == ["0", "1", "2"]
    assert all(t.get_rotation() > 0 for t in ax.get_xticklabels())  # token labels rotated
    assert _cbar_label(ax) == "metric (nats)"
    image = _image(ax)
    assert image.origin == "lower"  # layer 0 at the bottom
    assert np.ma.getmaskarray(image.get_array())[1, 2]  # NaN masked ...
    assert image.get_cmap().get_bad()[:3] == pytest.approx(matplotlib.colors.to_rgb(viz.NAN_COLOUR))  # ... grey
    assert image.norm.vmin == pytest.approx(-17) and image.norm.vmax == pytest.approx(17)  # symmetric about 0


def test_heatmap_accepts_tensors_existing_axes_and_annotates():
    fig, (left, right) = plt.subplots(1, 2)
    ax = viz.heatmap(
        torch.ones(2, 3, dtype=torch.bfloat16), rows=["a", "b"], cols=["x", "y", "z"], ax=right, annotate=True
    )
    assert ax is right
    assert [t.get_text() for t in ax.texts] == ["1.00"] * 6


def test_plot_patching_grid():
    effect = np.array([[0.0, 0.1, -0.2], [0.05, 0.9, 1.0]])
    ax = viz.plot_patching_grid(effect, [0, 1], ["When", " Mary", " to"])
    assert ax.get_title() and ax.get_xlabel() == "position" and ax.get_ylabel() == "layer"
    assert _cbar_label(ax) == "effect (0 = base, 1 = source)"
    norm = _image(ax).norm
    assert (norm.vmin, norm.vmax) == (-1.0, 1.0) and norm(0.0) == pytest.approx(0.5)  # diverging, white at 0
    assert _ticks(ax.get_xticklabels()) == ["When", " Mary", " to"]


def test_plot_iia_grid():
    ax = viz.plot_iia_grid(np.random.default_rng(0).random((4, 3)), range(4), ["a", "b", "c"])
    assert "IIA" in ax.get_title() or "interchange" in ax.get_title()
    assert _cbar_label(ax) == "IIA"
    assert (_image(ax).norm.vmin, _image(ax).norm.vmax) == (0.0, 1.0)


def test_plot_edit_norms():
    norms = np.full((2, 4), np.nan)
    norms[:, [0, 3]] = [[1.0, 2.0], [0.5, 3.0]]
    ax = viz.plot_edit_norms(norms, layers=[3, 9], positions=["<bos>", " Who", " you", "?"])
    assert ax.get_title() == "ReFT edit size per layer and position"
    assert _ticks(ax.get_yticklabels()) == ["3", "9"]
    assert "‖" in _cbar_label(ax)


def test_plot_rotation():
    R = torch.linalg.qr(torch.randn(8, 3))[0].T  # (rank 3, d 8), orthonormal rows
    ax = viz.plot_rotation(R, title="R")
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("R", "input dim", "subspace dim")
    assert _cbar_label(ax) == "weight"
    assert _image(ax).get_array().shape == (3, 8) and _image(ax).origin == "upper"


def test_plot_rank_curve_log2_and_overlay():
    ax = viz.plot_rank_curve([1, 2, 4, 8], [0.5, 0.6, 0.9, 0.95], label="layer 4")
    ax = viz.plot_rank_curve([1, 2, 4, 8], np.array([0.5, 0.55, 0.7, 0.8]), label="layer 8", ax=ax)
    assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
    assert ax.get_ylabel() == "IIA" and "rank" in ax.get_xlabel()
    assert ax.get_ylim()[0] == 0.0 and ax.get_ylim()[1] >= 1.0
    assert _ticks(ax.get_legend().get_texts()) == ["layer 4", "layer 8"]
    ax.figure.canvas.draw()
    assert _ticks(ax.get_xticklabels()) == ["1", "2", "4", "8"]


def test_plot_rank_curve_linear_when_not_powers_of_two():
    assert viz.plot_rank_curve([1, 3, 5], [0.1, 0.2, 0.3]).get_xscale() == "linear"


def test_plot_probe_vs_iia():
    sites = ["L2 ' Mary'", "L6 ' Mary'", "L6 last"]
    ax = viz.plot_probe_vs_iia(sites, [0.99, 1.0, 0.97], [0.51, 0.93, 0.98], chance=0.5)
    assert _ticks(ax.get_xticklabels()) == sites
    assert _ticks(ax.get_legend().get_texts()) == ["chance", "probe accuracy", "IIA"]
    assert ax.get_ylabel() == "accuracy" and ax.get_title()


def test_plot_learning_curves():
    ax = viz.plot_learning_curves(
        {"DAS init": [2.0, 1.0, 0.5], "random init": torch.tensor([2.0, 1.8, 1.2])}, logy=True
    )
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_yscale()) == ("step", "loss", "log")
    assert _ticks(ax.get_legend().get_texts()) == ["DAS init", "random init"]
    assert len(ax.get_lines()) == 2


def test_plot_tradeoff():
    methods = ["LoReFT", "DiReFT", "LoRA", "DoRA"]
    ax = viz.plot_tradeoff(methods, [18_432, 18_432, 737_280, 760_000], [0.91, 0.9, 0.92, 0.93], [0.2, 0.18, 0.3, 0.4])
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "trainable parameters (log scale)" and ax.get_ylabel() == "accuracy"
    texts = [t.get_text() for t in ax.texts]
    assert texts[0] == "LoReFT\n0.2 s/step" and len(texts) == 4
    assert [t.get_text() for t in viz.plot_tradeoff(["a"], [10], [0.5]).texts] == ["a"]


def test_plot_tradeoff_labels_do_not_overlap():
    ax = viz.plot_tradeoff(["LoRA", "DoRA"], [737_280, 786_432], [0.92, 0.925], [0.34, 0.52])
    renderer = ax.figure.canvas.get_renderer()
    first, second = (t.get_window_extent(renderer) for t in ax.texts)
    assert not first.overlaps(second)


def test_plot_principal_angles():
    ax = viz.plot_principal_angles([5.0, 20.0, 70.0])
    assert ax.get_ylabel() == "angle (degrees)" and ax.get_ylim() == (0.0, 90.0) and ax.get_legend() is None
    assert len(ax.patches) == 3
    ax = viz.plot_principal_angles({"ReFT vs DAS": [5, 20], "ReFT vs random": [80, 88]})
    assert ax.get_ylim()[1] > 90  # room for the legend above the bars
    assert _ticks(ax.get_legend().get_texts()) == ["ReFT vs DAS", "ReFT vs random"]


def test_save_creates_parents_and_accepts_axes_or_figure(tmp_path):
    ax = viz.plot_iia_grid(np.eye(2), [0, 1], ["a", "b"])
    path = viz.save(ax, tmp_path / "deep" / "dir" / "iia")
    assert path.suffix == ".png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert viz.save(ax.figure, tmp_path / "fig.png").exists()
