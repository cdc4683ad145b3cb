"""Plots for patching, DAS and ReFT results: functions of data, never of models.

Example:
    >>> from interp import viz
    >>> ax = viz.plot_patching_grid([[0.0, 0.2], [0.1, 1.0]], layers=[0, 1], positions=[" Mary", " to"])
    >>> path = viz.save(ax, tmp / "patching")                        # PNG, parent folders made
    >>> path.name
    'patching.png'

Every function takes arrays (torch tensors, numpy arrays, lists or dicts of them), an optional ``ax`` to
draw on (a new figure is made when it is ``None``) and returns the ``Axes``, so plots compose into
``plt.subplots`` grids and work the same on a user's own numbers. Matplotlib only; safe under Agg.

By family: :mod:`~interp.viz.grids` (layer x position images: ``heatmap``, ``plot_patching_grid``,
``plot_iia_grid``, ``plot_edit_norms``, ``plot_logit_lens``, ``plot_rotation``), :mod:`~interp.viz.curves`
(``plot_rank_curve``, ``plot_learning_curves``), :mod:`~interp.viz.compare` (``plot_probe_vs_iia``,
``plot_tradeoff``, ``plot_principal_angles``, ``plot_atp_vs_exact``), :mod:`~interp.viz.circuit`
(``plot_circuit``, ``plot_faithfulness``) and :mod:`~interp.viz.base` (``save`` and
what the plots share).

Conventions:
    - Layer x position grids put **layer 0 at the bottom** (depth grows upwards) and token labels on
      the x axis, rotated; NaN cells (sites not evaluated) are drawn grey.
    - Patching effect is ``(m - m_base) / (m_source - m_base)`` for a metric ``m`` such as a logit
      difference: 0 = the base run, 1 = the source run (Heimersheim & Nanda 2024, "How to use and
      interpret activation patching"). IIA is interchange intervention accuracy (Geiger et al. 2023).
"""

from .base import EFFECT_LABEL, NAN_COLOUR, save
from .circuit import plot_circuit, plot_faithfulness
from .compare import plot_atp_vs_exact, plot_principal_angles, plot_probe_vs_iia, plot_tradeoff
from .curves import plot_learning_curves, plot_rank_curve
from .grids import heatmap, plot_edit_norms, plot_iia_grid, plot_logit_lens, plot_patching_grid, plot_rotation

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
    "plot_circuit",
    "plot_faithfulness",
    "save",
    "EFFECT_LABEL",
    "NAN_COLOUR",
]
