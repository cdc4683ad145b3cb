"""Sites: where in a model a hidden representation is read or written.

Example:
    >>> Site("resid_post", 1, last())                 # output of decoder layer 1, last token
    Site('resid_post', 1, last())
    >>> Site("head", 1, token(" Mary"), head=2)        # head 2's output (o_proj input), at " Mary"
    Site('head', 1, token(' Mary'), head=2)
    >>> Site.module("model.layers.1.mlp.act_fn", last())  # escape hatch: any module, by its path
    Site.module('model.layers.1.mlp.act_fn', last(), io='output')
    >>> resolve(lm, Site("head", 1, head=2))           # where it is in this model (checked first)
    Target(path='model.layers.1.self_attn.o_proj', io='input', head=2, n_heads=4, width=8)
    >>> resolve(lm, Site.module("model.layers.1.mlp.act_fn")).width   # a module's own width (intermediate_size)
    64
    >>> resolve(lm, Site("k", 1, head=1))               # key head 1 (GQA: 2 key/value heads for 4 query heads)
    Target(path='model.layers.1.self_attn.k_proj', io='output', head=1, n_heads=2, width=8)
    >>> kv_group(lm, 3), query_heads(lm, 1)            # query head 3 reads key/value head 1, shared by heads 2, 3
    (1, (2, 3))
    >>> resolve(lm, Site("mlp_hidden", 1)).width       # the neurons: the down projection's input
    64
    >>> collect(lm, base, at=Site("attn_pattern", 1, last(), head=0)).shape  # (B, k, T): head 0's last row
    torch.Size([4, 1, 6])
    >>> resolve(lm, Site("attn_out", 2))
    Traceback (most recent call last):
    interp.errors.SiteError: layer 2 is out of range for LlamaForCausalLM with 2 layers; expected 0..1

Components follow TransformerLens: ``resid_pre`` (layer input), ``resid_mid`` (after attention, before
the MLP), ``resid_post`` (layer output), ``attn_out`` and ``mlp_out`` (what each block adds to the
residual stream) and ``head`` (one head's slice of the attention output before the output projection).
Inside attention and MLPs (:data:`INNER_COMPONENTS`):

- ``q``, ``k``, ``v``: the query/key/value projection outputs, split per head (``head=h``: (B, k, head_dim);
  ``head=None``: the whole projection). This point is *before* any norm of q and k (Gemma 3's ``q_norm`` and
  ``k_norm``) and before the rotary embedding (Llama, Qwen2, Gemma 3, GPT-NeoX); GPT-2 rotates nothing. Fused
  projections are sliced: GPT-2's ``c_attn`` gives ``[q | k | v]``, GPT-NeoX's ``query_key_value`` interleaves
  ``[q_h | k_h | v_h]`` head by head. With grouped-query attention, ``head=`` of ``k`` and ``v`` counts
  key/value heads (0..n_kv_heads-1): :func:`kv_group` maps a query head to the one it reads, :func:`query_heads`
  lists the query heads that share one.
- ``attn_pattern``: the post-softmax attention probabilities (B, heads, T, T). At positions it gives the query
  rows there, (B, k, heads, T), or one head's (B, k, T); the key columns are the batch's (padded) token columns,
  so a patched pattern carries over between prompts of the same length only. Runs that touch it switch the model
  to an eager attention function that exposes the probabilities (:func:`interp.engine.pattern_attention`), and
  back after.
- ``mlp_hidden``: the neurons, the input of the MLP's down projection (B, k, intermediate_size).

One table, :data:`interp.arch.ARCHITECTURES`, maps each architecture to its module paths; this module resolves an
address against it (:func:`resolve`), and never runs or hooks the model itself (the engine's recorded forward gives
``Site.module`` widths).
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch

from .arch import ARCHITECTURES, Arch, Target, architecture, submodule  # noqa: F401  (the table, re-exported)
from .checks import as_int
from .engine import (  # noqa: F401  (re-exported: the engine's attention points, probe and envoys)
    PATTERN,
    PATTERN_ATTENTION,
    PROBE,
    PatternPoint,
    attach_patterns,
    envoy_at,
    module_shapes,
    pattern_attention,
)
from .errors import SiteError  # noqa: F401  (defined in interp.errors, re-exported here)
from .positions import Position, last

COMPONENTS = ("resid_pre", "attn_out", "head", "resid_mid", "mlp_out", "resid_post")
INNER_COMPONENTS = ("q", "k", "v", "attn_pattern", "mlp_hidden")  # inside attention and MLPs
HEADED = ("head", "q", "k", "v", "attn_pattern")  # the components that take head=


@dataclass(frozen=True)
class Site:
    """A place to read or write: component, layer, token positions and (for ``head``, ``q``, ``k``, ``v`` and
    ``attn_pattern``) a head index; for ``k`` and ``v`` a key/value head (see :func:`kv_group`)."""

    component: str
    layer: int | None = None
    pos: Position = field(default_factory=last)
    head: int | None = None
    path: str | None = None  # set by Site.module
    io: str = "output"

    def __post_init__(self):  # checked when built: layer=True is not layer 1, and np.int64(3) is layer 3
        if not isinstance(self.component, str):
            raise SiteError(f"component must be a name such as 'resid_post'; got {self.component!r}")
        for name in ("layer", "head"):
            value = getattr(self, name)
            if value is not None:
                hint = "; e.g. Site('resid_post', 3) or Site('head', 3, head=1)"
                object.__setattr__(self, name, as_int(value, f"Site {name}", error=SiteError, hint=hint))
        if self.io not in ("input", "output"):
            raise SiteError(f"io must be 'input' or 'output'; got {self.io!r}")
        if self.component == "module" and (not isinstance(self.path, str) or not self.path):
            raise SiteError(
                f"Site.module needs a module's dotted path such as 'model.layers.3.mlp'; got {self.path!r} "
                "(see model.named_modules())"
            )

    @classmethod
    def module(cls, path: str, pos: Position | None = None, *, io: str = "output") -> Site:
        """Any module by its dotted path (``io='input'`` for its first positional input).

        Its output (or input) must be a (batch, tokens, width) activation; the width is the module's own
        (``intermediate_size`` at an MLP's activation function), found from one tiny forward pass of the model.
        """
        if io not in ("input", "output"):
            raise SiteError(f"io must be 'input' or 'output'; got {io!r}")
        return cls("module", None, pos if pos is not None else last(), None, path, io)

    def at(self, pos: Position) -> Site:
        """The same site at other positions."""
        return Site(self.component, self.layer, pos, self.head, self.path, self.io)

    def __repr__(self):
        if self.component == "module":
            return f"Site.module({self.path!r}, {self.pos!r}, io={self.io!r})"
        head = f", head={self.head}" if self.head is not None else ""
        return f"Site({self.component!r}, {self.layer}, {self.pos!r}{head})"


def resolve(lm, site: Site) -> Target:
    """Check ``site`` against ``lm`` and return where to find it; raise :class:`SiteError` if it cannot exist."""
    spec = lm.spec
    if not isinstance(site, Site):
        raise SiteError(f"expected a Site, got {type(site).__name__}: {site!r}")
    if not isinstance(site.pos, Position):
        raise SiteError(f"{site!r}: pos must be a Position such as last() or at(3); got {site.pos!r}")
    if site.component == "module":
        return Target(site.path, site.io, None, spec.n_heads, _module_width(lm, site))
    if site.component not in COMPONENTS + INNER_COMPONENTS:
        known = ", ".join(COMPONENTS + INNER_COMPONENTS)
        raise SiteError(f"unknown component {site.component!r}; known: {known}")
    arch = architecture(lm)
    if site.layer is None or not 0 <= site.layer < spec.n_layers:
        raise SiteError(
            f"layer {site.layer!r} is out of range for {spec.architecture} with {spec.n_layers} layers; "
            f"expected 0..{spec.n_layers - 1}"
        )
    layer = f"{arch.layers}.{site.layer}"
    if site.component == "head":
        if site.head is None or not 0 <= site.head < spec.n_heads:
            raise SiteError(f"head {site.head!r} is out of range: {spec.architecture} has {spec.n_heads} heads")
        return Target(f"{layer}.{arch.head}", "input", site.head, spec.n_heads, spec.head_dim)
    if site.head is not None and site.component not in HEADED:
        raise SiteError(f"head= applies only to components {', '.join(HEADED)}, not {site.component!r}")
    if site.component in INNER_COMPONENTS:
        return _inner(lm, arch, site, layer)
    if site.component == "resid_pre":
        return Target(layer, "input", None, spec.n_heads, spec.d_model)
    if site.component == "resid_post":
        return Target(layer, "output", None, spec.n_heads, spec.d_model)
    if site.component == "resid_mid" and getattr(lm.hf.config, "use_parallel_residual", False):
        raise SiteError(
            f"{spec.architecture} uses a parallel residual (attention and MLP read the same input), so it "
            "has no resid_mid; use resid_pre or resid_post"
        )
    rel, io = getattr(arch, site.component)
    return Target(f"{layer}.{rel}", io, None, spec.n_heads, spec.d_model)


_scope: ContextVar[tuple[object, dict] | None] = ContextVar("interp_sites_scope", default=None)


@contextlib.contextmanager
def resolving(lm):
    """Within the block, each site of ``lm`` resolves once: a fit's steps reuse its Target (the memo ends with it).

    Example:
        >>> resolved(lm, site) is resolved(lm, site)          # outside a block: resolved afresh each time
        False
        >>> with resolving(lm):
        ...     resolved(lm, site) is resolved(lm, site)
        True
    """
    outer = _scope.get()
    token = _scope.set(outer if outer is not None and outer[0] is lm else (lm, {}))
    try:
        yield
    finally:
        _scope.reset(token)


def resolved(lm, site: Site) -> Target:
    """:func:`resolve`, remembered for the enclosing :func:`resolving` block of ``lm`` (plain resolve outside one)."""
    scope = _scope.get()
    if scope is None or scope[0] is not lm:
        return resolve(lm, site)
    memo = scope[1]
    try:
        hit = memo.get(site)
    except TypeError:  # a site whose (user-defined) position is unhashable: resolved every time
        return resolve(lm, site)
    if hit is None:
        hit = memo[site] = resolve(lm, site)
    return hit


def n_kv_heads(lm) -> int:
    """How many key/value heads ``lm`` has (fewer than query heads with grouped-query attention)."""
    return getattr(lm.hf.config, "num_key_value_heads", None) or lm.spec.n_heads


def kv_group(lm, q_head: int) -> int:
    """The key/value head that query head ``q_head`` reads (``Site("k", L, head=kv_group(lm, h))``).

    Example:
        >>> [kv_group(lm, h) for h in range(4)]        # 4 query heads, 2 key/value heads
        [0, 0, 1, 1]
    """
    q_head = as_int(q_head, "query head", low=0, high=lm.spec.n_heads - 1, error=SiteError)
    return q_head // (lm.spec.n_heads // n_kv_heads(lm))


def query_heads(lm, kv_head: int) -> tuple[int, ...]:
    """The query heads that share key/value head ``kv_head``."""
    kv_head = as_int(kv_head, "key/value head", low=0, high=n_kv_heads(lm) - 1, error=SiteError)
    group = lm.spec.n_heads // n_kv_heads(lm)
    return tuple(range(kv_head * group, (kv_head + 1) * group))


def _groups_text(lm) -> str:
    n, kv = lm.spec.n_heads, n_kv_heads(lm)
    if n == kv:
        return f"query head h reads key/value head h ({n} of each)"
    parts = [f"{_span(query_heads(lm, j))} share {j}" for j in range(kv)]
    return f"query heads {'; '.join(parts)} (kv_group(lm, q_head) maps a query head to its key/value head)"


def _span(heads: tuple[int, ...]) -> str:
    return str(heads[0]) if len(heads) == 1 else f"{heads[0]}-{heads[-1]}"


def _missing(lm, site: Site, what: str) -> SiteError:
    return SiteError(
        f"{site!r}: the site table has no {what} for {lm.spec.architecture}; add it to its Arch entry in "
        "interp.arch.ARCHITECTURES, or address the module by path with Site.module(...)"
    )


def _inner(lm, arch: Arch, site: Site, layer: str) -> Target:
    """q, k, v, attn_pattern and mlp_hidden (the sites inside attention and MLPs)."""
    spec, c = lm.spec, site.component
    if c == "mlp_hidden":
        if arch.mlp_hidden is None:
            raise _missing(lm, site, "MLP down projection (mlp_hidden)")
        path = f"{layer}.{arch.mlp_hidden}"
        return Target(path, "input", None, spec.n_heads, _in_width(submodule(lm.hf, path)))
    if c == PATTERN:
        if arch.attn is None:
            raise _missing(lm, site, "attention module (attn_pattern)")
        if site.head is not None and not 0 <= site.head < spec.n_heads:
            raise SiteError(
                f"head {site.head} is out of range for {site.component!r}: {spec.architecture} has {spec.n_heads} "
                f"query heads; expected 0..{spec.n_heads - 1}"
            )
        attach_patterns(lm)
        return Target(f"{layer}.{arch.attn}.{PATTERN}", "output", site.head, spec.n_heads, 0, pattern=True)
    if arch.qkv is None:
        raise _missing(lm, site, "query/key/value projections")
    i = "qkv".index(c)
    hd, n = spec.head_dim, spec.n_heads if c == "q" else n_kv_heads(lm)
    if site.head is not None and not 0 <= site.head < n:
        if c == "q":
            raise SiteError(
                f"head {site.head} is out of range for 'q': {spec.architecture} has {n} query heads; "
                f"expected 0..{n - 1}"
            )
        raise SiteError(
            f"head {site.head} is out of range for {c!r}: {spec.architecture} has n_kv_heads={n} key/value heads "
            f"(for {spec.n_heads} query heads), and head= of 'k' and 'v' counts key/value heads, 0..{n - 1}; "
            f"{_groups_text(lm)}"
        )
    path = f"{layer}.{arch.qkv[i]}"
    width = hd if site.head is not None else n * hd
    if arch.qkv_layout == "separate":
        return Target(path, "output", site.head, n, width)
    heads = range(n) if site.head is None else [site.head]
    if arch.qkv_layout == "split":  # [q | k | v], each n_heads * head_dim
        start = i * spec.n_heads * hd
        cols = ((start + heads[0] * hd, start + (heads[-1] + 1) * hd),)
    elif arch.qkv_layout == "interleaved":  # per head [q_h | k_h | v_h]
        cols = tuple((h * 3 * hd + i * hd, h * 3 * hd + (i + 1) * hd) for h in heads)
    else:
        raise SiteError(f"unknown qkv_layout {arch.qkv_layout!r} in the Arch entry of {spec.architecture}")
    return Target(path, "output", site.head, n, width, cols=cols)


def _in_width(module: torch.nn.Module) -> int:
    """Input width of a projection: ``nn.Linear`` or GPT-2's ``Conv1D`` (weight (in, out))."""
    if isinstance(module, torch.nn.Linear):
        return module.in_features
    return module.weight.shape[0]


def _module_width(lm, site: Site) -> int:
    """The width of the (batch, tokens, width) vectors at ``Site.module(path, io=...)``; refuse anything else."""
    path, io = site.path, site.io
    module = submodule(lm.hf, path)
    kind = type(module).__name__
    unembed = getattr(lm.hf, "get_output_embeddings", lambda: None)()
    if unembed is not None and module is unembed:
        final = (
            f"Site.module({architecture(lm).final_norm!r})"
            if lm.spec.architecture in ARCHITECTURES
            else "the module that feeds it"
        )
        raise SiteError(
            f"{site!r} is the unembedding ({kind}): its input is the final hidden states and its output the logits "
            f"(batch, tokens, vocab={lm.spec.vocab_size}), which every run computes itself, at the positions it "
            "reads only, so an edit there would never reach them; read logits from a result's .logits "
            f"(run(lm, inputs, logits_at=...)) and read or edit the final hidden states at {final}"
        )
    try:
        shapes = module_shapes(lm)
    except Exception:  # a model that cannot run on a tiny batch alone: fall back to the weight's shape
        return _weight_width(module, io, lm.spec.d_model)
    got = shapes.get((path, io))
    B, T = PROBE
    if got is None:
        raise SiteError(
            f"{site!r}: module {path!r} ({kind}) does not run in a forward pass of {lm.spec.architecture}, so it "
            f"has no {io} to read or edit{_instead(lm, path, shapes)}"
        )
    if isinstance(got, tuple) and len(got) == 3 and got[:2] == (B, T):
        return got[2]
    what = f"a tensor of shape {got}" if isinstance(got, tuple) else f"a {got}"
    raise SiteError(
        f"{site!r}: in a forward pass of {B} prompts x {T} tokens the {io} of {path!r} ({kind}) is {what}, not "
        f"({B}, {T}, width) token vectors (batch, tokens, width), so there is nothing to read or edit per token"
        f"{_instead(lm, path, shapes, io)}"
    )


def _instead(lm, path: str, shapes: dict, io: str = "output") -> str:
    """A suggestion: the other side of the same module, or the first module inside it with token vectors."""
    B, T = PROBE

    def ok(key):
        got = shapes.get(key)
        return isinstance(got, tuple) and len(got) == 3 and got[:2] == (B, T)

    other = "input" if io == "output" else "output"
    if ok((path, other)):
        return f"; try Site.module({path!r}, io={other!r}) (width {shapes[(path, other)][2]})"
    inside = [n for (n, side) in shapes if side == "output" and n.startswith(path + ".") and ok((n, "output"))]
    tips = [f"Site.module({min(inside, key=lambda n: n.count('.'))!r})"] if inside else []
    if lm.spec.architecture in ARCHITECTURES:
        tips.append("a component such as Site('resid_post', 0)")
    return f"; try {' or '.join(tips)}" if tips else "; pick a module that outputs token vectors"


def _weight_width(module: torch.nn.Module, io: str, d_model: int) -> int:
    if isinstance(module, torch.nn.Linear):
        return module.in_features if io == "input" else module.out_features
    if isinstance(module, torch.nn.Embedding) and io == "output":
        return module.embedding_dim
    return d_model


def envoy(lm, site: Site):
    """The raw nnsight envoy of the module behind ``site``, to use inside a trace of ``lm.model`` (an example is in
    :mod:`interp.engine.nnsight_backend`)."""
    if isinstance(site, Site) and site.component == "module":  # no check that runs the model: we may be in a trace
        submodule(lm.hf, site.path)
        return envoy_at(lm, site.path)
    return envoy_at(lm, resolve(lm, site).path)


__all__ = [
    "COMPONENTS",
    "HEADED",
    "INNER_COMPONENTS",
    "Site",
    "SiteError",
    "Target",
    "envoy",
    "kv_group",
    "n_kv_heads",
    "query_heads",
    "resolve",
    "resolved",
    "resolving",
]
