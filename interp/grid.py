"""One result type for scores over a grid of sites: patching effects, DAS IIA, probe accuracy.

Example:
    >>> from interp.patching import patch_grid
    >>> pp = Pairs.of(base, source, base_answer=[5] * 4, source_answer=[6] * 4)
    >>> grid = patch_grid(lm, pp, positions={"a": at(1), "last": last()})
    >>> grid.effect.shape, grid.best()        # (n_layers, n_positions), the cell with the largest effect
    (torch.Size([2, 2]), {'layer': 1, 'position': 'last', 'effect': 1.0})
    >>> sw = sweep_das(lm, train, test, layers=[0, 1], positions={"last": last()}, ranks=[1, 4], steps=1)
    >>> sw.iia.shape, sw.iia_train.shape      # (2, 2, 1) each: ranks x layers x positions
    (torch.Size([2, 2, 1]), torch.Size([2, 2, 1]))
    >>> ax = sw.plot(rank=4); torch.equal(Grid.from_dict(sw.to_dict()).iia, sw.iia)   # JSON round trip
    True

``values`` has one dimension per axis, in the order of ``axes``; ``extra`` holds tensors of the same shape
(``iia_train``) and ``meta`` scalars (``component``, ``clean_accuracy``). Axis labels, extras and metadata
read as attributes, and so do the values under their name: ``grid.effect`` is ``grid.values``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import display, viz


@dataclass
class Grid:
    """A tensor over named axes of site labels, with same-shaped extras and scalar metadata.

    Example:
        >>> g = Grid("iia", torch.tensor([[0.5, 1.0]]), {"layers": [3], "positions": ["name", "last"]})
        >>> g.layers, g.best()
        ([3], {'layer': 3, 'position': 'last', 'iia': 1.0})
    """

    name: str  # what the values are: "effect", "iia", "accuracy"
    values: torch.Tensor  # one dimension per axis, in the order of ``axes``
    axes: dict[str, list]  # plural axis name -> labels: {"ranks": [1], "layers": [0, 3], "positions": ["last"]}
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # same shape as values, e.g. {"iia_train": ...}
    meta: dict = field(default_factory=dict)  # scalars: component, clean_accuracy, n_pairs, ...
    per_pair: torch.Tensor | None = None  # values.shape + (n_pairs,): each pair's value; their mean is ``values``
    pair_extra: dict[str, torch.Tensor] = field(default_factory=dict)  # values.shape + (n_pairs,) each

    def __post_init__(self):
        shape = tuple(len(labels) for labels in self.axes.values())
        for key, t in {self.name: self.values, **self.extra}.items():
            if tuple(t.shape) != shape:
                raise ValueError(f"Grid {key!r} has shape {tuple(t.shape)}; the axes {list(self.axes)} give {shape}")
        pairs = {"per_pair": self.per_pair, **self.pair_extra} if self.per_pair is not None else self.pair_extra
        for key, t in pairs.items():
            if tuple(t.shape[:-1]) != shape or t.dim() != len(shape) + 1:
                raise ValueError(
                    f"Grid {key!r} has shape {tuple(t.shape)}; per-pair values need the axes' shape {shape} and "
                    "one more axis, over the pairs"
                )

    def __repr__(self) -> str:
        return display.grid_repr(self)

    def _repr_html_(self) -> str:
        return display.grid_html(self)

    def __getattr__(self, key: str):
        d = self.__dict__
        if key.startswith("__") or "name" not in d:  # copy/pickle probe dunders before __init__ has run
            raise AttributeError(key)
        if key == d["name"]:
            return d["values"]
        for part in ("axes", "extra", "meta", "pair_extra"):
            if key in d[part]:
                return d[part][key]
        raise AttributeError(
            f"this Grid of {d['name']!r} has no {key!r}; it has axes {list(d['axes'])}, extra {list(d['extra'])} "
            f"and meta {list(d['meta'])}" + (f", per-pair {list(d['pair_extra'])}" if d.get("pair_extra") else "")
        )

    def best(self) -> dict:
        """The cell with the largest value (NaN skipped): ``{"layer": 6, "position": "last", "iia": 0.98}``."""
        flat = int(torch.nan_to_num(self.values.float(), nan=-float("inf")).argmax())
        index = torch.unravel_index(torch.tensor(flat), tuple(self.values.shape))
        cell = {k.removesuffix("s"): labels[int(i)] for (k, labels), i in zip(self.axes.items(), index)}
        return cell | {self.name: float(self.values.reshape(-1)[flat])}

    def plot(self, ax=None, *, title: str | None = None, annotate: bool | None = None, **select):
        """Heatmap over layers x positions; other axes are fixed by ``select`` (default: their first label).

        Example:
            >>> sw = Grid("iia", torch.rand(2, 3, 1), {"ranks": [1, 4], "layers": [0, 1, 2], "positions": ["last"]})
            >>> ax = sw.plot(rank=4)            # IIA at rank 4; returns the Axes
            >>> ax.get_title()
            'iia per layer and position (rank 4)'

        Effects use :func:`interp.viz.plot_patching_grid`, IIA :func:`interp.viz.plot_iia_grid`, anything else
        (probe accuracy) a 0..1 :func:`interp.viz.heatmap`. ``annotate`` defaults to grids of 64 cells or fewer.
        """
        values, fixed = self.values, []
        for dim, (k, labels) in reversed(list(enumerate(self.axes.items()))):
            if k in ("layers", "positions"):
                continue
            want = select.pop(k.removesuffix("s"), labels[0])
            if want not in labels:
                raise ValueError(f"{k.removesuffix('s')}={want!r} is not on this grid; its {k} are {labels}")
            values = values.select(dim, labels.index(want))
            fixed.insert(0, f"{k.removesuffix('s')} {want}")
        if select:
            raise ValueError(f"no axes {sorted(select)} on this grid; its axes are {list(self.axes)}")
        values = values.float().numpy()
        where = ", ".join([self.meta.get("component", "")] + fixed).strip(", ")
        title = title or f"{self.name} per layer and position" + (f" ({where})" if where else "")
        annotate = values.size <= 64 if annotate is None else annotate
        kw = dict(ax=ax, title=title, annotate=annotate)
        if self.name == "effect":
            return viz.plot_patching_grid(values, self.layers, self.positions, **kw)
        if self.name == "iia":
            return viz.plot_iia_grid(values, self.layers, self.positions, **kw)
        rows, cols = self.layers, self.positions
        return viz.heatmap(values, rows=rows, cols=cols, cmap="viridis", vmin=0.0, vmax=1.0, cbar_label=self.name, **kw)

    def to_dict(self, *, per_pair: bool = False) -> dict:
        """JSON-ready: axis labels, values and extras as nested lists, the metadata, ``best`` and a ``grid`` key;
        with ``per_pair=True`` the per-pair values too (``per_pair`` and the ``pair_extra`` tensors).

        Example:
            >>> g = Grid("effect", torch.tensor([[0.5]]), {"layers": [0], "positions": ["last"]},
            ...          per_pair=torch.tensor([[[0.0, 1.0]]]))
            >>> Grid.from_dict(g.to_dict(per_pair=True)).per_pair.tolist(), "per_pair" in g.to_dict()
            ([[[0.0, 1.0]]], False)
        """
        best = self.best()
        best[self.name] = _plain(torch.tensor(best[self.name]))
        pairs = {}
        if per_pair:
            pairs = {k: _plain(v) for k, v in self.pair_extra.items()}
            if self.per_pair is not None:
                pairs["per_pair"] = _plain(self.per_pair)
        return {
            **self.axes,
            self.name: _plain(self.values),
            **{k: _plain(v) for k, v in self.extra.items()},
            **self.meta,
            **pairs,
            "best": best,
            "grid": {
                "value": self.name,
                "axes": list(self.axes),
                "extra": list(self.extra),
                "pair_extra": list(self.pair_extra) if per_pair else [],
            },
        }

    @classmethod
    def from_dict(cls, d: dict) -> Grid:
        """Rebuild a grid from :meth:`to_dict`'s output; keys it does not name go to ``meta``."""
        if "grid" not in d:
            raise ValueError(f"not a Grid.to_dict() result: no 'grid' key among {sorted(d)}")
        name, axes, extra = d["grid"]["value"], d["grid"]["axes"], d["grid"]["extra"]
        pair_extra = d["grid"].get("pair_extra", [])
        own = {name, *axes, *extra, *pair_extra, "per_pair", "best", "grid"}
        return cls(
            name,
            torch.tensor(d[name]),
            {k: list(d[k]) for k in axes},
            {k: torch.tensor(d[k]) for k in extra},
            {k: v for k, v in d.items() if k not in own},
            torch.tensor(d["per_pair"]) if "per_pair" in d else None,
            {k: torch.tensor(d[k]) for k in pair_extra},
        )


def _plain(t: torch.Tensor):
    """Nested lists of the shortest decimals that read back as the same float32 (0.1, not 0.10000000149011612)."""
    return t.detach().cpu().float().numpy().astype(str).astype(float).tolist()


__all__ = ["Grid"]
