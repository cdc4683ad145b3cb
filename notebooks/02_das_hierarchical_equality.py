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
# # 02 · DAS on hierarchical equality
#
# The task (Geiger et al. 2023): four entities `w, x, y, z` (random 4-dim vectors); the answer is
# `(w == x) == (y == z)`. A natural algorithm computes the two equalities first, then compares them. Does a
# small MLP trained on the task compute them too, and *where*? Distributed alignment search (DAS) learns a
# rotation of the MLP's first hidden layer (16 neurons) such that interchanging rotated dims 0..7 between two
# inputs acts like interchanging `WX = (w == x)` in the causal model, and dims 8..15 like `YZ = (y == z)`.
# The score is interchange intervention accuracy (IIA) on held-out counterfactual pairs.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from interp import Rotation, fit_das, iia, neuron_aligned
from interp.tasks import hierarchical_equality as he
from interp.viz import plot_rotation, save

ROOT = Path.cwd() if (Path.cwd() / "pyproject.toml").exists() else Path.cwd().parent  # repo root or notebooks/
FIGURES = Path(os.environ.get("INTERP_FIGURES", ROOT / "results" / "figures"))
torch.set_num_threads(1)  # a 16-unit MLP: thread hand-offs cost more than the arithmetic

# %% [markdown]
# ## The causal model
#
# Inputs W, X, Y, Z; intermediate variables WX and YZ; output O. An *interchange* runs a base input with one
# variable set to the value it takes on a source input.

# %%
cm = he.causal_model()
base = {"W": 1, "X": 1, "Y": 2, "Z": 3}  # WX = True, YZ = False -> O = False
source = {"W": 4, "X": 5, "Y": 6, "Z": 6}  # WX = False, YZ = True
print("base:", cm.run(base))
print("base with WX from source:", cm.interchange(base, {"WX": source})["O"])
print("base with WX and YZ from source:", cm.interchange(base, {"WX": source, "YZ": source})["O"])
assert cm.run(base)["O"] is False and cm.interchange(base, {"WX": source})["O"] is True

# %% [markdown]
# ## The trained MLP
#
# Three ReLU layers of 16 units over the four concatenated entity vectors, trained on fresh random vectors
# (10M examples, about 40 s on one CPU thread). It runs through the same nnsight path as a language model: each
# "token" is one whole example.

# %%
mlp, acc = he.train_equality_mlp(seed=0)
print(f"task accuracy on 10,000 held-out inputs: {acc:.4f}")
assert acc >= 0.999

# %% [markdown]
# ## Counterfactual pairs and DAS
#
# Each pair interchanges WX, YZ or both (a third each); labels come from the causal model run under the same
# interchange. 10,000 pairs train the rotation, 10,000 other pairs test it.

# %%
pairs = he.equality_pairs(mlp, n=20_000, seed=1)
train, test = pairs.split(0.5, seed=0)
das = fit_das(mlp, train, at=he.FIRST_HIDDEN, via=Rotation(he.HIDDEN), splits=(8, 8), test=test, steps=2000,
              batch_size=256, lr=5e-3, eval_every=250, patience=0, eval_batch_size=4096, progress=False)  # fmt: skip
neurons = iia(mlp, test, at=he.FIRST_HIDDEN, via=neuron_aligned(he.HIDDEN, (8, 8)), batch_size=4096)
print(f"IIA on {len(test):,} held-out pairs: learned rotation {das.iia_test:.3f}, neuron-aligned {neurons:.3f}")
assert das.iia_test >= 0.95 and das.iia_test > neurons + 0.15


# %% [markdown]
# ## Which interchanges succeed?
#
# IIA split by what was interchanged and by whether the counterfactual label differs from the base's label
# (the informative pairs: an intervention that does nothing scores 0 on them).


# %%
def kind(i):
    srcs, b = test.data.sources_of(i), test.data.base[i]
    return "+".join(v for v, s in zip(test.variables, srcs) if s is not b)


groups = {}
for i in range(len(test)):
    changed = test.labels[i] != test.base_labels[i]
    groups.setdefault(f"{kind(i)}\n{'label flips' if changed else 'label stays'}", []).append(i)
names = sorted(groups)
by_das = [iia(mlp, test[groups[g]], at=he.FIRST_HIDDEN, via=das.intervention, batch_size=4096) for g in names]
by_neurons = [
    iia(mlp, test[groups[g]], at=he.FIRST_HIDDEN, via=neuron_aligned(16, (8, 8)), batch_size=4096) for g in names
]
for g, a, b in zip(names, by_das, by_neurons):
    print(f"{g.replace(chr(10), ', '):28s} n={len(groups[g]):5d}  DAS {a:.3f}  neurons {b:.3f}")
assert min(by_das) > 0.9

# %%
fig, axes = plt.subplots(1, 2, figsize=(14, 5.2), constrained_layout=True, width_ratios=[1.25, 1])
x = np.arange(len(names))
axes[0].bar(x - 0.2, by_das, width=0.4, label=f"learned rotation (all: {das.iia_test:.3f})", color="#fc8d62")
axes[0].bar(x + 0.2, by_neurons, width=0.4, label=f"neuron-aligned (all: {neurons:.3f})", color="#8da0cb")
axes[0].set_xticks(x, names, fontsize=9)
axes[0].set_ylim(0, 1.15)
axes[0].set_ylabel("IIA (held-out pairs)")
axes[0].set_xlabel("variables interchanged / effect on the label")
axes[0].legend(loc="upper center", ncol=2, frameon=False)
axes[0].set_title("IIA at the first hidden layer, 8 + 8 dims for WX / YZ")
plot_rotation(das.rotation, ax=axes[1], title="learned rotation R (rows 0-7: WX, rows 8-15: YZ)")
axes[1].axhline(7.5, color="black", linewidth=1.5)
axes[1].set_xlabel("hidden neuron of layer 1")
axes[1].set_ylabel("rotated dimension")
fig.suptitle(f"DAS on the hierarchical-equality MLP (task accuracy {acc:.4f})")
save(fig, FIGURES / "02_hierarchical_equality.png")

# %% [markdown]
# ## What it says
#
# The learned rotation makes the MLP follow the causal model under interchange on nearly every held-out pair
# (0.99-1.00 over our runs; the paper reports 1.00), while swapping raw neurons 0-7 / 8-15 does not (0.78). The
# rows of R mix many neurons: the equalities are stored in a distributed way, not one per neuron.
#
# A caveat, measured with `interp das --task hierarchical-equality --seed S --json` (same recipe, other
# seeds): MLPs trained with seeds 1, 2, 3 also reach accuracy 1.00 but give IIA 0.88, 0.84 and 0.91. Several of
# their first-layer units read both pairs of entities, so no orthogonal 8 + 8 split of layer 1 separates WX from
# YZ exactly. Whether a network that solves the task *implements* the tree-structured algorithm at this layer is
# a property of the trained network, which is what IIA measures.
