"""Bad-input rows: inputs (prompts, ids, answers, labels, positions, sites, causal models, data files, plots, the
ReFT bridge). Joined into one table by test_bad_inputs."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import torch
from conftest import sharp_llama
from test_bad_inputs import Bad
from test_causal import adder

import interp
import reft
from interp import (
    BasisError,
    InputError,
    LowRankRotation,
    PositionError,
    Site,
    SiteError,
    Zero,
    at,
    encode,
    first,
    interchange,
    last,
    span,
    token,
)
from interp.causal import CausalModel, CausalModelError, Pairs
from interp.engine import options
from interp.inputs import PaddingWarning
from interp.metrics import iia, task_accuracy
from reft.data import as_examples, read_jsonl
from reft.model import serve_ops
from reft.steering import steer


def _ids(*shape, seed=0):
    return torch.randint(3, 97, shape, generator=torch.Generator().manual_seed(seed))


def _with_tokenizer(pad=0, bos=2, eos=1):
    """A stand-in LM whose tokenizer knows its pad id (Gemma's layout by default: pad 0, eos 1, bos 2)."""
    return SimpleNamespace(
        device="cpu", tokenizer=SimpleNamespace(pad_token_id=pad, bos_token_id=bos, eos_token_id=eos)
    )


def _result(env):
    return interp.run(env.lm, _ids(2, 4))


def _jsonl(env, text):
    p = env.tmp / "train.jsonl"
    p.write_text(text)
    return p


def _pairs(labels, candidates=None):
    n = len(labels)
    return Pairs(("G",), [[1, 50, 7]] * n, [[[1, 20, 7]] * n], labels, labels, candidates)


def _set_candidates(pairs, candidates):
    pairs.candidates = candidates  # after construction, so that Pairs' own check is skipped and iia's is reached
    return pairs


# ---- interp.encode: prompts and token ids --------------------------------------------------------------------
_PAD = r"row 0 (starts|ends) with 2 pad token\(s\) \(pad id {}\) but no attention_mask.*pass .*attention_mask"
ENCODE = [
    Bad(
        "encode: a left-padded dict without attention_mask",
        lambda env: encode(_with_tokenizer(), {"input_ids": [[0, 0, 5, 6], [7, 8, 9, 10]]}),
        PaddingWarning,
        _PAD.format(0),
    ),
    Bad(
        "encode: a right-padded tensor (pad = eos) without a mask",
        lambda env: encode(_with_tokenizer(pad=1, eos=1), torch.tensor([[5, 6, 1, 1], [7, 8, 9, 1]])),
        PaddingWarning,
        _PAD.format(1),
    ),
    Bad(
        "encode: prompts mixing strings and ids",
        lambda env: encode(env.lm, ["a prompt", [5, 6]]),
        InputError,
        r"not a mix; got \['str', 'list'\]",
    ),
    Bad("encode: float ids", lambda env: encode(env.lm, torch.rand(2, 3)), InputError, r"dtype torch\.float32"),
    Bad(
        "encode: a 3-D tensor of ids",
        lambda env: encode(env.lm, _ids(2, 3, 4)),
        InputError,
        r"shape \(2, 3, 4\); expected \(batch, tokens\)",
    ),
    Bad(
        "encode: an empty token-id list",
        lambda env: encode(env.lm, [[5, 6], []]),
        InputError,
        r"prompt 1 has shape \(0,\)",
    ),
    Bad(
        "encode: a mask of the wrong shape",
        lambda env: encode(env.lm, {"input_ids": [[5, 6, 7]], "attention_mask": [[1, 1]]}),
        InputError,
        r"attention_mask has shape \(1, 2\) but input_ids \(1, 3\)",
    ),
    Bad(
        "encode: a dict without input_ids",
        lambda env: encode(env.lm, {"ids": [[5, 6]]}),
        InputError,
        r"keys \['ids'\]; expected 'input_ids'",
    ),
    Bad(
        "encode: padding_side",
        lambda env: encode(env.lm, [[5, 6]], padding_side="middle"),
        InputError,
        r"padding_side must be 'left' or 'right'; got 'middle'",
    ),
]

# ---- answers: DIIResult metrics and token_ids ----------------------------------------------------------------
ANSWERS = [
    Bad("top_k: k = 0", lambda env: _result(env).top_k(0), InputError, r"top_k\(k=0\).*between 1 and .* 97"),
    Bad("top_k: k above the vocabulary", lambda env: _result(env).top_k(98), InputError, r"top_k\(k=98\)"),
    Bad(
        "answer: a float",
        lambda env: _result(env).accuracy(5.0),
        InputError,
        r"answer 5\.0 is a float; expected a word \(str\) or a token id",
    ),
    Bad(
        "answer: a numpy id outside the vocabulary",
        lambda env: _result(env).accuracy(np.int64(200)),
        InputError,
        r"answer ids \[200\] are outside the vocabulary \[0, 97\)",
    ),
    Bad(
        "answer: a negative id",
        lambda env: _result(env).logit_diff(-1, 5),
        InputError,
        r"answer ids \[-1\] are outside the vocabulary",
    ),
    Bad(
        "answer: a float array",
        lambda env: _result(env).prob(np.array([1.0, 2.0])),
        InputError,
        r"answer ids have dtype torch\.float64",
    ),
    Bad(
        "answer: one per example",
        lambda env: _result(env).accuracy([5, 6, 7]),
        InputError,
        r"got 3 answer tokens for a batch of 2",
    ),
]

# ---- labels and candidates: Pairs, iia, task_accuracy --------------------------------------------------------
LABELS = [
    Bad(
        "Pairs: a label outside candidates",
        lambda env: _pairs([5, 7], candidates=[5, 6]),
        CausalModelError,
        r"labels\[1\] is 7, which is not among candidates=\[5, 6\]",
    ),
    Bad(
        "render: a word label outside candidates",
        lambda env: (
            CausalModel({"a": None, "O": (("a",), lambda a: a)})
            .counterfactuals(lambda r: {"a": r.randrange(3)}, variables="a", n=10, seed=0)
            .render(lambda s: [1, s["a"]], lambda y: [" zero", " one", " two"][y], candidates=[" zero", " one"])
        ),
        CausalModelError,
        r"labels\[\d+\] is ' two', which is not among candidates=\[' zero', ' one'\]",
    ),
    Bad(
        "iia: a label outside candidates",
        lambda env: iia(env.lm, _set_candidates(_pairs([5, 7]), [5, 6]), at=Site("resid_post", 0, last())),
        InputError,
        r"label 1 is 7, which is not among the candidates \[5, 6\]",
    ),
    Bad(
        "task_accuracy: an answer outside candidates",
        lambda env: task_accuracy(env.lm, [[1, 2], [3, 4]], [5, 8], candidates=[5, 6]),
        InputError,
        r"answer 1 is 8, which is not among the candidates \[5, 6\]",
    ),
    Bad(
        "task_accuracy: answers and inputs",
        lambda env: task_accuracy(env.lm, [[1, 2], [3, 4]], [5]),
        InputError,
        r"got 2 inputs and 1 answers",
    ),
    Bad("iia: against an unknown label", lambda env: iia(env.lm, _pairs([5, 6]), at=Site("resid_post", 0, last()),
        against="labels"), InputError, r"against must be None .* or 'base' .*; got 'labels'"),
    Bad("run: vocab= outside the vocabulary", lambda env: interp.run(env.lm, _ids(2, 4), vocab=[5, 200]),
        InputError, r"vocab=\[5, 200\]: answer ids \[200\] are outside the vocabulary \[0, 97\)"),
    Bad("run: an empty vocab=", lambda env: interp.run(env.lm, _ids(2, 4), vocab=[]), InputError,
        r"vocab= is empty"),
    Bad("intervene: batch_size=0", lambda env: interp.intervene(env.lm, _ids(2, 4), at=[], batch_size=0),
        InputError, r"batch_size.*positive integer.*0"),
    Bad("DIIResult: a word outside its vocab=",
        lambda env: interp.run(env.lm, _ids(2, 4), vocab=[5, 6]).logit_diff(5, 7), InputError,
        r"token ids \[7\] are not in this result's vocab=\[5, 6\]"),
    Bad("DIIResult: prob over a restricted vocab=", lambda env: interp.run(env.lm, _ids(2, 4), vocab=[5, 6]).prob(5),
        InputError, r"logits for 2 words only \(vocab=\)"),
    Bad("patch_grid: an answer that is not a pair",
        lambda env: interp.patch_grid(env.lm, Pairs.of(_ids(2, 4), _ids(2, 4, seed=1), base_answer=[5, 5],
                                      source_answer=[6, 6]), answers={"a": 5}, progress=False),
        InputError, r"answers\['a'\] is 5; expected a \(base answer, source answer\) pair"),
]  # fmt: skip

# ---- reft: training data files --------------------------------------------------------------------------------
DATA = [
    Bad(
        "JSONL: a line that is not JSON",
        lambda env: read_jsonl(_jsonl(env, '{"prompt": "a", "response": "b"}\n\n{"prompt": "c" "response": "d"}\n')),
        reft.ReftError,
        r"train\.jsonl:3: not valid JSON \(Expecting ',' delimiter at column 16\); expected one example per line",
    ),
    Bad(
        "as_examples: a JSONL file with a line that is not JSON",
        lambda env: as_examples(_jsonl(env, "prompt: a, response: b\n")),
        reft.ReftError,
        r"train\.jsonl:1: not valid JSON",
    ),
    Bad(
        "JSONL: a folder",
        lambda env: read_jsonl(env.tmp),
        reft.ReftError,
        r"is a folder; expected a JSONL file",
    ),
]


# ---- causal models and pairs (moved from test_causal.py) -----------------------------------------------------
def _abc_data(n=20):
    return adder().counterfactuals(lambda r: {k: r.randrange(5) for k in "abc"}, variables="ab", n=n, seed=1)


CAUSAL = [
    Bad(
        "causal: set= an unknown variable",
        lambda env: adder().run({"a": 1, "b": 2, "c": 3}, set={"zz": 1}),
        CausalModelError,
        r"unknown variable 'zz'",
    ),
    Bad(
        "causal: counterfactuals of an unknown variable",
        lambda env: adder().counterfactuals(lambda r: {"a": 1, "b": 1, "c": 1}, variables="carry", n=3),
        CausalModelError,
        r"unknown variable 'carry'",
    ),
    Bad(
        "causal: missing input values",
        lambda env: adder().run({"a": 1}),
        CausalModelError,
        r"missing input values for \['b', 'c'\]",
    ),
    Bad(
        "causal: a cycle",
        lambda env: CausalModel({"x": (("y",), lambda y: y), "y": (("x",), lambda x: x)}),
        CausalModelError,
        r"cycle through x -> y -> x",
    ),
    Bad(
        "causal: unknown parents",
        lambda env: CausalModel({"x": (("nope",), lambda y: y)}),
        CausalModelError,
        r"unknown parents \['nope'\]",
    ),
    Bad(
        "causal: changed_only with a variable that never changes the label",
        lambda env: CausalModel({"x": None, "y": (("x",), lambda x: 0)}).counterfactuals(
            lambda r: {"x": r.random()}, variables="x", n=2, changed_only=True, max_tries=5
        ),
        CausalModelError,
        r"no example with a changed label in 5 draws; the variables \['x'\]",
    ),
    Bad(
        "Pairs: fields of different lengths",
        lambda env: Pairs(("ab",), ["x", "y"], [["z"]], [" 1", " 2"], [" 1", " 2"]),
        CausalModelError,
        r"base has 2 examples but \{'sources\[0\]': 1\}",
    ),
    Bad(
        "Pairs: fewer source lists than variables",
        lambda env: Pairs(("ab", "c"), ["x"], [["z"]], [" 1"], [" 1"]),
        CausalModelError,
        r"got 1 source lists for 2 variables \('ab', 'c'\); give one list of sources per",
    ),
    Bad(
        "split: one side empty",
        lambda env: _abc_data()[:1].split(0.5),
        CausalModelError,
        r"splitting 1 examples at 0\.5 leaves one side empty",
    ),
]


# ---- positions (moved from test_positions.py) -----------------------------------------------------------------
def _mask(lengths, T):
    """A left-padded attention mask with rows of ``lengths`` real tokens."""
    m = torch.zeros(len(lengths), T, dtype=torch.long)
    for b, n in enumerate(lengths):
        m[b, T - n :] = 1
    return m


class _CharTokenizer:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids):
        return "".join(map(chr, ids))


def _third_ab(env):
    ids = torch.tensor([[0, 0] + [ord(c) for c in "abcab"], [ord(c) for c in "xxabyab"]])
    m = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7])
    return token("ab", occurrence=2).resolve(m, ids, _CharTokenizer())


def _beyond(pos):
    return Bad(
        f"position {pos!r} beyond a 3-token prompt",
        lambda env: pos.resolve(_mask([3, 5], 5)),
        PositionError,
        re.escape(repr(pos)) + r".* but prompt 0 has only 3 tokens",
    )


POSITIONS = [
    Bad(
        "token(): a third occurrence of a word seen twice",
        _third_ab,
        PositionError,
        r"token\('ab', occurrence=2\): found 2 occurrence\(s\) of 'ab'",
    ),
    *[_beyond(pos) for pos in (at(5), at(-6), first(4), last(4), span(1, 9))],
    Bad(
        "span with different counts per prompt",
        lambda env: span(1, -1).resolve(_mask([3, 5], 5)),
        PositionError,
        r"position span\(1, -1\) gives different numbers of tokens per prompt",
    ),
    Bad(
        "first(3)+last(3) on prompts of 4 and 6 tokens",  # DII pairs slots one to one: refused, not padded
        lambda env: (first(3) + last(3)).resolve(_mask([4, 6], 6)),
        PositionError,
        r"position first\(3\)\+last\(3\) gives different numbers of tokens per prompt",
    ),
    Bad("first(0)", lambda env: first(0), PositionError, r"first\(n\): n must be a positive integer; got 0"),
]


# ---- interchange: bad inputs fail before any forward pass (moved from test_dii.py) ---------------------------
def _no_forward_pass(**kwargs):
    def call(env):
        lm = env.lm
        args = dict(base=_ids(2, 5, seed=1), source=_ids(2, 5, seed=2), at=Site("resid_post", 0)) | kwargs

        def forward(*_):
            raise AssertionError("a forward pass ran before the bad input was refused")

        hook = lm.hf.register_forward_pre_hook(forward)
        try:
            return interchange(lm, **args)
        finally:
            hook.remove()

    return call


INTERCHANGE = [
    Bad(
        "interchange: source batch size",
        _no_forward_pass(source=_ids(3, 5)),
        InputError,
        r"base has 2 examples but source has 3",
    ),
    Bad(
        "interchange: a basis of the wrong width",
        _no_forward_pass(via=LowRankRotation(16, 2)),
        BasisError,
        r"width 16 but the site's vectors have width 32",
    ),
    Bad(
        "interchange: a position beyond the prompt",
        _no_forward_pass(at=Site("resid_post", 0, at(7))),
        PositionError,
        r"at\(7\) asks for token 7 but prompt 0 has only 5 tokens",
    ),
    Bad("interchange: layer", _no_forward_pass(at=Site("resid_post", 9)), SiteError, r"layer 9 is out of range"),
    Bad("interchange: head", _no_forward_pass(at=Site("head", 0, head=7)), SiteError, r"head 7 is out of range"),
    Bad("interchange: component", _no_forward_pass(at=Site("mlp", 0)), SiteError, r"unknown component 'mlp'"),
]


# ---- the same position error on both backends (moved from test_conformance.py) -------------------------------
def _beyond_on(backend):
    def call(env):
        batch = encode(env.lm, [_ids(n, seed=n).tolist() for n in (5, 3, 4)])  # left-padded, with a mask
        return _on(backend, interp.intervene, env.lm, batch, at=Site("resid_post", 0, at(4)), via=Zero())

    return call


def _on(backend, verb, *args, **kw):
    """``verb(*args, **kw)`` run on ``backend`` (an engine option)."""
    with options(backend=backend):
        return verb(*args, **kw)


BACKENDS = [
    Bad(f"intervene: at(4) beyond a 3-token prompt, {b} backend", _beyond_on(b), PositionError, r"prompt 1 has only 3")
    for b in ("nnsight", "hooks")
]


# ---- loading (moved from test_models.py) ----------------------------------------------------------------------
def _offline_load(name):
    """interp.load(name) with HF_HUB_OFFLINE=1 set for the call (as a user's environment would have it)."""

    def call(env):
        import os

        old = os.environ.get("HF_HUB_OFFLINE")
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            return interp.load(name)
        finally:
            if old is None:
                del os.environ["HF_HUB_OFFLINE"]
            else:
                os.environ["HF_HUB_OFFLINE"] = old

    return call


def _config_only(env, config):
    config.save_pretrained(env.tmp / "model")
    return interp.load(env.tmp / "model")


LOADING = [
    Bad(
        "load: a folder that does not exist",
        lambda env: interp.load(env.tmp / "nowhere"),
        FileNotFoundError,
        r"could not load model '.*nowhere': no such folder; expected a local folder",
    ),
    Bad("load: a Hub id offline, not cached", _offline_load("no-such-org/no-such-model"), FileNotFoundError,
        r"'no-such-org/no-such-model': HF_HUB_OFFLINE=1 is set and the model is not in the local Hugging Face cache"),
    Bad("load: a folder without config.json", lambda env: interp.load(env.tmp), FileNotFoundError,
        r"could not load model '.*': the folder has no config.json"),
    Bad("load: not a causal LM", lambda env: _config_only(env, __import__("transformers").T5Config(d_model=8)),
        ValueError, r"'.*model': it is not a causal LM \('t5'.*AutoModelForCausalLM"),
    Bad("load: dtype not a float", lambda env: interp.load(env.tmp, dtype="int8"), ValueError,
        r"load\(dtype='int8'\): expected a floating torch dtype"),
    Bad("load: device and device_map", lambda env: interp.load(env.tmp, device="cpu", device_map="auto"), ValueError,
        r"device='cpu', device_map='auto'\): give one"),
]  # fmt: skip


# ---- plots (moved from test_viz.py) ---------------------------------------------------------------------------
def _viz():
    from interp import viz

    return viz


PLOTS = [
    Bad(
        "heatmap: labels that do not fit the values",
        lambda env: _viz().heatmap(np.zeros((2, 3)), rows=[0, 1], cols=list("abcd")),
        ValueError,
        r"shape \(2, 3\).*2 row labels and 4 column labels",
    ),
    Bad(
        "heatmap: 1-D values",
        lambda env: _viz().heatmap(np.zeros(3), rows=[0, 1, 2], cols=["a"]),
        ValueError,
        r"expected a 2-D array, got shape \(3,\)",
    ),
    Bad(
        "plot_probe_vs_iia: lengths",
        lambda env: _viz().plot_probe_vs_iia(["a", "b", "c"], [0.9], [0.5, 0.6, 0.7]),
        ValueError,
        r"3 site labels, 1 probe accuracies and 3 IIA values; pass one of each per site",
    ),
    Bad(
        "plot_tradeoff: lengths",
        lambda env: _viz().plot_tradeoff(["LoReFT", "DiReFT", "LoRA", "DoRA"], [1, 2], [0.5, 0.6]),
        ValueError,
        r"one entry per method; got 4, 2, 2",
    ),
]


# ---- the ReFT <-> DAS bridge (moved from test_reft_bridge.py) ------------------------------------------------
def _orthonormal(rank=4, d=32):
    return torch.linalg.qr(torch.randn(d, rank, generator=torch.Generator().manual_seed(2))).Q.T


BRIDGE = [
    Bad(
        "init_basis: a basis of the wrong shape",
        lambda env: reft.init_basis(reft.LoReFT(32, 4), torch.randn(2, 32)),
        reft.ReftError,
        r"the basis has shape \(2, 32\) but LoReFT needs \(4, 32\)",
    ),
    Bad(
        "init_basis: an intervention with no orthonormal basis",
        lambda env: reft.init_basis(reft.DiReFT(32, 4), _orthonormal()),
        reft.ReftError,
        r"DiReFT has no orthonormal basis",
    ),
    Bad(
        "as_basis: not a ReFT intervention",
        lambda env: reft.as_basis(LowRankRotation(32, 4, init=_orthonormal())),
        reft.ReftError,
        r"as_basis expects a ReftIntervention .*; got LowRankRotation",
    ),
    Bad(
        "principal_angles: different widths",
        lambda env: reft.principal_angles(torch.randn(2, 5), torch.randn(2, 6)),
        reft.ReftError,
        r"different widths: 5 and 6",
    ),
]

# one of each (issue 21): the one collector, padding rule, position parser, pair type and ReFT registry
ONE_OF_EACH = [
    Bad("parse_positions: an unknown part", lambda env: reft.parse_positions("f1+q2"), PositionError,
        r"cannot read positions 'f1\+q2': part 'q2' is not a position; expected parts joined by '\+'"),
    Bad("collect: batch_size 0", lambda env: interp.collect(env.lm, _ids(2, 4), at=Site("resid_post", 0, last()),
                                                            batch_size=0),
        InputError, r"collect\(batch_size=\) must be a positive integer; got 0"),
    Bad("collect mean: a decode-time position",
        lambda env: interp.collect(env.lm, _ids(2, 4), at=Site("resid_post", 0, last() + interp.generated()),
                                   mean=True),
        PositionError, r"Site\('resid_post', 0, last\(\)\+generated\(\)\): collect reads fixed inputs"),
    Bad("pad: padding side", lambda env: interp.inputs.pad(env.lm, [[5, 6]], padding_side="up"), InputError,
        r"padding_side must be 'left' or 'right'; got 'up'"),
    Bad("Pairs.source: two variables",
        lambda env: Pairs(("a", "b"), [[5, 6]], [[[7, 8]], [[9, 10]]], [5], [6]).source, CausalModelError,
        r"these pairs interchange 2 variables \('a', 'b'\).*select one, e\.g\. pairs\.sources\[0\]"),
    Bad("patch_grid: not Pairs", lambda env: interp.patching.patch_grid(env.lm, (_ids(2, 4), _ids(2, 4))),
        InputError, r"pairs is a tuple; expected interp\.Pairs"),
    Bad("attribution_patch: no source and not Pairs",
        lambda env: interp.attribution.attribution_patch(env.lm, _ids(2, 4)), InputError,
        r"got base of type Tensor and no source; pass interp\.Pairs"),
    Bad("reft.make: unknown kind", lambda env: reft.make("fancy", 32, 4), reft.ReftError,
        r"unknown intervention kind 'fancy'; known: loreft, noreft, direft, lobireft, consreft, lodireft"),
]  # fmt: skip

ROWS = ENCODE + ANSWERS + LABELS + DATA + CAUSAL + POSITIONS + INTERCHANGE + BACKENDS + LOADING + PLOTS + BRIDGE
ROWS += ONE_OF_EACH


# ---- checked before the forward, and errors that name the value (issue 22) ----------------------------------


class _Fails(interp.interventions.Intervention):
    """An intervention at an attn_pattern site that fails for a reason of its own."""

    needs_source = True

    def __call__(self, h, source=None):
        raise RuntimeError("my intervention failed")


def _wide_reft(env):
    """A LoReFT attached to a 64-wide Llama, to be served on ``env.lm`` (32 wide)."""
    wide = sharp_llama(width=64)
    return reft.attach(wide, reft.at_layers(wide, [1], pos=last(), rank=2))


def _serve(env, served):
    batch = encode(env.lm, _ids(1, 4))
    return serve_ops(served, batch, lm=env.lm)


def _bytes(env, data: bytes):
    p = env.tmp / "train.jsonl"
    p.write_bytes(data)
    return p


_HUGE = 10**30
BEFORE_THE_FORWARD = [
    Bad("encode: an id past the vocabulary", lambda env: interp.run(env.lm, torch.tensor([[5, 6, 97]])), InputError,
        r"token id 97 at row 0, column 2 is outside the vocabulary of LlamaForCausalLM \(ids 0\.\.96\)"),
    Bad("encode: a negative id in a list", lambda env: encode(env.lm, [[5, 6], [7, -1, 8]]), InputError,
        r"token id -1 at row 1, column 1 is outside the vocabulary .*\(ids 0\.\.96\)"),
    Bad("encode: a bad id under the mask",
        lambda env: encode(env.lm, {"input_ids": [[-100, 5, 6]], "attention_mask": [[0, 1, 1]]}), InputError,
        r"token id -100 at row 0, column 0 is outside the vocabulary"),
    Bad("generate: an id past the vocabulary", lambda env: reft.generate_ids(env.lm, [[5, 300]], max_new_tokens=1),
        InputError, r"token id 300 at row 0, column 1 is outside the vocabulary"),
    Bad("run: a prompt longer than the context", lambda env: interp.run(env.lm, torch.ones(1, 2049, dtype=torch.long)),
        InputError, r"prompt 0 has 2049 tokens, more than LlamaForCausalLM's context of 2048 \(max_position_embed"),
    Bad("serve_ops: a ReFT of another width", lambda env: _serve(env, [_wide_reft(env)]), reft.ReftError,
        r"serve\[0\] was built for .*d_model=64.*edit 64-wide vectors, but the model it is served on has d_model 32"),
    Bad("serve_ops: not a ReftModel", lambda env: _serve(env, ["runs/style"]), reft.ReftError,
        r"serve\[0\] is a str; expected a ReftModel"),
    Bad("last(10**30)", lambda env: interp.collect(env.lm, _ids(1, 3), at=Site("resid_post", 0, last(_HUGE))),
        PositionError, r"position last\(1000000000000000000000000000000\) asks for token -9+7 but prompt 0 has only 3"),
    Bad("first(10**30)", lambda env: interp.collect(env.lm, _ids(1, 3), at=Site("resid_post", 0, first(_HUGE))),
        PositionError, r"position first\(10{30}\) asks for token 3 but prompt 0 has only 3 tokens"),
    Bad("span(0, 10**30)", lambda env: interp.collect(env.lm, _ids(1, 3), at=Site("resid_post", 0, span(0, _HUGE))),
        PositionError, r"position span\(0, 10{30}\) asks for token 3 but prompt 0 has only 3 tokens"),
    Bad("read_jsonl: not UTF-8",
        lambda env: read_jsonl(_bytes(env, b'{"prompt": "a", "response": "b"}\n{"p": "\xe9"}')), reft.ReftError,
        r"train\.jsonl: not UTF-8 text: byte 0xe9 at byte offset 40 \(line 2\)"),
    Bad("read_jsonl: nested too deeply", lambda env: read_jsonl(_bytes(env, b"[" * 100_000)), reft.ReftError,
        r"train\.jsonl:1: cannot read this line as JSON \(nested too deeply\)"),
    Bad("read_jsonl: a 5000-digit integer", lambda env: read_jsonl(_bytes(env, b'{"n": ' + b"9" * 5000 + b"}")),
        reft.ReftError, r"train\.jsonl:1: cannot read this line as JSON \(Exceeds the limit \(4300 digits\)"),
    Bad("Steer: a vector on the meta device", lambda env: interp.Steer(torch.zeros(32, device="meta")),
        BasisError, r"steering vector is on the meta device: a shape with no values"),
    Bad("steer: a vector on the meta device",
        lambda env: steer(env.lm, Site("resid_post", 0, last()), torch.zeros(32, device="meta")),
        BasisError, r"steering vector is on the meta device"),
    Bad("attn_pattern: an intervention's own error",
        lambda env: interchange(env.lm, _ids(2, 5), _ids(2, 5, seed=1), at=Site("attn_pattern", 0, last()),
                                via=_Fails()),
        RuntimeError, r"\A(?!.*same length)my intervention failed\Z"),
    Bad("attn_pattern: a source of another length, said so",
        lambda env: _on("hooks", interchange, env.lm, _ids(2, 5), _ids(2, 4, seed=1),
                        at=Site("attn_pattern", 0, last())),
        SiteError, r"same length \(and padding\); the source's vectors have 4 entries but the base's 5"),
]  # fmt: skip

ROWS += BEFORE_THE_FORWARD
