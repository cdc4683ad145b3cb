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
    >>> resolve(lm, Site("attn_out", 2))
    Traceback (most recent call last):
    interp.sites.SiteError: layer 2 is out of range for LlamaForCausalLM with 2 layers; expected 0..1
    >>> with lm.model.trace(base):                     # the raw nnsight envoy behind a site
    ...     out = envoy(lm, Site("mlp_out", 1)).output.save()
    >>> out.shape                                      # (B, T, d_model)
    torch.Size([4, 6, 32])

Components follow TransformerLens: ``resid_pre`` (layer input), ``resid_mid`` (after attention, before
the MLP), ``resid_post`` (layer output), ``attn_out`` and ``mlp_out`` (what each block adds to the
residual stream) and ``head`` (one head's slice of the attention output before the output projection).
One table, :data:`ARCHITECTURES`, maps each architecture to its module paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .checks import as_int
from .positions import Position, last

COMPONENTS = ("resid_pre", "attn_out", "head", "resid_mid", "mlp_out", "resid_post")


class SiteError(ValueError):
    """A site that does not exist in the model."""


@dataclass(frozen=True)
class Arch:
    """Module paths of one architecture, relative to a decoder layer (except ``layers``).

    Each component maps to ``(path, "input" | "output")``; ``head`` names the output projection whose
    input is split by head. ``None`` marks a component the architecture does not have.
    """

    layers: str
    attn_out: tuple[str, str]
    mlp_out: tuple[str, str]
    resid_mid: tuple[str, str] | None
    head: str
    final_norm: str
    unembed: str


_LLAMA = Arch(
    layers="model.layers",
    attn_out=("self_attn", "output"),
    mlp_out=("mlp", "output"),
    resid_mid=("post_attention_layernorm", "input"),
    head="self_attn.o_proj",
    final_norm="model.norm",
    unembed="lm_head",
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
    ),
    "GPTNeoXForCausalLM": Arch(
        layers="gpt_neox.layers",
        attn_out=("attention", "output"),
        mlp_out=("mlp", "output"),
        resid_mid=("post_attention_layernorm", "input"),  # only with use_parallel_residual=False
        head="attention.dense",
        final_norm="gpt_neox.final_layer_norm",
        unembed="lm_head",
    ),
}


@dataclass(frozen=True)
class Site:
    """A place to read or write: component, layer, token positions and (for ``head``) a head index."""

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
    """A site resolved against a model: module path, input or output, and the head slice if any."""

    path: str
    io: str
    head: int | None
    n_heads: int
    width: int  # of the vectors there: d_model, head_dim, or a module's own width (Site.module)


def resolve(lm, site: Site) -> Target:
    """Check ``site`` against ``lm`` and return where to find it; raise :class:`SiteError` if it cannot exist."""
    spec = lm.spec
    if not isinstance(site, Site):
        raise SiteError(f"expected a Site, got {type(site).__name__}: {site!r}")
    if not isinstance(site.pos, Position):
        raise SiteError(f"{site!r}: pos must be a Position such as last() or at(3); got {site.pos!r}")
    if site.component == "module":
        return Target(site.path, site.io, None, spec.n_heads, _module_width(lm, site))
    if site.component not in COMPONENTS:
        raise SiteError(f"unknown component {site.component!r}; known: {', '.join(COMPONENTS)}")
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
    if site.head is not None:
        raise SiteError(f"head= applies only to component 'head', not {site.component!r}")
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
