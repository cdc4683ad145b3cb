"""The architecture table: where each component lives in each supported model family, and resolved addresses.

Example:
    >>> architecture(lm).mlp_out                      # a Llama: the MLP's output is what it adds to the stream
    ('mlp', 'output')
    >>> ARCHITECTURES["Gemma3ForCausalLM"].mlp_out    # Gemma 2/3 normalise each block's output first ...
    ('post_feedforward_layernorm', 'output')
    >>> ARCHITECTURES["Gemma3ForCausalLM"].mlp        # ... so the MLP module itself has its own entry
    'mlp'
    >>> submodule(lm.hf, "model.layers.1.mlp.down_proj")
    Linear(in_features=64, out_features=32, bias=False)

One table, :data:`ARCHITECTURES`, maps each architecture to its module paths; :class:`Target` is an address in a
model (module path, input or output, head or column slice), what :func:`interp.sites.resolve` gives for a
:class:`interp.Site` and what the engine reads and edits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import SiteError


@dataclass(frozen=True)
class Arch:
    """Module paths of one architecture, relative to a decoder layer (except ``layers``, ``final_norm``, ``unembed``).

    Each component maps to ``(path, "input" | "output")``; ``head`` names the output projection whose
    input is split by head. ``None`` marks a component the architecture does not have. ``attn`` is the attention
    module (``attn_pattern`` is read inside it), ``qkv`` the query, key and value projections (one module three
    times where they are fused, laid out as ``qkv_layout``: ``"separate"``, ``"split"`` ``[q | k | v]`` or
    ``"interleaved"`` ``[q_h | k_h | v_h]`` per head), ``mlp_hidden`` the down projection, whose input is the
    neurons, and ``mlp`` the MLP module itself (which acts token by token; on Gemma 2/3 ``mlp_out`` is the norm
    after it).
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
    mlp: str | None = "mlp"


LLAMA = Arch(
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
GEMMA = Arch(
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
    mlp="mlp",
)

ARCHITECTURES: dict[str, Arch] = {
    "LlamaForCausalLM": LLAMA,
    "MistralForCausalLM": LLAMA,
    "Qwen2ForCausalLM": LLAMA,
    "Qwen3ForCausalLM": LLAMA,
    "GemmaForCausalLM": LLAMA,
    "Gemma2ForCausalLM": GEMMA,
    "Gemma3ForCausalLM": GEMMA,
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
        mlp="mlp",
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
        mlp="mlp",
    ),
}


def architecture(lm) -> Arch:
    """The table entry of ``lm``'s architecture; a :class:`SiteError` naming the known ones if it has none."""
    name = lm.spec.architecture
    if name not in ARCHITECTURES:
        raise SiteError(
            f"no site table for architecture {name!r} (known: {', '.join(sorted(ARCHITECTURES))}); address "
            "modules by path instead, e.g. Site.module('model.layers.3.mlp', last()), or add an Arch entry "
            "to interp.arch.ARCHITECTURES"
        )
    return ARCHITECTURES[name]


def submodule(root: torch.nn.Module, path: str) -> torch.nn.Module:
    """The module at dotted ``path`` under ``root``; a :class:`SiteError` showing what paths look like if none."""
    try:
        return root.get_submodule(path)
    except AttributeError:
        raise SiteError(
            f"no module {path!r} in {type(root).__name__}; module paths look like "
            f"{next(n for n, _ in root.named_modules() if n.count('.') >= 2)!r} (see model.named_modules())"
        ) from None


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


__all__ = ["Arch", "ARCHITECTURES", "Target", "architecture", "submodule"]
