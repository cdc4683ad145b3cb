"""Scale out (issue 12): loading with dtype/device/device_map and its errors; float32 interventions on bf16 models;
a model dispatched by accelerate (part of it offloaded, so accelerate's AlignDevicesHook runs in every forward)
gives the plain model's DII, DAS and ReFT numbers.

Only CPUs exist here: offloading layer 1 and the unembedding to disk puts accelerate's hooks in the path (their
weights sit on the meta device between forwards and are loaded by the hooks), which is what a model spread over
GPUs goes through too; the GPU side is bench/gpu_check.py.
"""

from __future__ import annotations

import time
import warnings

import pytest
import torch
import transformers as tf
from conftest import ARCHS, _tiny, tiny_lm

import interp
import reft
from interp import Interchange, LowRankRotation, Site, first, last
from interp.causal import CausalModel
from interp.engine import options
from interp.models import LoadError

BASE = torch.tensor([[5, 6, 7, 8, 9], [9, 10, 11, 12, 13], [20, 21, 22, 23, 24]])
SOURCE = torch.tensor([[15, 16, 17, 18, 19], [19, 20, 21, 22, 23], [30, 31, 32, 33, 34]])


# ---- a tiny model dispatched by accelerate, part of it offloaded -----------------------------------------------


def offload_map(lm: interp.LM) -> dict[str, str]:
    """Layer 0 and the embeddings on the CPU; layer 1 and the top-level unembedding offloaded to disk."""
    hf, layers = lm.hf, interp.sites.architecture(lm).layers
    parent = layers.rpartition(".")[0]
    dm = {}
    for name, _ in hf.get_submodule(parent).named_children():
        full = f"{parent}.{name}"
        if full == layers:
            dm.update({f"{layers}.{i}": "cpu" if i == 0 else "disk" for i in range(len(hf.get_submodule(layers)))})
        else:
            dm[full] = "cpu"
    dm.update({name: "disk" for name, _ in hf.named_children() if name != parent})
    return dm


def dispatched(arch: str, folder, model: torch.nn.Module | None = None) -> interp.LM:
    """The same tiny model as ``tiny_lm(arch)`` (or ``model``), dispatched with :func:`offload_map`."""
    from accelerate import dispatch_model

    hf = (model or _tiny(arch)).eval()
    dm = offload_map(interp.LM(hf))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = dispatch_model(hf, device_map=dm, main_device="cpu", offload_dir=str(folder))
    lm = interp.LM(hf)
    layer1 = hf.get_submodule(interp.sites.architecture(lm).layers + ".1")
    assert any(getattr(getattr(m, "_hf_hook", None), "offload", False) for m in layer1.modules())
    assert all(p.device.type == "meta" for p in layer1.parameters())  # accelerate loads them in each forward
    return lm


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("component", ["resid_pre", "attn_out", "mlp_out", "resid_post"])
def test_dii_on_a_dispatched_model_equals_the_plain_model(arch, component, tmp_path):
    plain, lm = tiny_lm(arch), dispatched(arch, tmp_path)
    site = Site(component, 1, last())
    torch.manual_seed(0)
    R = LowRankRotation(32, 8)
    clean = interp.run(plain, BASE).logits
    for backend in interp.engine.BACKENDS:
        with options(backend=backend):
            want = interp.interchange(plain, BASE, SOURCE, at=site, via=R).logits
            got = interp.interchange(lm, BASE, SOURCE, at=site, via=R).logits
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        assert (want - clean).abs().max() > 1e-3  # the edit moves the logits far more than the tolerance
    with options(full=True):
        torch.testing.assert_close(interp.run(lm, BASE).logits, clean, atol=1e-5, rtol=0)
    torch.testing.assert_close(interp.collect(lm, BASE, at=site), interp.collect(plain, BASE, at=site), atol=1e-5,
                               rtol=0)  # fmt: skip


def test_the_dispatched_model_knows_where_each_module_computes(tmp_path):
    lm = dispatched("llama", tmp_path)
    assert lm.device == torch.device("cpu") and lm.device_at("model.layers.1.mlp") == torch.device("cpu")
    assert lm.hf.model.layers[1].mlp.down_proj.weight.device.type == "meta"  # offloaded: no device of its own
    assert interp.io.fingerprint(lm) == interp.io.fingerprint(tiny_lm("llama"))  # offloaded weights are read


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_patching_grids_on_a_dispatched_model_equal_the_plain_model(arch, tmp_path):
    """patch_grid's cached path (a clean KV cache, stand-in layers) and its full path, and attribution patching
    (a backward through accelerate's hooks), on the dispatched model."""
    from interp import at
    from interp.attribution import attribution_patch
    from interp.causal import Pairs
    from interp.patching import patch_grid

    plain, lm = tiny_lm(arch), dispatched(arch, tmp_path)
    pairs = Pairs.of(BASE.tolist(), SOURCE.tolist(), base_answer=[5] * 3, source_answer=[6] * 3)
    positions = {"first": at(0), "inner": at(2), "last": last()}
    for method in ("cached", "full"):
        want = patch_grid(plain, pairs, positions=positions, method=method, progress=False).effect
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # the cached path must not fall back to the full one
            grid = patch_grid(lm, pairs, positions=positions, method=method, progress=False)
        assert grid.meta["method"] == method and want.abs().max() > 1e-2
        torch.testing.assert_close(grid.effect, want, atol=1e-4, rtol=0)
    want = attribution_patch(plain, pairs, positions=positions).effect
    torch.testing.assert_close(attribution_patch(lm, pairs, positions=positions).effect, want, atol=1e-4, rtol=0)
    assert want.abs().max() > 1e-2


def _planted(model=None):
    """test_das's planted toy: a binary variable of the input token along a random direction of GPT-2's stream."""
    hf = model or _tiny("gpt2").eval()
    u = torch.randn(32, generator=torch.Generator().manual_seed(1))
    u /= u.norm()
    A, B = list(range(10, 30)), list(range(30, 50))
    with torch.no_grad():
        W = hf.transformer.wte.weight
        for t in A + B:
            W[t] += ((3.0 if t in A else -3.0) - W[t] @ u) * u
        W[5], W[6] = 5 * u, -5 * u
    model = CausalModel({"a": None, "G": (("a",), lambda a: a in A), "O": (("G",), lambda g: 5 if g else 6)})
    data = model.counterfactuals(lambda r: {"a": r.choice(A + B)}, variables="G", n=80, seed=0, changed_only=True)
    return hf, data.render(lambda s: [1, s["a"]], int)


def test_das_on_a_dispatched_model_equals_the_plain_model(tmp_path):
    """Site at layer 1 so the prefix cache (layer 0 replayed) runs under accelerate's hooks too."""
    plain_hf, pairs = _planted()
    lm = dispatched("gpt2", tmp_path, _planted()[0])
    plain = interp.LM(plain_hf)
    train, test = pairs.split(0.75, seed=0)
    site = Site("resid_post", 1, last())
    fast = dict(steps=12, batch_size=16, lr=1e-2, eval_every=6, patience=5, progress=False)
    want = interp.fit_das(plain, train, at=site, rank=1, test=test, **fast)
    got = interp.fit_das(lm, train, at=site, rank=1, test=test, **fast)
    torch.testing.assert_close(got.rotation, want.rotation, atol=1e-4, rtol=0)
    assert [h["step"] for h in got.history] == [h["step"] for h in want.history]
    for g, w in zip(got.history, want.history):
        for k in ("loss", "val_loss"):
            if k in w:
                assert abs(g[k] - w[k]) < 1e-4, (k, g, w)
    torch.manual_seed(0)
    start = interp.fit_das(plain, train, at=site, rank=1, **{**fast, "steps": 1, "eval_every": 1}).rotation
    assert (want.rotation - start).abs().max() > 1e-3  # training moved R: a dead edit would not match
    assert abs(got.iia(test) - want.iia(test)) < 1e-6


EXAMPLES = [{"prompt_ids": [1, 4, 5, 9], "response_ids": [7, 8]}, {"prompt_ids": [1, 11, 3], "response_ids": [20]}]


def _reft(lm, seed=0):
    torch.manual_seed(seed)
    return reft.attach(lm, reft.at_layers(lm, [0, 1], pos=first(1) + last(1), rank=2), tied=False)


def test_reft_on_a_dispatched_model_equals_the_plain_model(tmp_path):
    plain, lm = tiny_lm("llama"), dispatched("llama", tmp_path / "offload")
    a, b = _reft(plain), _reft(lm)
    cfg = reft.TrainConfig(steps=6, lr=2e-2, batch_size=2, progress=False)
    ha, hb = reft.train_reft(a, EXAMPLES, cfg), reft.train_reft(b, EXAMPLES, cfg)
    assert ha.losses[-1] < ha.losses[0] - 1e-2  # it learned something, so equal histories mean equal steps
    assert max(abs(x - y) for x, y in zip(ha.losses, hb.losses)) < 1e-5
    for x, y in zip(a.interventions.parameters(), b.interventions.parameters()):
        torch.testing.assert_close(y, x, atol=1e-5, rtol=0)
    prompts = [[1, 4, 5, 9], [1, 11, 3, 2]]
    torch.testing.assert_close(interp.run(b, prompts).logits, interp.run(a, prompts).logits, atol=1e-5, rtol=0)
    reft.save(a, tmp_path / "run")
    again = reft.load(tmp_path / "run", lm)  # saved from the plain model: same fingerprint, no warning
    torch.testing.assert_close(interp.run(again, prompts).logits, interp.run(a, prompts).logits, atol=1e-5, rtol=0)


def test_our_hooks_compose_with_accelerates(tmp_path):
    """Our hooks run outside accelerate's (which it puts in the module's forward): a forward hook sees the
    module's output on its execution device, and an edit there reaches the logits."""
    lm = dispatched("llama", tmp_path)
    interp.engine.execution_order(lm)  # found once with a probe forward; not counted below
    seen = []
    h = lm.hf.model.layers[1].register_forward_hook(lambda m, a, o: seen.append(o.device))
    site = Site("resid_post", 1, last())
    with options(backend="hooks"):
        out = interp.intervene(lm, BASE, at=site, via=interp.Zero()).logits
    h.remove()
    assert seen == [torch.device("cpu")]
    assert (out - interp.run(lm, BASE).logits).abs().max() > 1e-3
    assert not lm.hf.model.layers[1]._forward_hooks  # ours are gone after the run; accelerate's stays
    assert lm.hf.model.layers[1]._hf_hook is not None


# ---- dtypes: float32 interventions on bf16 models --------------------------------------------------------------


def _sharp(dtype=torch.float32) -> interp.LM:
    """A tiny Llama with a large init (its logits depend strongly on the stream), in ``dtype``."""
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=97, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                         num_hidden_layers=2, intermediate_size=64, initializer_range=0.3)  # fmt: skip
    return interp.LM(tf.LlamaForCausalLM(cfg).eval().to(dtype))


# bf16 keeps 8 bits of mantissa: each rounding is off by up to 2^-9 relative (0.2%). Through 2 layers and the
# unembedding the tiny model's bf16 logits differ from its float32 ones by up to 2.3% of the largest logit
# (measured: 0.106 of 4.6); the tolerance is 3% of the largest logit. The edits below move logits by more than
# 5x that, so a missing or misplaced edit fails.
BF16_REL = 0.03


def bf16_close(got: torch.Tensor, want: torch.Tensor, rel: float = BF16_REL) -> float:
    """``got`` (a bf16 run) equals ``want`` (the float32 run) within bf16 rounding; returns the tolerance used."""
    tol = rel * float(want.abs().max())
    torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=0)
    return tol


@pytest.mark.parametrize(
    ("name", "via"),
    [
        ("patching", lambda: None),
        ("das rotation", lambda: LowRankRotation(32, 4)),
        ("steer", lambda: interp.Steer(torch.linspace(-2, 2, 32))),
        ("zero", lambda: interp.Zero(LowRankRotation(32, 8))),
    ],
)
def test_dii_in_bf16_agrees_with_float32(name, via):
    f32, bf16 = _sharp(), _sharp(torch.bfloat16)
    torch.manual_seed(0)
    iv = via()
    site = Site("resid_post", 0, last())
    want = interp.interchange(f32, BASE, SOURCE, at=site, via=iv).logits
    got = interp.interchange(bf16, BASE, SOURCE, at=site, via=iv).logits
    assert got.dtype == torch.bfloat16
    basis = iv if isinstance(iv, LowRankRotation) else getattr(iv, "via", None)
    if basis is not None:
        assert {p.dtype for p in basis.parameters()} == {torch.float32}  # the basis kept its dtype
    tol = bf16_close(got, want)
    assert (want - interp.run(f32, BASE).logits).abs().max() > 5 * tol
    diff_f32 = interp.interchange(f32, BASE, SOURCE, at=site, via=iv).logit_diff(5, 6)
    diff_bf16 = interp.interchange(bf16, BASE, SOURCE, at=site, via=iv).logit_diff(5, 6)
    torch.testing.assert_close(diff_bf16.float(), diff_f32, atol=2 * tol, rtol=0)  # a difference of two logits


def test_the_edit_runs_in_the_interventions_dtype():
    """A float32 basis edits bf16 activations in float32 and returns bf16: the part outside the subspace is
    the input rounded once, not a bf16 product."""
    R = LowRankRotation(64, 2)
    h = torch.randn(4, 64).to(torch.bfloat16)
    s = torch.randn(4, 64).to(torch.bfloat16)
    out = Interchange(R)(h, s)
    assert out.dtype == torch.bfloat16
    exact = R.interchange(h.float(), s.float())
    torch.testing.assert_close(out.float(), exact, atol=0.02, rtol=0.01)  # one bf16 rounding of the result
    assert (out.float() - h.float()).abs().max() > 0.05  # and it did edit


def test_reft_trains_float32_parameters_on_a_bf16_model():
    lm = _sharp(torch.bfloat16)
    rlm = _reft(lm)
    before = [p.detach().clone() for p in rlm.interventions.parameters()]
    hist = reft.train_reft(rlm, EXAMPLES, reft.TrainConfig(steps=8, lr=2e-2, batch_size=2, progress=False))
    assert {p.dtype for p in rlm.interventions.parameters()} == {torch.float32}
    assert hist.losses[-1] < hist.losses[0]
    assert any((p - q).abs().max() > 1e-4 for p, q in zip(rlm.interventions.parameters(), before))
    prompts = [[1, 4, 5, 9]]
    assert interp.run(rlm, prompts).logits.dtype == torch.bfloat16


@pytest.mark.parametrize(("saved", "loaded"), [(torch.float32, torch.bfloat16), (torch.bfloat16, torch.float32)])
def test_a_reft_saved_in_one_dtype_loads_in_the_other(saved, loaded, tmp_path):
    src, dst = _sharp(saved), _sharp(loaded)
    rlm = _reft(src)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # away from init, so the edit is visible
        for n, p in rlm.interventions.named_parameters():
            if "original" not in n:
                p.add_(0.5 * torch.randn(p.shape, generator=g))
    reft.save(rlm, tmp_path / "run")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same checkpoint in another dtype: no WeightsChangedWarning
        again = reft.load(tmp_path / "run", dst)
    assert {p.dtype for p in again.interventions.parameters()} == {torch.float32}
    for x, y in zip(rlm.interventions, again.interventions):
        torch.testing.assert_close(y.basis_weight(), x.basis_weight(), atol=1e-6, rtol=0)
    prompts = [[1, 4, 5, 9], [1, 11, 3, 2]]
    want, got = interp.run(rlm, prompts).logits.float(), interp.run(again, prompts).logits.float()
    tol = bf16_close(got, want)
    assert (want - interp.run(src, prompts).logits.float()).abs().max() > 5 * tol


def test_the_bf16_fingerprint_tells_other_weights_from_another_dtype(tmp_path):
    rlm = _reft(_sharp())
    reft.save(rlm, tmp_path / "run")
    changed = _sharp(torch.bfloat16)
    with torch.no_grad():
        changed.hf.model.layers[1].mlp.up_proj.weight[0, 0] += 0.1
    with pytest.warns(interp.io.WeightsChangedWarning, match="other weights"):
        reft.load(tmp_path / "run", changed)


# ---- loading ---------------------------------------------------------------------------------------------------


def _tokenizer():
    """A word-level tokenizer of 97 words built in memory (no hub)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2} | {f"w{i}": i for i in range(3, 97)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>")


@pytest.fixture
def saved_llama(tmp_path):
    _tiny("llama").save_pretrained(tmp_path / "llama")
    _tokenizer().save_pretrained(tmp_path / "llama")
    return tmp_path / "llama"


@pytest.mark.parametrize(
    ("kwargs", "dtype"),
    [({}, torch.float32), ({"dtype": torch.bfloat16}, torch.bfloat16), ({"dtype": "bfloat16"}, torch.bfloat16),
     ({"device_map": {"": "cpu"}}, torch.float32), ({"device_map": "auto"}, torch.float32),
     ({"device": "cpu", "dtype": torch.float16}, torch.float16)],
)  # fmt: skip
def test_a_local_folder_loads_in_any_dtype_and_device_map(saved_llama, kwargs, dtype):
    lm = interp.load(saved_llama, **kwargs)
    assert lm.dtype == dtype and lm.device == torch.device("cpu") and lm.spec.architecture == "LlamaForCausalLM"
    want = interp.run(tiny_lm("llama"), BASE).logits
    got = interp.run(lm, BASE).logits.float()
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    else:
        bf16_close(got, want)  # (float16 keeps more mantissa than bf16: the same bound holds)


def test_an_uncached_hub_id_offline_fails_at_once_naming_the_id_and_the_setting(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(LoadError, match=r"'no-such-org/no-such-model'.*HF_HUB_OFFLINE=1 is set.*not in the local"):
        interp.load("no-such-org/no-such-model")
    assert time.perf_counter() - t0 < 2.0


def test_an_uncached_hub_id_without_network_fails_quickly(monkeypatch):
    """HF_HUB_OFFLINE unset: a machine without network (this one) says so within the connect timeout; one with
    network gets the Hub's answer (no such repository) as a LoadError naming the id."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    t0 = time.perf_counter()
    with pytest.raises(LoadError, match=r"'no-such-org/no-such-model-4c1d'.*(cannot be reached|config)"):
        interp.load("no-such-org/no-such-model-4c1d")
    assert time.perf_counter() - t0 < interp.models.CONNECT_TIMEOUT + 10


def test_an_unreachable_hub_is_named_as_the_cause(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("interp.models.hub_reachable", lambda timeout=0: False)
    with pytest.raises(LoadError, match=r"'org/model'.*cannot be reached.*not in the local cache.*HF_HUB_OFFLINE"):
        interp.load("org/model")


def test_the_embedded_default_needs_no_network(monkeypatch):
    """The default never asks the Hub: with offline mode on and no network it goes to the embedded path."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    called = []
    monkeypatch.setattr("interp.models.hub_reachable", lambda timeout=0: called.append(1) or False)

    def stop():
        raise RuntimeError("embedded path reached")

    monkeypatch.setattr("interp.models.embedded_model_path", stop)
    with pytest.raises(RuntimeError, match="embedded path reached"):
        interp.load()
    assert not called


@pytest.mark.parametrize(
    ("make", "kwargs", "match"),
    [
        ("nothing", {}, r"'.*nowhere': no such folder"),
        ("empty", {}, r"'.*empty': the folder has no config.json"),
        ("t5", {}, r"'.*t5': it is not a causal LM \('t5'"),
        ("llama", {"dtype": "int8"}, r"dtype='int8'.*floating torch dtype"),
        ("llama", {"dtype": torch.int64}, r"dtype=torch.int64.*floating torch dtype"),
        ("llama", {"device": "cpu", "device_map": "auto"}, r"device='cpu', device_map='auto'.*give one"),
        ("llama", {"device": "nowhere"}, r"device='nowhere'.*expected a device"),
        ("llama", {"device": "cuda:0"}, r"device='cuda:0'.*no CUDA device|CUDA devices"),
        ("llama", {"device_map": 3}, r"device_map=3.*'auto' or a dict"),
        ("bad id", {}, r"'bad id \?\?'.*not a valid Hub id"),
    ],
)
def test_load_refuses_bad_input_before_any_work(make, kwargs, match, tmp_path, saved_llama):
    where = {"nothing": tmp_path / "nowhere", "empty": tmp_path / "empty", "t5": tmp_path / "t5",
             "llama": saved_llama, "bad id": "bad id ??"}[make]  # fmt: skip
    if make == "empty":
        where.mkdir()
    if make == "t5":
        tf.T5Config(d_model=16, num_layers=1, num_heads=2, d_ff=32, vocab_size=97).save_pretrained(where)
    if kwargs.get("device") == "cuda:0" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(LoadError, match=match):
        interp.load(where, **kwargs)


# ---- the real model --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_gemma_in_bf16_agrees_with_float32(gemma, tmp_path):
    """Gemma-3-270M in bf16 vs float32: the IOI interchange at layer 16's last token flips the answer to the
    source name in both, with logits within tolerance; a float32 ReFT saved on the float32 model loads into the
    bf16 one (float32 parameters, no warning) and gives the same edited logits within tolerance."""
    import copy

    from interp.tasks import ioi_pairs

    pairs = ioi_pairs(8, seed=0)
    bf16 = interp.LM(copy.deepcopy(gemma.hf).to(torch.bfloat16), gemma.tokenizer)
    site = Site("resid_post", 16, last())
    res = {}
    for name, lm in (("f32", gemma), ("bf16", bf16)):
        out = interp.interchange(lm, pairs.base, pairs.source, at=site)
        res[name] = (
            interp.run(lm, pairs.base).logits.float(),
            out.logits.float(),
            out.logit_diff(pairs.base_answer, pairs.source_answer).float(),
            out.accuracy(pairs.source_answer),
        )
    (c32, o32, d32, acc32), (c16, o16, d16, acc16) = res["f32"], res["bf16"]
    # The same rule as on the tiny model: within 3% of the largest logit (Gemma's are O(20-30) after 18 layers;
    # measured 0.9%). With a ReFT edit at layer 6 (whose output is rounded to bf16 and then goes through 12 more
    # layers) the measured worst case over the 262k-word vocabulary is 3.3%: 5% there.
    tol = bf16_close(c16, c32)
    bf16_close(o16, o32)
    torch.testing.assert_close(d16, d32, atol=2 * tol, rtol=0)  # a difference of two logits
    assert acc32 > 0.9 and acc16 > 0.9 and (d32 < 0).all() and (d16 < 0).all()  # flipped, in both dtypes
    assert (o32 - c32).abs().max() > 5 * tol  # the patch matters far more than bf16 rounding
    print(
        f"Gemma bf16 vs float32: clean {float((c16 - c32).abs().max()):.3f}, patched "
        f"{float((o16 - o32).abs().max()):.3f}, logit diff {float((d16 - d32).abs().max()):.3f}; tol {tol:.3f}"
    )
    torch.manual_seed(0)
    rlm = reft.attach(gemma, {Site("resid_post", 6, first(1) + last(1)): reft.LoReFT(gemma.d_model, 4)})
    with torch.no_grad():
        for n, p in rlm.interventions.named_parameters():
            if "original" not in n:
                p.add_(0.2 * torch.randn(p.shape))
    reft.save(rlm, tmp_path / "run")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = reft.load(tmp_path / "run", bf16)
    assert {p.dtype for p in again.interventions.parameters()} == {torch.float32}
    want, got = interp.run(rlm, pairs.base).logits.float(), interp.run(again, pairs.base).logits.float()
    tol = bf16_close(got, want, rel=0.05)
    print(
        f"Gemma ReFT float32 -> bf16: {float((got - want).abs().max()):.3f} (tol {tol:.3f}), edit moves logits "
        f"by {float((want - c32).abs().max()):.3f}"
    )
    assert (want - c32).abs().max() > 2 * tol  # a lost edit would be caught
