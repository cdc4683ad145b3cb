"""Bad-input rows: numbers, sites, bases, interventions and configs. Joined into one table by test_bad_inputs.

Numbers are checked when a value is built (interp.checks): NaN and infinity, zero or negative temperatures,
non-integer ranks, dims, layers and heads (2.7 and 3.0 alike; bools too; numpy integers are integers), and
rank-deficient or non-finite inits. Sites are checked against the model before any forward pass.
"""

from __future__ import annotations

import numpy as np
import torch
from experiment_scripts import script
from test_bad_inputs import Bad

import reft
from interp import (
    Boundless,
    Coordinate,
    Interchange,
    LowRankRotation,
    Mean,
    Site,
    SiteError,
    Steer,
    collect,
    interchange,
    last,
)
from interp.batches import DASError
from interp.causal import CausalModelError, Pairs
from interp.das import Alignment, DASConfig, fit_das
from interp.errors import ConfigError
from interp.inputs import InputError
from interp.positions import PositionError, at, first, span, token
from interp.sites import kv_group, query_heads
from interp.subspace import BasisError
from reft.interventions import ReftIntervention

IDS = torch.arange(3, 13).reshape(2, 5)  # (B, T) token ids for the tiny Llama
SRC = torch.arange(20, 30).reshape(2, 5)
V = torch.ones(32)
NAN = float("nan")
NAN_VEC = torch.tensor([1.0, NAN] + [0.0] * 30)
SITE = Site("resid_post", 0, last())


def _collect(env, *args):
    """``_collect(env, site)`` on the tiny Llama, or ``_collect(env, lm, site)``."""
    lm, site = (env.lm, *args) if len(args) == 1 else args
    return collect(lm, IDS, at=site)


def _no_interface_llama():
    """A Llama whose class says it cannot switch attention implementation (as models outside transformers' attention
    interface say): attn_pattern must be refused before any forward pass."""
    from transformers import LlamaConfig, LlamaForCausalLM

    import interp

    cls = type("LlamaForCausalLM", (LlamaForCausalLM,), {"_can_set_attn_implementation": classmethod(lambda c: False)})
    cfg = LlamaConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=64, vocab_size=97)
    return interp.LM(cls(cfg))


def _pairs(n=8, labels=None):
    """``n`` one-token counterfactual pairs over token ids (variable G), answers 5 or 6."""
    return Pairs(("G",), [[10 + i] for i in range(n)], [[[30 + i] for i in range(n)]], labels or [5] * n, [6] * n)


def _fit(env, pairs=None, site=SITE, **kw):
    return fit_das(env.lm, _pairs() if pairs is None else pairs, at=site, **{"progress": False, **kw})


def _set_temperature(value):
    b = Boundless(8)
    b.temperature = value


def _bert():
    from transformers import BertConfig, BertForMaskedLM

    import interp

    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=97)
    return interp.LM(BertForMaskedLM(cfg))


def _parallel_neox():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    import interp

    cfg = GPTNeoXConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=64, vocab_size=97)
    return interp.LM(GPTNeoXForCausalLM(cfg))  # use_parallel_residual=True by default


ROWS = [
    # ---- bases: rank, d_model, dims, inits (interp.subspace) -----------------------------------------------
    Bad(
        "rank above d_model",
        lambda env: LowRankRotation(8, 9),
        BasisError,
        r"rank must be an integer in \[1, 8\]; got 9",
    ),
    Bad("rank 0", lambda env: LowRankRotation(8, 0), BasisError, r"rank must be an integer in \[1, 8\]; got 0"),
    Bad("rank 2.7", lambda env: LowRankRotation(8, 2.7), BasisError, r"rank must be an integer in \[1, 8\]; got 2\.7"),
    Bad("rank 3.0 float", lambda env: LowRankRotation(8, 3.0), BasisError, r"rank must be an integer .*; got 3\.0"),
    Bad(
        "rank True",
        lambda env: LowRankRotation(8, True),
        BasisError,
        r"rank must be an integer .*; got True \(a bool\)",
    ),
    Bad("rank nan", lambda env: LowRankRotation(8, NAN), BasisError, r"rank must be an integer .*; got nan"),
    Bad(
        "basis d_model 8.5",
        lambda env: LowRankRotation(8.5, 2),
        BasisError,
        r"d_model must be a positive integer; got 8\.5",
    ),
    Bad(
        "rotation d_model 0",
        lambda env: Boundless(0),
        BasisError,
        r"Boundless d_model must be a positive integer; got 0",
    ),
    Bad(
        "init wrong shape",
        lambda env: LowRankRotation(8, 2, init=torch.randn(3, 8)),
        BasisError,
        r"init must have shape \(2, 8\); got \(3, 8\)",
    ),
    Bad(
        "init with NaN",
        lambda env: LowRankRotation(4, 2, init=torch.tensor([[1.0, 0, 0, 0], [0, NAN, 0, 0]])),
        BasisError,
        r"init must be finite; got .*1 NaN and 0 infinite",
    ),
    Bad(
        "init with inf",
        lambda env: LowRankRotation(4, 2, init=torch.tensor([[1.0, 0, 0, 0], [0, float("inf"), 0, 0]])),
        BasisError,
        r"init must be finite; got .*0 NaN and 1 infinite",
    ),
    Bad(
        "init all zero",
        lambda env: LowRankRotation(8, 2, init=torch.zeros(2, 8)),
        BasisError,
        r"init must have 2 linearly independent rows.*rank-deficient.*numerical rank 0 of 2",
    ),
    Bad(
        "init repeated rows",
        lambda env: LowRankRotation(8, 3, init=torch.eye(8)[[0, 0, 1]]),
        BasisError,
        r"init must have 3 linearly independent rows.*numerical rank 2 of 3",
    ),
    Bad(
        "coordinate dim out of range",
        lambda env: Coordinate(4, [5]),
        BasisError,
        r"distinct integers in \[0, 4\); got \[5\]",
    ),
    Bad(
        "coordinate dims 1.7 2.2",
        lambda env: Coordinate(6, [1.7, 2.2]),
        BasisError,
        r"distinct integers in \[0, 6\); got \[1\.7, 2\.2\]",
    ),
    Bad(
        "coordinate dim True",
        lambda env: Coordinate(6, [True]),
        BasisError,
        r"distinct integers in \[0, 6\); got \[True\]",
    ),
    Bad(
        "coordinate dims repeated", lambda env: Coordinate(6, [1, 1]), BasisError, r"distinct integers .*; got \[1, 1\]"
    ),
    Bad("coordinate no dims", lambda env: Coordinate(6, []), BasisError, r"distinct integers .*; got \[\]"),
    Bad(
        "basis width mismatch",
        lambda env: LowRankRotation(8, 2).interchange(torch.zeros(1, 6), torch.zeros(1, 6)),
        BasisError,
        r"width 8 but the vectors have width 6; build the basis with d_model=6",
    ),
    # ---- Boundless temperature and boundary -------------------------------------------------------------
    Bad(
        "boundless temperature 0",
        lambda env: Boundless(8, temperature=0),
        BasisError,
        r"temperature must be a positive number; got 0",
    ),
    Bad(
        "boundless temperature -1",
        lambda env: Boundless(8, temperature=-1.0),
        BasisError,
        r"positive number; got -1\.0",
    ),
    Bad(
        "boundless temperature nan", lambda env: Boundless(8, temperature=NAN), BasisError, r"positive number; got nan"
    ),
    Bad(
        "boundless temperature set to 0",
        lambda env: _set_temperature(0.0),
        BasisError,
        r"temperature .*; got 0\.0.*never to 0",
    ),
    Bad(
        "boundless init_fraction 0",
        lambda env: Boundless(8, init_fraction=0),
        BasisError,
        r"init_fraction must be a number in \(0, 1\]; got 0",
    ),
    Bad(
        "boundless init_fraction nan",
        lambda env: Boundless(8, init_fraction=NAN),
        BasisError,
        r"init_fraction .*; got nan",
    ),
    # ---- interventions (interp.interventions) ------------------------------------------------------------
    Bad("steer vector NaN", lambda env: Steer(NAN_VEC), BasisError, r"steering vector must be finite; got .*1 NaN"),
    Bad(
        "steer scale NaN", lambda env: Steer(V, scale=NAN), BasisError, r"Steer scale must be a finite number; got nan"
    ),
    Bad(
        "steer scale inf",
        lambda env: Steer(V, scale=float("inf")),
        BasisError,
        r"Steer scale must be a finite number; got inf",
    ),
    Bad(
        "steer scale string",
        lambda env: Steer(V, scale="4"),
        BasisError,
        r"Steer scale must be a finite number; got '4'",
    ),
    Bad(
        "steer vector 2-D",
        lambda env: Steer(torch.ones(2, 32)),
        BasisError,
        r"steering vector must be a \(width,\) .*shape \(2, 32\)",
    ),
    Bad("mean vector NaN", lambda env: Mean(NAN_VEC), BasisError, r"Mean ablation vector must be finite; got .*1 NaN"),
    Bad(
        "interchange via int",
        lambda env: Interchange(5),
        TypeError,
        r"Interchange\(via=\.\.\.\) must be None .*got int: 5",
    ),
    Bad(
        "alignment split 1.5",
        lambda env: Alignment(LowRankRotation(8, 2), (1.5,)),
        DASError,
        r"splits \(1\.5,\).*; got 1\.5",
    ),
    # ---- sites (interp.sites) -----------------------------------------------------------------------------
    Bad(
        "site layer True",
        lambda env: Site("resid_post", True),
        SiteError,
        r"Site layer must be an integer; got True \(a bool\)",
    ),
    Bad("site layer 1.0", lambda env: Site("resid_post", 1.0), SiteError, r"Site layer must be an integer; got 1\.0"),
    Bad("site head True", lambda env: Site("head", 0, head=True), SiteError, r"Site head must be an integer; got True"),
    Bad("site head 1.5", lambda env: Site("head", 0, head=1.5), SiteError, r"Site head must be an integer; got 1\.5"),
    Bad("site component not a name", lambda env: Site(3, 0), SiteError, r"component must be a name .*; got 3"),
    Bad(
        "site io",
        lambda env: Site("resid_post", 0, io="inputs"),
        SiteError,
        r"io must be 'input' or 'output'; got 'inputs'",
    ),
    Bad(
        "module io",
        lambda env: Site.module("model.norm", io="in"),
        SiteError,
        r"io must be 'input' or 'output'; got 'in'",
    ),
    Bad("module empty path", lambda env: Site.module(""), SiteError, r"dotted path .*; got ''"),
    Bad("module path not a string", lambda env: Site.module(3), SiteError, r"dotted path .*; got 3"),
    Bad(
        "layer out of range",
        lambda env: _collect(env, Site("resid_post", 2)),
        SiteError,
        r"layer 2 is out of range .* 0\.\.1",
    ),
    Bad("layer negative", lambda env: _collect(env, Site("resid_post", -1)), SiteError, r"layer -1 is out of range"),
    Bad("layer missing", lambda env: _collect(env, Site("resid_post")), SiteError, r"layer None is out of range"),
    Bad(
        "unknown component",
        lambda env: _collect(env, Site("resid_side", 0)),
        SiteError,
        r"unknown component 'resid_side'",
    ),
    Bad("head out of range", lambda env: _collect(env, Site("head", 0, head=4)), SiteError, r"head 4 is out of range"),
    Bad("head missing", lambda env: _collect(env, Site("head", 0)), SiteError, r"head None is out of range"),
    Bad(
        "head on mlp_out",
        lambda env: _collect(env, Site("mlp_out", 0, head=1)),
        SiteError,
        r"head= applies only .* not 'mlp_out'",
    ),
    Bad(
        "no such module",
        lambda env: _collect(env, Site.module("model.nothing.here")),
        SiteError,
        r"no module 'model.nothing.here'",
    ),
    Bad(
        "unknown architecture",
        lambda env: collect(_bert(), IDS, at=Site("resid_post", 0)),
        SiteError,
        r"no site table for architecture 'BertForMaskedLM'.*Site.module",
    ),
    Bad(
        "parallel residual has no resid_mid",
        lambda env: interchange(_parallel_neox(), IDS, SRC, at=Site("resid_mid", 0)),
        SiteError,
        r"GPTNeoXForCausalLM uses a parallel residual.*resid_pre or resid_post",
    ),
    # module sites: the width is the module's own; what is not (batch, tokens, width) is refused
    Bad(
        "d_model basis at act_fn",
        lambda env: interchange(
            env.lm, IDS, SRC, at=Site.module("model.layers.0.mlp.act_fn"), via=LowRankRotation(32, 4)
        ),
        BasisError,
        r"width 32 but the site's vectors have width 64; build the basis with d_model=64",
    ),
    Bad(
        "lm_head output",
        lambda env: _collect(env, Site.module("lm_head")),
        SiteError,
        r"Site.module\('lm_head'.*is the unembedding.*logits \(batch, tokens, vocab=97\).*Site.module\('model.norm'\)",
    ),
    Bad(
        "lm_head input",
        lambda env: interchange(env.lm, IDS, SRC, at=Site.module("lm_head", io="input")),
        SiteError,
        r"Site.module\('lm_head'.*io='input'\) is the unembedding.*Site.module\('model.norm'\)",
    ),
    Bad(
        "module outputs a model output",
        lambda env: _collect(env, Site.module("model")),
        SiteError,
        r"output of 'model' \(LlamaModel\) is a BaseModelOutputWithPast, not \(2, 3, width\) token vectors.*try",
    ),
    Bad(
        "module input is token ids",
        lambda env: _collect(env, Site.module("model.embed_tokens", io="input")),
        SiteError,
        r"input of 'model.embed_tokens' \(Embedding\) is a tensor of shape \(2, 3\).*io='output'\) \(width 32\)",
    ),
    Bad(
        "module that never runs",
        lambda env: _collect(env, Site.module("model.layers")),
        SiteError,
        r"module 'model.layers' \(ModuleList\) does not run.*Site.module\('model.layers.0'\)",
    ),
    # ---- DAS: config and fit_das arguments (interp.das) ---------------------------------------------------
    Bad(
        "das temperature end 0",
        lambda env: DASConfig(temperature=(50, 0)),
        DASError,
        r"DASConfig.temperature end must be a positive number; got 0 in temperature=\(50, 0\)",
    ),
    Bad(
        "das temperature start nan",
        lambda env: DASConfig(temperature=(NAN, 0.1)),
        DASError,
        r"temperature start .*; got nan",
    ),
    Bad(
        "das temperature one number",
        lambda env: DASConfig(temperature=50.0),
        DASError,
        r"two positive numbers .*; got 50\.0",
    ),
    Bad("das lr nan", lambda env: DASConfig(lr=NAN), DASError, r"DASConfig.lr must be a positive number; got nan"),
    Bad("das lr 0", lambda env: DASConfig(lr=0), DASError, r"DASConfig.lr must be a positive number; got 0"),
    Bad(
        "das steps 2.5",
        lambda env: DASConfig(steps=2.5),
        DASError,
        r"DASConfig.steps must be a positive integer; got 2\.5",
    ),
    Bad("das steps True", lambda env: DASConfig(steps=True), DASError, r"DASConfig.steps .*; got True \(a bool\)"),
    Bad(
        "das batch_size 0",
        lambda env: DASConfig(batch_size=0),
        DASError,
        r"DASConfig.batch_size must be a positive integer; got 0",
    ),
    Bad(
        "das warmup 1",
        lambda env: DASConfig(warmup_ratio=1.0),
        DASError,
        r"DASConfig.warmup_ratio must be a number in \[0, 1\); got 1\.0",
    ),
    Bad(
        "das val_fraction inf", lambda env: DASConfig(val_fraction=float("inf")), DASError, r"val_fraction .*; got inf"
    ),
    Bad(
        "das boundary_weight negative",
        lambda env: DASConfig(boundary_weight=-1.0),
        DASError,
        r"boundary_weight .*; got -1\.0",
    ),
    Bad("das seed 0.5", lambda env: DASConfig(seed=0.5), DASError, r"DASConfig.seed must be an integer; got 0\.5"),
    Bad(
        "das schedule", lambda env: DASConfig(schedule="cosin"), DASError, r"DASConfig.schedule must be .*; got 'cosin'"
    ),
    Bad(
        "das progress",
        lambda env: DASConfig(progress="yes"),
        DASError,
        r"DASConfig.progress must be True or False; got 'yes'",
    ),
    Bad(
        "das unknown config keys",
        lambda env: DASConfig.from_dict({"steps": 3, "weight_decay": 0.1}),
        DASError,
        r"unknown DASConfig keys \['weight_decay'\]",
    ),
    Bad("das unknown option", lambda env: _fit(env, rank=1, setps=10), DASError, r"unknown options \['setps'\]"),
    Bad("das no pairs", lambda env: _fit(env, _pairs()[:0], rank=1), DASError, r"empty"),
    Bad("das rank 0", lambda env: _fit(env, rank=0), DASError, r"rank at .* must be an integer in \[1, 32\] .*; got 0"),
    Bad(
        "das rank 33",
        lambda env: _fit(env, rank=33),
        DASError,
        r"rank at .* must be an integer in \[1, 32\] .*; got 33",
    ),
    Bad("das rank 2.7", lambda env: _fit(env, rank=2.7), DASError, r"rank at .* must be an integer .*; got 2\.7"),
    Bad("das rank True", lambda env: _fit(env, rank=True), DASError, r"rank at .* must be an integer .*; got True"),
    Bad("das no rank", lambda env: _fit(env), DASError, r"give rank=\.\.\."),
    Bad(
        "das basis width", lambda env: _fit(env, via=LowRankRotation(16, 1)), BasisError, r"width 16 but the vectors at"
    ),
    Bad(
        "das splits per variable",
        lambda env: _fit(env, rank=2, splits=(1, 1)),
        DASError,
        r"splits \(1, 1\) has 2 blocks for 1 variables",
    ),
    Bad(
        "das label outside vocabulary",
        lambda env: _fit(env, _pairs(8, labels=[1000] * 8), rank=1),
        InputError,
        r"label ids \[1000.*outside the vocabulary \[0, 97\)",
    ),
    Bad(
        "pairs of different lengths",
        lambda env: Pairs(("G",), [[10], [11]], [[30]], [5, 5], [6, 6]),
        CausalModelError,
        r"base has 2 examples",
    ),
    Bad(
        "das position missing on a source",
        lambda env: _fit(
            env, Pairs(("G",), [[10, 11, 12]] * 4, [[[30]] * 4], [5] * 4, [6] * 4), Site("resid_post", 0, at(2)), rank=1
        ),
        PositionError,
        r"source of 'G'",
    ),
    # ---- ReFT interventions (reft.interventions) and attach -------------------------------------------------
    Bad(
        "loreft rank 33",
        lambda env: reft.LoReFT(32, 33),
        reft.ReftError,
        r"LoReFT rank must be an integer in \[1, 32\]; got 33",
    ),
    Bad(
        "loreft rank 2.7",
        lambda env: reft.LoReFT(32, 2.7),
        reft.ReftError,
        r"LoReFT rank must be an integer in \[1, 32\]; got 2\.7",
    ),
    Bad("loreft rank True", lambda env: reft.LoReFT(32, True), reft.ReftError, r"LoReFT rank .*; got True \(a bool\)"),
    Bad("loreft rank 0", lambda env: reft.LoReFT(32, 0), reft.ReftError, r"LoReFT rank .*; got 0"),
    Bad(
        "direft rank numpy float",
        lambda env: reft.DiReFT(32, np.float64(2.0)),
        reft.ReftError,
        r"DiReFT rank .*; got (np\.float64\()?2\.0",
    ),
    Bad(
        "noreft d_model 32.0",
        lambda env: reft.NoReFT(32.0, 4),
        reft.ReftError,
        r"NoReFT d_model must be a positive integer; got 32\.0",
    ),
    Bad("reft kind not a name", lambda env: reft.make(3, 32, 4), reft.ReftError, r"kind must be a name .*; got 3"),
    Bad(
        "reft orthogonal not a bool",
        lambda env: ReftIntervention(32, 4, orthogonal="no"),
        reft.ReftError,
        r"orthogonal must be True or False; got 'no'",
    ),
    Bad(
        "reft attach layer out of range",
        lambda env: reft.attach(env.lm, {Site("resid_post", 5, last()): reft.LoReFT(32, 2)}),
        SiteError,
        r"layer 5 is out of range",
    ),
    Bad(
        "reft attach width",
        lambda env: reft.attach(env.lm, {Site("resid_post", 0, last()): reft.LoReFT(16, 2)}),
        BasisError,
        r"LoReFT has d_model=16 but the site's vectors have width 32",
    ),
    Bad(
        "reft attach head width",
        lambda env: reft.attach(env.lm, {SITE: reft.LoReFT(32, 4)}, head=reft.ClassifierHead(16, 2)),
        reft.ReftError,
        r"head must be a reft.ClassifierHead\(d_model=32, n_labels\); got .*in_features=16",
    ),
    Bad(
        "reft empty prompt",
        lambda env: reft.as_examples([{"prompt": "", "response": " x"}]),
        reft.ReftError,
        r"empty prompt",
    ),
    # positions: counts and indices are integers, texts non-empty strings
    Bad("position at float", lambda env: at(1.7), PositionError, r"at\(i\): i must be an integer; got 1\.7"),
    Bad("position first bool", lambda env: first(True), PositionError, r"first\(n\).*got True \(a bool\)"),
    Bad("position span float stop", lambda env: span(1, 2.5), PositionError, r"span stop must be an integer; got 2\.5"),
    Bad("position token empty", lambda env: token(""), PositionError, r"non-empty string.*got ''"),
    Bad("position token occurrence float", lambda env: token(" a", 0.5), PositionError, r"occurrence.*got 0\.5"),
    # sites inside attention and MLPs (the tiny Llama: 4 query heads, 2 key/value heads, intermediate_size 64)
    Bad(
        "k head beyond the key/value heads",
        lambda env: _collect(env, Site("k", 0, head=2)),
        SiteError,
        r"head 2 is out of range for 'k'.*n_kv_heads=2 key/value heads \(for 4 query heads\).*0\.\.1; "
        r"query heads 0-1 share 0; 2-3 share 1 \(kv_group",
    ),
    Bad(
        "v head beyond the key/value heads",
        lambda env: _collect(env, Site("v", 0, head=3)),
        SiteError,
        r"head 3 is out of range for 'v'.*n_kv_heads=2",
    ),
    Bad(
        "q head out of range",
        lambda env: _collect(env, Site("q", 0, head=4)),
        SiteError,
        r"head 4 is out of range for 'q'.*4 query heads; expected 0\.\.3",
    ),
    Bad(
        "attn_pattern head out of range",
        lambda env: _collect(env, Site("attn_pattern", 0, head=-1)),
        SiteError,
        r"head -1 is out of range for 'attn_pattern'.*4 query heads",
    ),
    Bad(
        "head on mlp_hidden",
        lambda env: _collect(env, Site("mlp_hidden", 0, head=1)),
        SiteError,
        r"head= applies only to components head, q, k, v, attn_pattern, not 'mlp_hidden'",
    ),
    Bad(
        "inner site layer out of range",
        lambda env: _collect(env, Site("mlp_hidden", 2)),
        SiteError,
        r"layer 2 is out of range for LlamaForCausalLM with 2 layers",
    ),
    Bad(
        "unknown component lists the inner sites",
        lambda env: _collect(env, Site("neurons", 0)),
        SiteError,
        r"unknown component 'neurons'; known: .*q, k, v, attn_pattern, mlp_hidden",
    ),
    Bad("kv_group query head out of range", lambda env: kv_group(env.lm, 4), SiteError, r"query head .*got 4"),
    Bad("query_heads kv head out of range", lambda env: query_heads(env.lm, 2), SiteError, r"key/value head .*got 2"),
    Bad(
        "attn_pattern source of another length",
        lambda env: interchange(env.lm, IDS, SRC[:, :4], at=Site("attn_pattern", 0, last())),
        SiteError,
        r"attn_pattern.*this batch's 5 key columns.*same length",
    ),
    Bad(
        "attn_pattern on attention outside the AttentionInterface",
        lambda env: _collect(env, _no_interface_llama(), Site("attn_pattern", 0)),
        SiteError,
        r"LlamaForCausalLM cannot provide attn_pattern: its attention does not dispatch through transformers' "
        r"AttentionInterface",
    ),
]


# ---- training options: one vocabulary (interp.optim.check_options) for TrainConfig, DASConfig, memorise and the loop;
# each a ConfigError (TrainConfig's also a ReftError, DASConfig's a DASError) naming the option and the value

INF = float("inf")


def _one_param_loop(**options):
    from interp import optim

    w = torch.nn.Parameter(torch.zeros(1))
    return optim.train([w], lambda batch: (w**2).sum(), [None], **{"steps": 1, "lr": 0.1, **options})


def _memorise(env, **options):
    return script("memorise").memorise(env.lm, [11, 12], layer=0, prompt=[1, 5, 7], **options)  # the experiment


ROWS += [
    Bad(
        "train lr inf",
        lambda env: reft.TrainConfig(lr=INF),
        ConfigError,
        r"TrainConfig\.lr must be a positive .*got inf",
    ),
    Bad(
        "train lr nan",
        lambda env: reft.TrainConfig(lr=NAN),
        ConfigError,
        r"TrainConfig\.lr must be a positive .*got nan",
    ),
    Bad("train lr 0 is a ReftError", lambda env: reft.TrainConfig(lr=0), reft.ReftError, r"TrainConfig\.lr .*got 0"),
    Bad(
        "train weight_decay nan",
        lambda env: reft.TrainConfig(weight_decay=NAN),
        ConfigError,
        r"TrainConfig\.weight_decay must be a non-negative number; got nan",
    ),
    Bad(
        "train max_grad_norm nan",
        lambda env: reft.TrainConfig(max_grad_norm=NAN),
        ConfigError,
        r"TrainConfig\.max_grad_norm must be a non-negative number; got nan; 0 or None turns clipping off",
    ),
    Bad(
        "train max_grad_norm negative",
        lambda env: reft.TrainConfig(max_grad_norm=-1),
        ConfigError,
        r"TrainConfig\.max_grad_norm must be a non-negative number; got -1;",
    ),
    Bad(
        "train warmup_ratio negative",
        lambda env: reft.TrainConfig(warmup_ratio=-0.1),
        ConfigError,
        r"TrainConfig\.warmup_ratio must be a number in \[0, 1\); got -0\.1",
    ),
    Bad(
        "train warmup_ratio nan",
        lambda env: reft.TrainConfig(warmup_ratio=NAN),
        ConfigError,
        r"TrainConfig\.warmup_ratio must be a number in \[0, 1\); got nan",
    ),
    Bad(
        "train steps 2.5",
        lambda env: reft.TrainConfig(steps=2.5),
        ConfigError,
        r"TrainConfig\.steps must be a positive integer; got 2\.5",
    ),
    Bad(
        "train batch_size True",
        lambda env: reft.TrainConfig(batch_size=True),
        ConfigError,
        r"TrainConfig\.batch_size must be a positive integer; got True \(a bool\)",
    ),
    Bad("train epochs 0", lambda env: reft.TrainConfig(epochs=0), ConfigError, r"TrainConfig\.epochs .*; got 0"),
    Bad("train grad_accum 1.0", lambda env: reft.TrainConfig(grad_accum=1.0), ConfigError, r"grad_accum .*; got 1\.0"),
    Bad("train eval_every -1", lambda env: reft.TrainConfig(eval_every=-1), ConfigError, r"eval_every .*; got -1"),
    Bad("train schedule", lambda env: reft.TrainConfig(schedule="cos"), ConfigError, r"TrainConfig\.schedule .*'cos'"),
    Bad(
        "train add_eos", lambda env: reft.TrainConfig(add_eos=1), ConfigError, r"TrainConfig\.add_eos must be True .*1"
    ),
    Bad(
        "das max_grad_norm nan",
        lambda env: DASConfig(max_grad_norm=NAN),
        DASError,
        r"DASConfig\.max_grad_norm must be a non-negative number; got nan",
    ),
    Bad(
        "das saved warmup key",
        lambda env: DASConfig.from_dict({"steps": 3, "warmup": 1.5}),
        ConfigError,
        r"DASConfig\.warmup_ratio must be a number in \[0, 1\); got 1\.5",
    ),
    Bad("memorise lr inf", lambda env: _memorise(env, lr=INF), ConfigError, r"memorise\.lr must be a positive .*inf"),
    Bad("memorise steps 2.5", lambda env: _memorise(env, steps=2.5), ConfigError, r"memorise\.steps .*; got 2\.5"),
    Bad("optim.train lr inf", lambda env: _one_param_loop(lr=INF), ConfigError, r"train\.lr must be a positive .*inf"),
    Bad(
        "optim.train max_grad_norm -1",
        lambda env: _one_param_loop(max_grad_norm=-1.0),
        ConfigError,
        r"train\.max_grad_norm must be a non-negative number; got -1\.0",
    ),
]
