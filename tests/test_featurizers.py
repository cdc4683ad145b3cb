"""Featurizers (interp.featurizers, interp.subspace.Fixed, interp.probe): each recovers a PLANTED answer.

Synthetic activations carry a label as a shift along a known unit direction ``v``; a tiny GPT-2 (test_das's
``planted``) carries a binary variable along ``u`` and reads its answer from it. Difference of means, the probe
and LDA find ``v`` (random directions do not), PCA the axis of largest variance, k-means the axis between two
clusters; an interchange along the recovered direction flips the planted model's answer; an SAE folder in SAELens's
layout loads; a DBM mask learns to keep the one planted coordinate; Fixed and Mask bases save and load.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from test_das import planted

from interp import Interchange, Site, collect, last
from interp.das import DASResult, fit_das
from interp.featurizers import SAE, Fixed, Mask, diff_means, kmeans, lda, pca, probe_direction, random_basis, svd
from interp.interventions import as_intervention
from interp.metrics import iia
from interp.probe import fit_probe, probe_acts, probe_sweep

D = 32


def unit(seed: int, d: int = D) -> torch.Tensor:
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def shifted(n: int = 1000, *, classes=(0, 1), shift: float = 3.0, seed: int = 0):
    """Activations (n, D): isotropic noise plus ``shift * i`` along direction i of ``dirs`` for class i > 0."""
    g = torch.Generator().manual_seed(seed)
    labels = [classes[i % len(classes)] for i in range(n)]
    dirs = torch.stack([unit(10 + i) for i in range(len(classes) - 1)])  # (c - 1, D)
    acts = torch.randn(n, D, generator=g)
    for i, c in enumerate(labels):
        k = classes.index(c)
        if k:
            acts[i] += shift * dirs[k - 1]
    return acts, labels, dirs


def captured(basis: Fixed, dirs: torch.Tensor) -> torch.Tensor:
    """How much of each direction lies in the basis's row space (1: all of it)."""
    return (dirs @ basis.weight.T).norm(dim=-1)


SUPERVISED = {"diff_means": diff_means, "probe": probe_direction, "lda": lda}


@pytest.mark.parametrize("name", SUPERVISED)
def test_supervised_featurizers_recover_the_planted_direction(name):
    acts, labels, dirs = shifted()
    f = SUPERVISED[name](acts, labels)
    assert isinstance(f, Fixed) and f.rank == 1
    assert float(captured(f, dirs)) > 0.9
    assert float(f.weight[0] @ dirs[0]) > 0  # from the first class (0) toward the second (1)
    assert float(captured(random_basis(D, 1, seed=0), dirs)) < 0.5  # the control does not


@pytest.mark.parametrize("name", SUPERVISED)
def test_three_classes_give_two_directions_spanning_the_planted_plane(name):
    acts, labels, dirs = shifted(1500, classes=("a", "b", "c"))
    f = SUPERVISED[name](acts, labels)
    assert f.rank == 2
    assert bool((captured(f, dirs) > 0.9).all()), captured(f, dirs)


def test_lda_prefers_the_clean_axis_over_the_noisy_mean_difference():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(400, 6, generator=g) * torch.tensor([6.0, 1, 1, 1, 1, 1])
    labels = [i % 2 for i in range(400)]
    acts[1::2, :2] += torch.tensor([2.0, 1.0])  # the means differ most along the noisy axis 0
    assert diff_means(acts, labels).weight[0].abs().argmax().item() == 0
    assert lda(acts, labels).weight[0].abs().argmax().item() == 1


@pytest.mark.parametrize("scale", ["feature", "global"])
def test_the_probe_keeps_its_scaler_and_reads_activations(scale):
    """Its weights live on scaled features; the activation-space weights give the same logits on raw vectors."""
    acts, labels, dirs = shifted()
    acts[:, 0] *= 50.0  # a wide, uninformative axis
    pr = probe_acts(acts, labels, test_fraction=0, scale=scale)
    z = (acts - pr.mean) / pr.scale
    assert torch.allclose(pr.logits(acts), z @ pr.weight.T + pr.bias, atol=1e-3)
    assert torch.allclose(pr.direction, (pr.weight[1:] - pr.weight[:1]) / pr.scale)
    assert pr.predict(acts[:4]) == [int(i) for i in (pr.logits(acts[:4]).argmax(-1))]


def test_probe_direction_is_not_bent_by_per_feature_scaling(model):
    """Separable classes with features of very different spread (a tiny model's residual stream): per-feature
    standardisation under an L2 penalty points the direction elsewhere; the probe's featurizer does not."""
    lm, u, train, test, site, acts = model
    bent = probe_acts(acts, train.base_labels, test_fraction=0).basis()
    assert abs(float(bent.weight[0] @ u)) < 0.5 and iia(lm, test, at=site, via=bent) == 0.0
    f = probe_direction(acts, train.base_labels)
    assert abs(float(f.weight[0] @ u)) > 0.99 and iia(lm, test, at=site, via=f) == 1.0


def test_pca_finds_the_axis_of_largest_variance_in_order():
    g = torch.Generator().manual_seed(0)
    a, b = unit(1), unit(2)
    b = b - (b @ a) * a
    b /= b.norm()
    acts = (
        torch.randn(500, D, generator=g)
        + 8 * torch.randn(500, 1, generator=g) * a
        + 4 * torch.randn(500, 1, generator=g) * b
    )
    f = pca(acts[:, None], 2)  # (N, 1, d) as collect() returns at one position
    assert abs(float(f.weight[0] @ a)) > 0.98 and abs(float(f.weight[1] @ b)) > 0.95


@pytest.mark.parametrize("k", [2, 3])
def test_kmeans_separates_planted_clusters(k):
    acts, labels, dirs = shifted(300, classes=tuple(range(k)), shift=8.0)
    f = kmeans(acts, k, seed=0)
    assert f.rank == k - 1
    assert bool((captured(f, dirs) > 0.9).all()), captured(f, dirs)
    assert torch.equal(kmeans(acts, k, seed=0).weight, f.weight)  # seeded: the same again


@pytest.mark.parametrize("side", ["input", "output"])
def test_svd_finds_the_planted_singular_directions_of_a_weight(side):
    a, b = unit(1, 12), unit(2, 20)  # W = 9 a b^T + small noise: reads along b, writes along a
    W = 9 * a[:, None] * b[None] + 0.1 * torch.randn(12, 20, generator=torch.Generator().manual_seed(0))
    f = svd(W, 2, side=side)
    top = b if side == "input" else a
    assert f.d_model == top.numel() and abs(float(f.weight[0] @ top)) > 0.99


def test_random_basis_is_seeded_and_orthonormal():
    R = random_basis(D, 4, seed=3)
    assert torch.allclose(R.weight @ R.weight.T, torch.eye(4), atol=1e-5)
    assert torch.equal(R.weight, random_basis(D, 4, seed=3).weight)
    assert not torch.equal(R.weight, random_basis(D, 4, seed=4).weight)


@pytest.mark.parametrize(
    "rows, rank",
    [(torch.tensor([3.0, 4.0]), 1), (torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]), 2), (torch.eye(5) * 7, 5)],
    ids=["vector", "two rows", "full"],
)
def test_fixed_orthonormalises_spans_the_rows_and_trains_nothing(rows, rank):
    f = Fixed(rows)
    R = f.weight
    rows = rows.reshape(-1, R.shape[1])
    assert f.rank == rank and torch.allclose(R @ R.T, torch.eye(rank), atol=1e-6)
    assert torch.allclose(rows @ R.T @ R, rows, atol=1e-5)  # same row space
    assert torch.allclose(R[0], rows[0] / rows[0].norm())  # the first row keeps its direction and sign
    assert list(f.parameters()) == [] and repr(f) == f"Fixed(d_model={rows.shape[1]}, rank={rank})"


def test_bare_tensor_as_via_says_to_use_fixed_without_printing_it():
    v = torch.randn(640)
    for make in (lambda: Interchange(v), lambda: as_intervention(v)):
        with pytest.raises(TypeError, match=r"shape \(640,\).*Fixed\(vectors\)") as e:
            make()
        assert len(str(e.value)) < 300


# ------------------------------------------------------------------------------------ on a tiny model


@pytest.fixture(scope="module")
def model():
    lm, u, pairs = planted()
    train, test = pairs.split(0.7, seed=0)
    site = Site("resid_post", 0, last())
    return lm, u, train, test, site, collect(lm, train.base, at=site)


@pytest.mark.parametrize("name", ["diff_means", "probe", "lda", "kmeans", "random"])
def test_interchange_along_the_recovered_direction_flips_the_answer(model, name):
    lm, u, train, test, site, acts = model
    labels = train.base_labels
    make = {**SUPERVISED, "kmeans": lambda a, _: kmeans(a, 2), "random": lambda a, _: random_basis(D, 1)}[name]
    f = make(acts, labels)
    score = iia(lm, test, at=site, via=f)  # every test pair changes G: the answer flips only along u
    if name == "random":
        assert score < 0.2 and abs(float(f.weight[0] @ u)) < 0.5
    else:
        assert score == 1.0 and abs(float(f.weight[0] @ u)) > 0.9


def test_probe_keeps_its_fits_and_takes_precollected_activations(model):
    lm, u, train, test, site, acts = model
    values = train.base_labels
    a = fit_probe(lm, train.base, values, at=site)
    b = probe_acts(acts, values, site=site)
    assert torch.equal(a.weight, b.weight) and a.accuracy_test == b.accuracy_test == 1.0
    assert b.site == site and b.basis().rank == 1
    ps = probe_sweep(lm, train.base, values, layers=[0, 1], positions={"last": last()})
    assert set(ps.results) == {(0, "last"), (1, "last")}
    assert ps.results[0, "last"].accuracy_test == float(ps.accuracy[0, 0])
    assert torch.equal(ps.results[0, "last"].weight, a.weight)


def test_mask_learns_to_keep_the_planted_coordinate(model):
    lm, u, train, test, site, _ = model
    others = Fixed(torch.cat([u[None], torch.randn(7, D, generator=torch.Generator().manual_seed(3))])).weight
    rows = others[[1, 2, 3, 0, 4, 5, 6, 7]]  # orthonormal; u is row 3
    M = Mask(Fixed(rows))
    assert torch.allclose(M.weight[3], u, atol=1e-5)
    das = fit_das(lm, train, at=site, via=M, steps=100, lr=1e-2, eval_every=0, progress=False)
    assert M.kept() == [3], M.mask()
    assert das.iia_train == 1.0 and iia(lm, test, at=site, via=M) == 1.0
    assert M.temperature == pytest.approx(0.1)  # annealed by fit_das (DASConfig.temperature's end)


# ------------------------------------------------------------------------------------ the mask's edit


def hard(mask: Mask, keep: list[int]) -> Mask:
    with torch.no_grad():
        mask.logits.fill_(-1e4)
        mask.logits[keep] = 1e4
    return mask


def test_a_hard_mask_over_rows_is_the_interchange_along_the_kept_rows():
    rows = random_basis(D, 6, seed=1)
    h, s = torch.randn(2, 4, 1, D).unbind(0)
    M = hard(Mask(rows), [1, 4])
    want = Interchange(Fixed(rows.weight[[1, 4]]))(h, s)
    assert torch.allclose(M.interchange(h, s), want, atol=1e-5)
    assert torch.allclose(hard(Mask("neurons", d_model=D), [0, 5]).interchange(h, s)[..., [0, 5]], s[..., [0, 5]])


def test_a_mask_over_sae_features_swaps_features_and_keeps_the_reconstruction_error():
    sae = SAE.random(D, 64, seed=0)
    h, s = (torch.randn(2, 5, D) * 2).unbind(0)
    M = Mask(sae)
    assert not M.linear and M.rank == 64
    err = h - sae.decode(sae.encode(h))
    assert err.norm() > 0.1  # a random SAE reconstructs badly: the error must be kept
    assert torch.allclose(hard(M, list(range(64))).interchange(h, s), sae.decode(sae.encode(s)) + err, atol=1e-4)
    assert torch.allclose(hard(M, []).interchange(h, s), h, atol=1e-5)
    f = hard(M, [3, 7]).interchange(h, s)
    delta = (sae.encode(s) - sae.encode(h))[..., [3, 7]] @ sae.W_dec[[3, 7]]
    assert torch.allclose(f, h + delta, atol=1e-5)
    assert torch.allclose(M.interchange(h, h), h, atol=1e-5)  # a source equal to the base changes nothing


def test_sae_mask_trains_in_fit_das(model):
    lm, u, train, test, site, _ = model
    sae = SAE(torch.stack([u, -u], 1), torch.zeros(2), torch.stack([u, -u]), torch.zeros(D))  # two features: +-u
    M = Mask(sae)
    fit_das(lm, train, at=site, via=M, steps=60, lr=1e-2, eval_every=0, progress=False)
    assert M.kept() == [0, 1] and iia(lm, test, at=site, via=M) == 1.0


# ------------------------------------------------------------------------------------ SAE files


def test_sae_loads_a_saelens_folder(tmp_path):
    """Written the way SAELens's save_model does (cfg.json with its extra keys, sae_weights.safetensors)."""
    g = torch.Generator().manual_seed(0)
    d, n = 8, 16
    w = {"W_enc": torch.randn(d, n, generator=g), "b_enc": torch.randn(n, generator=g),
         "threshold": torch.rand(n, generator=g), "W_dec": torch.randn(n, d, generator=g),
         "b_dec": torch.randn(d, generator=g)}  # fmt: skip
    cfg = {"architecture": "jumprelu", "d_in": d, "d_sae": n, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
           "metadata": {"model_name": "gemma-3-270m", "hook_name": "blocks.3.hook_resid_post"}}  # fmt: skip
    tmp_path.joinpath("sae").mkdir()
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(cfg))
    save_file(w, str(tmp_path / "sae" / "sae_weights.safetensors"))
    sae = SAE.load(tmp_path / "sae")
    x = torch.randn(3, d, generator=g)
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    want = torch.relu(pre) * (pre > w["threshold"])
    assert sae.architecture == "jumprelu" and torch.allclose(sae.encode(x), want)
    assert torch.allclose(sae.decode(want), want @ w["W_dec"] + w["b_dec"])
    again = SAE.load(sae.save(tmp_path / "copy"))
    assert torch.equal(again.encode(x), sae.encode(x)) and again.apply_b_dec_to_input


# ------------------------------------------------------------------------------------ saving


@pytest.mark.parametrize("kind", ["fixed", "mask rows", "mask neurons", "mask sae"])
def test_fixed_and_mask_bases_save_and_load_with_a_das_result(model, kind, tmp_path):
    lm, u, train, test, site, acts = model
    basis = {
        "fixed": lambda: diff_means(acts, train.base_labels),
        "mask rows": lambda: Mask(pca(acts, 4), temperature=0.3, sparsity=0.05),
        "mask neurons": lambda: Mask("neurons", d_model=D),
        "mask sae": lambda: Mask(
            SAE(torch.eye(D)[:, :8], torch.zeros(8), torch.eye(D)[:8], torch.zeros(D), threshold=torch.full((8,), 0.1))
        ),  # fmt: skip
    }[kind]()
    if isinstance(basis, Mask):
        with torch.no_grad():
            basis.logits.normal_()
    result = DASResult(site=site, basis=basis, variables=("G",), splits=(basis.rank,), lm=lm)
    result.iia_test = iia(lm, test, at=site, via=basis)
    back = DASResult.load(result.save(tmp_path / "r"), lm)
    assert type(back.basis) is type(basis)
    for (name, a), (_, b) in zip(sorted(basis.state_dict().items()), sorted(back.basis.state_dict().items())):
        assert torch.equal(a, b), name
    assert getattr(back.basis, "temperature", None) == getattr(basis, "temperature", None)
    assert back.iia(test) == result.iia_test
