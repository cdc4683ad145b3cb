"""Bad-input rows: featurizers (interp.featurizers), the frozen basis Fixed, the probe on activations, SAEs, DBM
masks and a bare tensor passed as a basis. Joined into one table by test_bad_inputs.

Each is refused before any work, with a message naming the value (its shape, its count, the class it lacks).
"""

from __future__ import annotations

import json

import torch
from bad_inputs_io import _config, _das_result, _tensors
from safetensors.torch import save_file
from test_bad_inputs import Bad

from interp import Interchange
from interp.das import DASResult
from interp.errors import BasisError, FeaturizerError, FormatError
from interp.featurizers import SAE, Fixed, Mask, diff_means, kmeans, lda, pca, probe_direction, random_basis, svd
from interp.probe import probe_acts

ACTS = torch.randn(20, 8, generator=torch.Generator().manual_seed(0))  # (N, d)
TWO = [0, 1] * 10
NAN_ACTS = ACTS.clone()
NAN_ACTS[3, 2] = float("nan")


def _sae_folder(env, cfg_edit=None, drop=None):
    folder = env.tmp / "sae"
    folder.mkdir()
    cfg = {"architecture": "standard", "d_in": 4, "d_sae": 6, "apply_b_dec_to_input": True}
    cfg.update(cfg_edit or {})
    (folder / "cfg.json").write_text(json.dumps(cfg))
    w = {"W_enc": torch.ones(4, 6), "b_enc": torch.zeros(6), "W_dec": torch.ones(6, 4), "b_dec": torch.zeros(4)}
    save_file({k: v for k, v in w.items() if k != drop}, str(folder / "sae_weights.safetensors"))
    return folder


def _saved_mask(env, features="rows"):
    basis = Mask(Fixed(torch.eye(32)[:4])) if features == "rows" else Mask(SAE.random(32, 6))
    return _das_result(env, basis=basis).save(env.tmp / "mask")


def _set_R(t):
    t["R"] = torch.ones_like(t["R"])


def _set_kind(c):
    c["basis"]["features"] = "pixels"


ROWS = [
    # ---- Fixed (interp.subspace) ------------------------------------------------------------------------------
    Bad("fixed rank deficient", lambda env: Fixed(torch.ones(2, 4)), BasisError, r"2 linearly independent.*rank 1"),
    Bad("fixed zero vector", lambda env: Fixed(torch.zeros(4)), BasisError, r"rank-deficient 1 x 4 .*rank 0"),
    Bad("fixed NaN", lambda env: Fixed(torch.tensor([1.0, float("nan")])), BasisError, r"must be finite.*1 NaN"),
    Bad("fixed 3-D", lambda env: Fixed(torch.ones(2, 3, 4)), BasisError, r"\(k, d\) .*shape \(2, 3, 4\)"),
    Bad("fixed more rows than width", lambda env: Fixed(torch.randn(5, 3)), BasisError, r"5 rows of width 3"),
    Bad("fixed a string", lambda env: Fixed("abc"), BasisError, r"got str"),
    Bad(
        "interchange a bare tensor",
        lambda env: Interchange(torch.randn(640)),
        TypeError,
        r"tensor of shape \(640,\).*Fixed\(vectors\)",
    ),
    # ---- activations and labels -------------------------------------------------------------------------------
    Bad(
        "featurizer acts 3-D", lambda env: diff_means(torch.ones(20, 2, 8), TWO), FeaturizerError, r"shape \(20, 2, 8\)"
    ),
    Bad("featurizer acts NaN", lambda env: pca(NAN_ACTS, 2), FeaturizerError, r"must be finite.*1 NaN"),
    Bad("featurizer acts ints", lambda env: pca(torch.ones(5, 3, dtype=torch.long), 1), FeaturizerError, r"int64"),
    Bad("featurizer acts a list", lambda env: pca([[1.0, 2.0]], 1), FeaturizerError, r"torch.Tensor.*got list"),
    Bad("diff_means one class", lambda env: diff_means(ACTS, [1] * 20), FeaturizerError, r"only the value \[1\]"),
    Bad("diff_means label count", lambda env: diff_means(ACTS, TWO[:7]), FeaturizerError, r"20 activation rows and 7"),
    Bad(
        "diff_means equal means",
        lambda env: diff_means(torch.ones(4, 3), [0, 0, 1, 1]),
        FeaturizerError,
        r"span only 0",
    ),
    Bad("probe_direction one class", lambda env: probe_direction(ACTS, ["x"] * 20), FeaturizerError, r"\['x'\]"),
    Bad("probe_direction l2 NaN", lambda env: probe_direction(ACTS, TWO, l2=float("nan")), FeaturizerError, r"l2.*nan"),
    Bad("probe_acts scale", lambda env: probe_acts(ACTS, TWO, scale="none"), FeaturizerError, r"'none'"),
    Bad("lda k above classes", lambda env: lda(ACTS, TWO, k=2), FeaturizerError, r"lda k .*\[1, 1\]; got 2.*2 classes"),
    Bad("lda shrinkage 2", lambda env: lda(ACTS, TWO, shrinkage=2.0), FeaturizerError, r"shrinkage .*got 2"),
    Bad("pca k above width", lambda env: pca(ACTS, 9), FeaturizerError, r"pca k .*\[1, 8\]; got 9"),
    Bad("pca k 1.5", lambda env: pca(ACTS, 1.5), FeaturizerError, r"pca k .*got 1\.5"),
    Bad("kmeans k 1", lambda env: kmeans(ACTS, 1), FeaturizerError, r"at least 2"),
    Bad("kmeans identical rows", lambda env: kmeans(torch.ones(6, 3), 2), FeaturizerError, r"fewer than k=2 distinct"),
    Bad("svd a vector", lambda env: svd(torch.ones(4), 1), FeaturizerError, r"weight matrix \(out, in\); got \(4,\)"),
    Bad("svd side", lambda env: svd(torch.ones(4, 3), 1, side="both"), FeaturizerError, r"'both'"),
    Bad("svd k above", lambda env: svd(torch.ones(4, 3), 4), FeaturizerError, r"svd k .*got 4"),
    Bad("random_basis k above d", lambda env: random_basis(4, 5), FeaturizerError, r"random_basis k .*got 5.*d=4"),
    # ---- SAE ------------------------------------------------------------------------------------------------
    Bad(
        "sae W_dec shape",
        lambda env: SAE(torch.ones(4, 6), torch.zeros(6), torch.ones(4, 6), torch.zeros(4)),
        FeaturizerError,
        r"W_dec has shape \(4, 6\).*\(6, 4\)",
    ),
    Bad(
        "sae NaN", lambda env: SAE(torch.full((2, 3), float("nan")), 0, 0, 0), FeaturizerError, r"W_enc must be finite"
    ),
    Bad("sae width", lambda env: SAE.random(4, 6).encode(torch.ones(5)), FeaturizerError, r"width 4; got width 5"),
    Bad("sae load no folder", lambda env: SAE.load(env.tmp / "nope"), FileNotFoundError, r"nope.*cfg\.json"),
    Bad(
        "sae load gated",
        lambda env: SAE.load(_sae_folder(env, {"architecture": "gated"})),
        FormatError,
        r"architecture 'gated' is not supported",
    ),
    Bad(
        "sae load layer norm",
        lambda env: SAE.load(_sae_folder(env, {"normalize_activations": "layer_norm"})),
        FormatError,
        r"'layer_norm'",
    ),
    Bad("sae load missing b_dec", lambda env: SAE.load(_sae_folder(env, drop="b_dec")), FormatError, r"b_dec"),
    # ---- Mask (DBM) -------------------------------------------------------------------------------------------
    Bad("mask features word", lambda env: Mask("axes", d_model=8), FeaturizerError, r"'axes'.*'neurons'"),
    Bad("mask neurons no width", lambda env: Mask("neurons"), FeaturizerError, r"'neurons'.*d_model="),
    Bad("mask features tensor", lambda env: Mask(torch.eye(3)), FeaturizerError, r"got Tensor"),
    Bad("mask temperature 0", lambda env: Mask(8, temperature=0), BasisError, r"temperature must be .*got 0"),
    Bad("mask sparsity -1", lambda env: Mask(8, sparsity=-1), FeaturizerError, r"sparsity .*got -1"),
    Bad(
        "mask saved rows edited",
        lambda env: DASResult.load(_tensors(_saved_mask(env), _set_R), env.lm),
        FormatError,
        r"R: the rows are not orthonormal",
    ),
    Bad(
        "mask saved features unknown",
        lambda env: DASResult.load(_config(_saved_mask(env, "sae"), _set_kind), env.lm),
        FormatError,
        r"features is 'pixels'; expected 'rows' or 'sae'",
    ),
    Bad("mask over sae has no rows", lambda env: Mask(SAE.random(4, 6)).weight, BasisError, r"no rows"),
]
