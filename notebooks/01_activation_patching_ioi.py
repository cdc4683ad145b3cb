# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Activation patching and DII on IOI
#
# Gemma-3-270M completes *"When Mary and John went to the store, John gave a drink to"* with **" Mary"**, the
# indirect object (IO). We ask where in the residual stream that answer lives. Each source prompt swaps the
# two names, so its answer is the base's subject. Patching a site from source into base and measuring the
# normalised logit difference tells us whether that site carries the information the answer depends on:
# 0 = nothing changes, 1 = the base's answer flips to the source's.
#
# We then repeat the grid through a **32-dimensional subspace** (5% of the 640 dimensions) in place of the whole
# vector: one spanned by the top principal directions of the source-minus-base differences at that site (found
# on separate prompts), and a random one. What is swapped here is *which of 32 names* fills each role, so we
# give the subspace as many directions as there are names. If those directions reproduce the full effect, the
# variable lives in a small subspace: the premise that DAS (notebook 03) builds on.

# %%
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import interp
from interp import LowRankRotation, Site, at, attribution_patch, collect, encode, last, logit_lens
from interp.attribution import compare_with_patching, report
from interp.patching import patch_grid
from interp.patchscope import patchscope
from interp.tasks import IOI_POSITIONS, ioi_pairs
from interp.viz import plot_atp_vs_exact, plot_patching_grid, save

ROOT = Path.cwd() if (Path.cwd() / "pyproject.toml").exists() else Path.cwd().parent  # repo root or notebooks/
FIGURES = Path(os.environ.get("INTERP_FIGURES", ROOT / "results" / "figures"))
SMOKE = os.environ.get("SMOKE") == "1"  # fewer layers for a quick local run; the model is always the real one
torch.manual_seed(0)
lm = interp.load()
print(lm)

# %% [markdown]
# ## The task and the model's clean accuracy

# %%
pairs = ioi_pairs(8, seed=0)
print(pairs.base[0], "->", pairs.base_answer[0])
print(pairs.source[0], "->", pairs.source_answer[0])
layers = list(range(0, lm.n_layers, 6 if SMOKE else 3)) + [lm.n_layers - 1]
positions = {k: IOI_POSITIONS[k] for k in ("IO", "and", "S1", "S2", "obj", "end")}

# %% [markdown]
# ## Full-vector activation patching, layers x positions

# %%
full = patch_grid(lm, pairs, layers=layers, positions=positions)
print(
    f"clean accuracy {full.clean_accuracy:.2f}; logit diff base {full.base_logit_diff:.2f}, "
    f"source {full.source_logit_diff:.2f}"
)
assert full.clean_accuracy >= 0.9
E = dict(zip(full.positions, full.effect.T))
# Early on, the answer is still where the names are; late, it has moved to the final token.
assert E["IO"][0] > 0.8 and E["end"][-1] > 0.9 and abs(E["end"][0]) < 0.1

# %% [markdown]
# ## Attribution patching: the whole grid from one backward pass
#
# Exact patching pays one forward pass per cell. Attribution patching (AtP; Nanda 2023, Kramár et al. 2024)
# keeps the base run's activations and the gradient of the logit difference with respect to them, reads the same
# sites on the source run, and estimates every cell at once to first order:
# `effect ≈ -(a_source - a_base) · ∂LD/∂a / (LD_base - LD_source)`, normalised as the exact grid is. Three
# passes give the whole grid. The estimate is exact where LD is linear in the patched vector, and it is wrong
# where the patch is large and the model is curved on the way from the site to the logits.

# %%
t0 = time.perf_counter()
atp_resid = attribution_patch(lm, pairs, layers=layers, positions=positions)  # resid_post; exact: `full` above
print(f"AtP of the resid_post grid: {time.perf_counter() - t0:.1f} s for {atp_resid.effect.numel()} cells")
(attn,) = compare_with_patching(lm, pairs, components=["attn_out"], layers=layers, positions=positions)
print(report([attn]))  # AtP and exact patch_grid of the attention outputs, side by side
atp = {"resid_post": atp_resid.effect, "attn_out": attn.atp.effect}
exact = {"resid_post": full.effect, "attn_out": attn.exact.effect}
r = {c: torch.corrcoef(torch.stack([exact[c].flatten(), atp[c].flatten()]))[0, 1].item() for c in exact}
print("Pearson r per component:", {c: round(v, 2) for c, v in r.items()})

fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), constrained_layout=True)
plot_patching_grid(atp["resid_post"], layers, full.positions, ax=axes[0], title="AtP estimate of the grid above")
plot_atp_vs_exact(exact, atp, ax=axes[1])
fig.suptitle("IOI on Gemma-3-270M: attribution patching against exact patching, per cell")
save(fig, FIGURES / "01_atp_vs_exact.png")

# Layer 3's MLP at the two name tokens: how far a name swap moves what it writes, and both estimates there.
names = {k: positions[k] for k in ("IO", "S2")}
mlp3 = [Site("mlp_out", layer, IOI_POSITIONS["IO"]) for layer in (2, 3)]
jump = [
    (s - b).norm(dim=-1).mean().item()
    for s, b in zip(collect(lm, pairs.source, at=mlp3), collect(lm, pairs.base, at=mlp3))
]
mlp_exact = patch_grid(lm, pairs, layers=[3], positions=names, component="mlp_out", progress=False).effect[0]
mlp_atp = attribution_patch(lm, pairs, layers=[3], positions=names, component="mlp_out").effect[0]
print(f"|mlp_out(source) - mlp_out(base)| at IO: layer 2 {jump[0]:.0f}, layer 3 {jump[1]:.0f}")
print(f"layer 3 mlp_out at IO, S2: exact {mlp_exact.tolist()}, AtP {mlp_atp.tolist()}")

# %% [markdown]
# What each component writes to the stream in small pieces, AtP gets right: the attention outputs correlate
# almost perfectly with exact patching, and at the final token of the last layers (where the answer is read out)
# the residual stream agrees too. It fails where a patch swaps a *name*. In the early residual stream at IO and
# S2, and at the output of layer 3's MLP there (whose source-minus-base difference is many times layer 2's in
# norm: it writes the name's identity at full strength), the patch is far outside the linear regime. At
# S2, AtP even gets the sign wrong: exact patching makes IO the repeated name and flips the answer, but the
# gradient at the base run sees only a small nudge. This fits the failure mode Kramár et al. describe for
# patches that change which token an attention head matches (saturated attention: the softmax's gradient is flat
# where the pattern would jump), which AtP* answers by recomputing attention exactly for query and key patches.
# Use AtP to rank many sites cheaply, then confirm the cells that matter with exact patching.

# %%
E_atp = dict(zip(full.positions, atp["resid_post"].T))
assert r["attn_out"] > 0.9  # the components that add small pieces: AtP tracks exact patching
assert jump[1] > 5 * jump[0] and (mlp_exact > 0.8).all() and (mlp_atp < 0.5 * mlp_exact).all()  # a large patch
assert abs(E_atp["end"][-1] - E["end"][-1]) < 0.1  # the read-out site of the answer: first order is enough
assert E["S2"][0] > 0.8 and E_atp["S2"][0] < 0  # a name swap at S2: AtP has the wrong sign
assert E["IO"][0] > 0.8 and E_atp["IO"][0] < 0.5 * E["IO"][0]  # ... and misses most of the IO swap

# %% [markdown]
# ## The same grid through 32-dimensional subspaces
#
# For each site we build a rank-32 basis from the top principal directions of `source - base` activations on
# 64 *other* pairs, and a random rank-32 basis for contrast.

# %%
RANK = 32
fit_pairs = ioi_pairs(64, seed=1)
fit_base, fit_source = encode(lm, fit_pairs.base), encode(lm, fit_pairs.source)


sites = {(layer, name): Site("resid_post", layer, pos) for layer in layers for name, pos in positions.items()}
src_h = collect(lm, fit_source, at=list(sites.values()))  # one trace reads every site
base_h = collect(lm, fit_base, at=list(sites.values()))
pca_bases, random_bases = {}, {}
for key, s, b in zip(sites, src_h, base_h):
    _, _, v = torch.linalg.svd((s - b)[:, 0], full_matrices=False)  # (B, d): top right-singular vectors
    pca_bases[key] = LowRankRotation(lm.d_model, RANK, init=v[:RANK])
    random_bases[key] = LowRankRotation(lm.d_model, RANK)

pca = patch_grid(lm, pairs, layers=layers, positions=positions, via=pca_bases).effect
rand = patch_grid(lm, pairs, layers=layers, positions=positions, via=random_bases).effect

# %%
fig, axes = plt.subplots(1, 3, figsize=(18, 5.5), constrained_layout=True)
plot_patching_grid(full.effect, layers, full.positions, ax=axes[0], title="whole vector (640 dims)")
plot_patching_grid(pca, layers, full.positions, ax=axes[1], title=f"top-{RANK} difference directions")
plot_patching_grid(rand, layers, full.positions, ax=axes[2], title=f"random {RANK}-dim subspace")
fig.suptitle("IOI on Gemma-3-270M: effect of patching resid_post from the name-swapped prompt")
save(fig, FIGURES / "01_ioi_patching.png")

# %% [markdown]
# ## What the difference says
#
# Where the full vector matters, 32 well-chosen directions carry almost all of it, while 32 random directions
# carry little: the names sit in a small subspace of each residual vector, not spread over all 640
# dimensions. (With 4 directions the effect drops to about 0.2-0.3: one direction per name is what it takes.)
# A variable with two values, such as *is the indirect object first or second*, needs far fewer: rank-1 DAS
# finds it in notebook 03. That is what makes learning such subspaces well posed, and why a rank-4 edit (ReFT)
# can steer the model.

# %%
mask = full.effect.abs() > 0.5
print(f"sites with |full effect| > 0.5: {int(mask.sum())}")
print(
    f"mean effect there: full {full.effect[mask].mean():.2f}, top-{RANK} PCA {pca[mask].mean():.2f}, "
    f"random-{RANK} {rand[mask].mean():.2f}"
)
assert pca[mask].mean() > 0.7 and rand[mask].abs().mean() < 0.3

# %% [markdown]
# ## Two lenses on one residual stream: the logit lens and a patchscope
#
# The **logit lens** decodes a residual vector through the final norm and the unembedding: what the model would
# *predict* if it stopped at that layer. A **patchscope** (Ghandeharioun et al. 2024) writes the vector over the
# `?` of a few-shot identity prompt, `cat -> cat; 1135 -> 1135; hello -> hello; ? ->`, at the same layer, and lets
# the remaining layers say which token it *stands for*. We read both at every layer on four of the prompts: at
# the last token (" to"), where the IO name is predicted, and, with the patchscope, at the IO name's own token.

# %%
t0 = time.process_time()
few, io = pairs.base[:4], pairs.base_answer[:4]
lens = logit_lens(lm, few)  # (layers, 4 prompts, 1, vocab): the last token
scope = patchscope(lm, few, pos=at(2) + last())  # (layers, 4 prompts, 2, vocab): the IO token, the last token
lens_rank, scope_rank = lens.rank(io)[..., 0], scope.rank(io)  # rank of the IO name: (layers, 4), (layers, 4, 2)
print(f"both lenses, {lm.n_layers} layers x 4 prompts: {time.process_time() - t0:.1f} s of CPU")
print(f"prompt 0: {few[0]!r} -> {io[0]!r}; the IO name's rank, median over the 4 prompts, and prompt 0's top token")
print("layer | logit lens @ last token | patchscope @ last token | patchscope @ IO token")
for layer in range(lm.n_layers):
    cells = [
        (lens_rank[layer], lens.top_k(1)[layer][0][0]),
        (scope_rank[layer, :, 1], scope.top_k(1, slot=1)[layer][0][0]),
        (scope_rank[layer, :, 0], scope.top_k(1, slot=0)[layer][0][0]),
    ]
    print(f"{layer:5d} | " + " | ".join(f"{int(r.median()):>6d} {t!r:<12}" for r, t in cells))

# %%
hello = lm.tokenizer(" hello", add_special_tokens=False)["input_ids"][0]
first_lens = next(layer for layer in range(lm.n_layers) if (lens_rank[layer] == 0).sum() >= 3)
print(
    f"the logit lens first ranks the IO name top-1 (3 of 4 prompts) at layer {first_lens}; the patchscope at the "
    f"last token never does (best rank {int(scope_rank[..., 1].min())})"
)
assert first_lens == 12 and (lens_rank[:11] > 1000).all() and (lens_rank[-1] == 0).all()  # a late, linear readout
assert (scope_rank[..., 1] > 1000).all()  # the last token's state never reads as the name it predicts ...
assert (scope.logits[12:, :, 1].argmax(-1) == hello).all()  # ... late states read as the prompt's last example
assert (scope_rank[:8, :, 0] == 0).all() and (scope_rank[12:, :, 0] > 1000).all()  # the IO token reads as its name

# %% [markdown]
# The two lenses answer different questions, and on Gemma-3-270M they do not overlap. The logit lens reads the
# *prediction*: at the last token it ranks the IO name first from layer 12 (3 of 4 prompts; every prompt at the
# last layer), and nowhere before layer 11 (ranks in the thousands). The identity patchscope reads the *token*:
# at the last token it says " to" (the token itself) for layers 0-2 and then falls back to " hello" (the prompt's
# last example); it never ranks the IO name better than ~1700th. At the IO name's own token it names the name
# exactly at layers 0-7 for every prompt, and loses it after layer 11 (again " hello"); the logit lens at that
# token has the name first at layer 0 alone (the tied embedding) and ranks it in the tens of thousands through
# layer 10. So the late "name at the last token" is a prediction in the output basis, which the remaining layers
# of the identity prompt do not re-read as a token; the name's own token carries its identity, readable by the
# model itself, through the first half of the network.
