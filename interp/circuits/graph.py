"""The edge graph of a transformer: nodes that write into the residual stream, and the reads that see them.

Example:
    >>> g = Graph.of(lm)                                   # a tiny Llama: 2 layers, 4 heads
    >>> g.senders[:3], g.receivers[:3]
    (('input', 'a0.h0', 'a0.h1'), ('a0.h0<q>', 'a0.h0<k>', 'a0.h0<v>'))
    >>> len(g), g.edges[0], g.edges[-1]                    # (sender, receiver) pairs, MIB's edge names
    (110, ('input', 'a0.h0<q>'), ('m1', 'logits'))
    >>> g.index(("a0.h2", "m0")), g.node("a1.h3<v>")
    (15, 'a1.h3')

Nodes (as in MIB, Mueller et al. 2025, and EAP-IG, Hanna et al. 2024): ``"input"`` (the embeddings as they enter
the residual stream, positional ones included), ``"a{L}.h{H}"`` (attention head H of layer L: its share of the
output projection, ``W_O[:, head] z_head``), ``"m{L}"`` (layer L's MLP) and ``"logits"``. A sender writes into
the residual stream; each edge is a path from a sender to a *receiver* downstream of it, with nothing but the
residual stream in between.

Receivers are per head and per input: every head reads three copies of the residual stream, one for its queries
(``"a{L}.h{H}<q>"``), one for its keys (``<k>``) and one for its values (``<v>``); each MLP reads one (``"m{L}"``)
and the logits one (``"logits"``, through the final norm). This is the field's standard granularity (MIB, EAP-IG);
it costs three times the attention receivers of a per-layer graph, and the exact edge-patched forward
(:mod:`interp.engine.edges`) runs each layer's attention once per head on that head's own inputs. Under
grouped-query attention the key/value head a query head uses is computed from that query head's own ``<k>`` and
``<v>`` inputs (as TransformerLens's ungrouped heads do), so a head's key edges never leak into its neighbours'.

On Gemma 2/3 each block's output is normalised (``post_attention_layernorm``, ``post_feedforward_layernorm``)
before it is added to the residual stream, so per-head writes are additive only inside that norm: the edge patch
is defined as the model computes it, the norm taken of the mixed head sum each receiver sees (see
:mod:`interp.engine.edges`). With a parallel residual (GPT-NeoX's default) an MLP reads the same residual as the
attention of its layer, so ``m{L}`` receives no edge from that layer's heads.

Edge count: with ``n`` layers of ``H`` heads, ``sum_L [3H (1 + L(H+1)) + 1 + L(H+1) + H] + 1 + n(H+1)`` (GPT-2
small: 32491, as in MIB; Gemma-3-270M: 10342).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..arch import architecture, submodule
from ..errors import InputError

QKV = ("q", "k", "v")


@dataclass(frozen=True, eq=False)
class Graph:
    """Senders, receivers and edges (``(sender, receiver)`` in a fixed order: by receiver, then by sender).

    Attributes:
        n_layers, n_heads: the model's shape.
        senders: ``"input"``, then per layer its heads ``"a{L}.h{H}"`` and its MLP ``"m{L}"``.
        receivers: per layer each head's ``<q>``, ``<k>``, ``<v>`` inputs and the MLP, then ``"logits"``.
        edges: every (sender, receiver) pair where the sender writes before the receiver reads.
        parallel: the MLP reads the same residual as its layer's attention (GPT-NeoX's parallel residual).
        norm_after: blocks normalise their output before adding it (Gemma 2/3).
    """

    n_layers: int
    n_heads: int
    parallel: bool = False
    norm_after: bool = False
    architecture: str = ""
    senders: tuple[str, ...] = field(init=False)
    receivers: tuple[str, ...] = field(init=False)
    edges: tuple[tuple[str, str], ...] = field(init=False)

    def __post_init__(self):
        if self.n_layers < 1 or self.n_heads < 1:
            raise InputError(f"a graph needs n_layers >= 1 and n_heads >= 1; got {self.n_layers}, {self.n_heads}")
        senders, receivers, edges = ["input"], [], []
        for layer in range(self.n_layers):
            heads = [f"a{layer}.h{h}" for h in range(self.n_heads)]
            before = list(senders)
            for h in heads:
                for c in QKV:
                    receivers.append(f"{h}<{c}>")
                    edges += [(s, receivers[-1]) for s in before]
            mlp_reads = before if self.parallel else before + heads
            receivers.append(f"m{layer}")
            edges += [(s, f"m{layer}") for s in mlp_reads]
            senders += heads + [f"m{layer}"]
        receivers.append("logits")
        edges += [(s, "logits") for s in senders]
        object.__setattr__(self, "senders", tuple(senders))
        object.__setattr__(self, "receivers", tuple(receivers))
        object.__setattr__(self, "edges", tuple(edges))
        object.__setattr__(self, "_index", {e: i for i, e in enumerate(edges)})

    @classmethod
    def of(cls, lm) -> Graph:
        """The graph of ``lm``'s architecture (one of :data:`interp.arch.ARCHITECTURES`)."""
        arch = architecture(lm)
        layer0 = submodule(lm.hf, f"{arch.layers}.0")
        parallel = bool(getattr(layer0, "use_parallel_residual", False))  # GPT-NeoX's default
        norm_after = arch.attn_out[0] != arch.attn
        return cls(lm.spec.n_layers, lm.spec.n_heads, parallel, norm_after, lm.spec.architecture)

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node: the senders, then ``"logits"``."""
        return self.senders + ("logits",)

    def __len__(self) -> int:
        return len(self.edges)

    def __repr__(self) -> str:
        name = self.architecture or "model"
        return f"Graph({name}: {self.n_layers} layers x {self.n_heads} heads, {len(self)} edges)"

    def index(self, edge) -> int:
        """The position of ``edge`` (a ``(sender, receiver)`` pair or the text ``"sender->receiver"``)."""
        key = tuple(edge.split("->")) if isinstance(edge, str) else tuple(edge)
        if key not in self._index:
            raise InputError(
                f"no edge {edge!r} in {self!r}; edges look like ('a0.h1', 'a1.h2<q>'), ('m0', 'logits') or "
                "'input->m0' (a sender writes before the receiver reads; see graph.edges)"
            )
        return self._index[key]

    @staticmethod
    def node(name: str) -> str:
        """The node a sender or receiver name belongs to (``"a1.h2<q>"`` -> ``"a1.h2"``)."""
        return name.split("<", 1)[0]

    @staticmethod
    def edge_name(edge: tuple[str, str]) -> str:
        """MIB's name of an edge: ``"a0.h1->a1.h2<q>"``."""
        return f"{edge[0]}->{edge[1]}"


__all__ = ["Graph", "QKV"]
