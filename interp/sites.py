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
    >>> with lm.model.trace(base):                     # the raw nnsight envoy behind a site
    ...     out = envoy(lm, Site("mlp_out", 1)).output.save()
    >>> out.shape                                      # (B, T, d_model)
    torch.Size([4, 6, 32])

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
  to an eager attention function that exposes the probabilities (:data:`PATTERN_ATTENTION`), and back after.
- ``mlp_hidden``: the neurons, the input of the MLP's down projection (B, k, intermediate_size).

One table, :data:`ARCHITECTURES`, maps each architecture to its module paths.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from .checks import as_int
from .errors import SiteError  # noqa: F401  (defined in interp.errors, re-exported here)
from .positions import Position, last

COMPONENTS = ("resid_pre", "attn_out", "head", "resid_mid", "mlp_out", "resid_post")
INNER_COMPONENTS = ("q", "k", "v", "attn_pattern", "mlp_hidden")  # inside attention and MLPs
HEADED = ("head", "q", "k", "v", "attn_pattern")  # the components that take head=
PATTERN = "attn_pattern"  # name of the point added to each attention module: its output is the probabilities
PATTERN_ATTENTION = "interp_eager"  # the attention implementation that calls it (registered with transformers)


@dataclass(frozen=True)
class Arch:
    """Module paths of one architecture, relative to a decoder layer (except ``layers``).

    Each component maps to ``(path, "input" | "output")``; ``head`` names the output projection whose
    input is split by head. ``None`` marks a component the architecture does not have. ``attn`` is the attention
    module (``attn_pattern`` is read inside it), ``qkv`` the query, key and value projections (one module three
    times where they are fused, laid out as ``qkv_layout``: ``"separate"``, ``"split"`` ``[q | k | v]`` or
    ``"interleaved"`` ``[q_h | k_h | v_h]`` per head) and ``mlp_hidden`` the down projection, whose input is the
    neurons.
    """

    layers: str
    attn_out: tuple[str, str]
    mlp_out: tuple[str, str]
    resid_mid: tuple[str, str] | None
    head: str
    final_norm: str
    unembed: str
    attn: str | None = None
    qkv: tuple[str, str, str] | None = None
    qkv_layout: str = "separate"
    mlp_hidden: str | None = None


_LLAMA = Arch(
    layers="model.layers",
    attn_out=("self_attn", "output"),
    mlp_out=("mlp", "output"),
    resid_mid=("post_attention_layernorm", "input"),
    head="self_attn.o_proj",
    final_norm="model.norm",
    unembed="lm_head",
    attn="self_attn",
    qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    mlp_hidden="mlp.down_proj",
)
# Gemma 2/3 normalise each block's output before adding it to the residual stream.
_GEMMA = Arch(
    layers="model.layers",
    attn_out=("post_attention_layernorm", "output"),
    mlp_out=("post_feedforward_layernorm", "output"),
    resid_mid=("pre_feedforward_layernorm", "input"),
    head="self_attn.o_proj",
    final_norm="model.norm",
    unembed="lm_head",
    attn="self_attn",
    qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),  # before q_norm / k_norm
    mlp_hidden="mlp.down_proj",
)

ARCHITECTURES: dict[str, Arch] = {
    "LlamaForCausalLM": _LLAMA,
    "MistralForCausalLM": _LLAMA,
    "Qwen2ForCausalLM": _LLAMA,
    "Qwen3ForCausalLM": _LLAMA,
    "GemmaForCausalLM": _LLAMA,
    "Gemma2ForCausalLM": _GEMMA,
    "Gemma3ForCausalLM": _GEMMA,
    "GPT2LMHeadModel": Arch(
        layers="transformer.h",
        attn_out=("attn", "output"),
        mlp_out=("mlp", "output"),
        resid_mid=("ln_2", "input"),
        head="attn.c_proj",
        final_norm="transformer.ln_f",
        unembed="lm_head",
        attn="attn",
        qkv=("attn.c_attn",) * 3,
        qkv_layout="split",
        mlp_hidden="mlp.c_proj",
    ),
    "GPTNeoXForCausalLM": Arch(
        layers="gpt_neox.layers",
        attn_out=("attention", "output"),
        mlp_out=("mlp", "output"),
        resid_mid=("post_attention_layernorm", "input"),  # only with use_parallel_residual=False
        head="attention.dense",
        final_norm="gpt_neox.final_layer_norm",
        unembed="lm_head",
        attn="attention",
        qkv=("attention.query_key_value",) * 3,
        qkv_layout="interleaved",
        mlp_hidden="mlp.dense_4h_to_h",
    ),
}


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


@dataclass(frozen=True)
class Target:
    """A site resolved against a model: module path, input or output, and the head slice if any.

    ``cols`` (``(start, stop)`` column ranges, in order) selects part of the last dimension instead of a head
    reshape: q, k or v inside a fused projection. ``pattern`` marks attention probabilities (B, heads, T, T),
    whose vectors are query rows over the T key columns (``width`` 0: it depends on the batch).
    """

    path: str
    io: str
    head: int | None
    n_heads: int
    width: int  # of the vectors there: d_model, head_dim, or a module's own width (Site.module)
    cols: tuple[tuple[int, int], ...] | None = None
    pattern: bool = False

    def __repr__(self):
        extra = f", cols=[{', '.join(f'{a}:{b}' for a, b in self.cols)}]" if self.cols is not None else ""
        extra += ", pattern=True" if self.pattern else ""
        return (
            f"Target(path={self.path!r}, io={self.io!r}, head={self.head!r}, n_heads={self.n_heads}, "
            f"width={self.width}{extra})"
        )


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
        "interp.sites.ARCHITECTURES, or address the module by path with Site.module(...)"
    )


def _inner(lm, arch: Arch, site: Site, layer: str) -> Target:
    """q, k, v, attn_pattern and mlp_hidden (the sites inside attention and MLPs)."""
    spec, c = lm.spec, site.component
    if c == "mlp_hidden":
        if arch.mlp_hidden is None:
            raise _missing(lm, site, "MLP down projection (mlp_hidden)")
        path = f"{layer}.{arch.mlp_hidden}"
        return Target(path, "input", None, spec.n_heads, _in_width(_module(lm.hf, path)))
    if c == PATTERN:
        if arch.attn is None:
            raise _missing(lm, site, "attention module (attn_pattern)")
        if site.head is not None and not 0 <= site.head < spec.n_heads:
            raise SiteError(
                f"head {site.head} is out of range for {site.component!r}: {spec.architecture} has {spec.n_heads} "
                f"query heads; expected 0..{spec.n_heads - 1}"
            )
        _attach_patterns(lm)
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


# ---- attn_pattern: an eager attention function that passes the probabilities through a module ------------


class PatternPoint(torch.nn.Module):
    """Identity on the attention probabilities (B, heads, T, T): the module whose output is ``attn_pattern``.

    It has no parameters; :func:`_attach_patterns` adds one to each attention module of a model, and
    :func:`pattern_attention` makes the model's attention call it.
    """

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        return probs


def _eager(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None, **kwargs):
    """Eager attention (as in transformers' ``eager_attention_forward``) with the probabilities passed through the
    module's :class:`PatternPoint`: q, k (B, h, T, d) and v -> (B, T, h, d) output and (B, h, T, S) probabilities."""
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    group = query.shape[1] // key.shape[1]
    if group > 1:  # grouped-query attention: each key/value head serves `group` consecutive query heads
        key, value = key.repeat_interleave(group, dim=1), value.repeat_interleave(group, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, h, T, S)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, : key.shape[-2]]
    probs = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = torch.nn.functional.dropout(probs, p=dropout, training=module.training)
    point = getattr(module, PATTERN, None)
    if point is not None:
        probs = point(probs)
    out = torch.matmul(probs, value).transpose(1, 2).contiguous()  # (B, h, T, d) -> (B, T, h, d)
    return out, probs


_registered = []


def _register():
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, eager_mask

        AttentionInterface.register(PATTERN_ATTENTION, _eager)
        AttentionMaskInterface.register(PATTERN_ATTENTION, eager_mask)
        _registered.append(True)


def _attach_patterns(lm) -> None:
    """Give every attention module of ``lm`` its :class:`PatternPoint` (once; refuse models that cannot)."""
    arch = architecture(lm)
    if getattr(lm, "_patterns", False):
        return
    can = getattr(type(lm.hf), "_can_set_attn_implementation", None)
    if can is None or not can() or not hasattr(lm.hf.config, "_attn_implementation"):
        raise SiteError(
            f"{lm.spec.architecture} cannot provide attn_pattern: its attention does not dispatch through "
            "transformers' AttentionInterface, so the probabilities cannot be exposed; read the attention "
            "weights with output_attentions=True under attn_implementation='eager', or use Site.module(...)"
        )
    for i in range(lm.spec.n_layers):
        attn = _module(lm.hf, f"{arch.layers}.{i}.{arch.attn}")
        if not isinstance(getattr(attn, PATTERN, None), PatternPoint):
            attn.add_module(PATTERN, PatternPoint())
    lm._patterns = True
    lm._order = None  # the execution order is found again, with the new points in it


@contextlib.contextmanager
def pattern_attention(model: torch.nn.Module, on: bool = True):
    """While the block runs, ``model`` uses :data:`PATTERN_ATTENTION` (eager, exposing ``attn_pattern``); its own
    attention implementation is restored after. ``on=False`` changes nothing."""
    config = getattr(model, "config", None)
    if not on or config is None or getattr(config, "_attn_implementation", None) == PATTERN_ATTENTION:
        yield
        return
    _register()
    old = config._attn_implementation
    config._attn_implementation = PATTERN_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = old


def architecture(lm) -> Arch:
    name = lm.spec.architecture
    if name not in ARCHITECTURES:
        raise SiteError(
            f"no site table for architecture {name!r} (known: {', '.join(sorted(ARCHITECTURES))}); address "
            "modules by path instead, e.g. Site.module('model.layers.3.mlp', last()), or add an Arch entry "
            "to interp.sites.ARCHITECTURES"
        )
    return ARCHITECTURES[name]


def _module(root: torch.nn.Module, path: str) -> torch.nn.Module:
    try:
        return root.get_submodule(path)
    except AttributeError:
        raise SiteError(
            f"no module {path!r} in {type(root).__name__}; module paths look like "
            f"{next(n for n, _ in root.named_modules() if n.count('.') >= 2)!r} (see model.named_modules())"
        ) from None


_PROBE = (2, 3)  # (batch, tokens) of the forward pass that finds what each module takes and returns


def module_shapes(lm) -> dict[tuple[str, str], tuple[int, ...] | str]:
    """What each module of ``lm.hf`` takes and returns in one forward of 2 prompts x 3 tokens (found once).

    Keys are ``(path, "input" | "output")``; values the shape of the tensor the engine would edit there (the first
    element of a tuple, the first positional input), or the name of the type found instead. Modules that do not
    run have no entry.
    """
    cached = getattr(lm, "_site_shapes", None)
    if cached is not None:
        return cached
    found: dict = {}

    def describe(x):
        x = x[0] if isinstance(x, tuple) and x else x
        return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__

    def pre(name):
        def hook(mod, args, kwargs):
            if args:
                x = args[0]
            else:
                x = kwargs.get("hidden_states", next(iter(kwargs.values()), None))
            found.setdefault((name, "input"), describe(x))

        return hook

    def post(name):
        def hook(mod, args, output):
            found.setdefault((name, "output"), describe(output))

        return hook

    handles = []
    B, T = _PROBE
    ids = torch.arange(B * T, device=lm.device).reshape(B, T) % max(1, lm.spec.vocab_size)  # any valid token ids
    kwargs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "position_ids": torch.arange(T).expand(B, T)}
    kwargs["position_ids"] = kwargs["position_ids"].to(lm.device)
    try:
        for name, mod in lm.hf.named_modules():
            handles.append(mod.register_forward_pre_hook(pre(name), with_kwargs=True))
            handles.append(mod.register_forward_hook(post(name)))
        with torch.no_grad():
            lm.hf(**kwargs)
    finally:
        for h in handles:
            h.remove()
    lm._site_shapes = found
    return found


def _module_width(lm, site: Site) -> int:
    """The width of the (batch, tokens, width) vectors at ``Site.module(path, io=...)``; refuse anything else."""
    path, io = site.path, site.io
    module = _module(lm.hf, path)
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
    B, T = _PROBE
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
    B, T = _PROBE

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
    """The raw nnsight envoy of the module behind ``site`` (use inside ``lm.model.trace``)."""
    if isinstance(site, Site) and site.component == "module":  # no check that runs the model: we may be in a trace
        _module(lm.hf, site.path)
        return envoy_at(lm, site.path)
    return envoy_at(lm, resolve(lm, site).path)


def envoy_at(lm, path: str):
    """The nnsight envoy of the module at a dotted ``path`` of ``lm.hf``."""
    env = lm.model
    for part in path.split("."):
        if part in ("input", "inputs", "output", "source"):  # nnsight serves these names; it renames modules so
            part = "E_" + part
        env = env[int(part)] if part.isdigit() else getattr(env, part)
    return env
