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
# # 05 · A DAS-initialised ReFT, read back with DII
#
# DAS and LoReFT share one equation (DESIGN.md): DAS learns rows `R` whose interchange `h + R^T (R s - R h)` makes
# the model follow a causal variable; LoReFT learns `h + R^T (W h + b - R h)` for a task. So a DAS subspace can be
# a LoReFT's starting `R`, and a trained LoReFT's `R` can be put back into an interchange to ask what it carries.
#
# The variable: in IOI prompts (*"When Mary and John went to the store, John gave a drink to"*) Gemma answers
# the indirect object. **P** says whether that is the first or the second name. DAS finds P at layer `L`'s last
# token. The task for ReFT: answer the *other* name (the subject), i.e. flip P. We train two rank-4 LoReFTs at the
# same site, one starting from the DAS subspace and one from a random subspace, and compare (1) their learning
# curves and (2) what their subspaces encode, by DII along each on the frozen model.

# %%
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import interp
import reft
from interp import Site, fit_das, iia, last
from interp.tasks.ioi_position import ioi_position_pairs
from interp.viz import plot_learning_curves, save

ROOT = Path.cwd() if (Path.cwd() / "pyproject.toml").exists() else Path.cwd().parent  # repo root or notebooks/
FIGURES = Path(os.environ.get("INTERP_FIGURES", ROOT / "results" / "figures"))
T0 = time.perf_counter()
torch.manual_seed(0)
lm = interp.load()
pairs = ioi_position_pairs(lm, n=160, seed=0)
train, test = pairs.split(0.7, seed=0)
print(train.base[0], "->", train.base_labels[0], "| P flipped ->", train.labels[0])

# %% [markdown]
# ## 1. DAS: where is P?

# %%
LAYER, RANK = 10, 4
site = Site("resid_post", LAYER, last())
das = fit_das(lm, train, at=site, rank=RANK, test=test, steps=40, lr=1e-2, batch_size=12, eval_every=20,
              patience=0, seed=1, progress=False)  # fmt: skip
print(f"DAS at {site!r}, rank {RANK}: IIA train {das.iia_train:.2f}, test {das.iia_test:.2f}")
assert das.iia_test > 0.7

# %% [markdown]
# ## 2. Two LoReFTs on "answer the other name": DAS start vs random start
#
# The training examples are the base prompts with the counterfactual answer (the other name) as the response,
# with no source prompt: the ReFT has to flip P by itself. Same seed, data, steps and learning rate; only the
# starting `R` differs. `reft.init_basis` points a LoReFT's `R` at the DAS subspace. Both start as the identity
# edit (`W = R`, `b = 0`), so both start from the frozen model's behaviour; with a random `W` the DAS start
# began by scrambling P (an initial loss of 8-9 nats) and its advantage varied from run to run.

# %%
flip_train = [{"prompt": b, "response": a} for b, a in zip(train.base, train.labels)]
flip_test = [{"prompt": b, "response": a} for b, a in zip(test.base, test.labels)]
cfg = reft.TrainConfig(steps=12, lr=2e-3, batch_size=8, progress=False)
runs = {}
for name in ("DAS start", "random start"):
    torch.manual_seed(0)
    iv = reft.LoReFT(lm.d_model, RANK)
    if name == "DAS start":
        reft.init_basis(iv, das.basis)
    with torch.no_grad():  # W = R, b = 0: the edit starts as the identity, so both runs start from the model
        iv.W.weight.copy_(iv.R.weight)
        iv.W.bias.zero_()
    R0 = iv.basis_weight().detach().clone()
    rlm = reft.attach(lm, {Site("resid_post", LAYER, reft.last(1)): iv})
    hist = reft.train_reft(rlm, flip_train, cfg)
    runs[name] = dict(rlm=rlm, iv=iv, R0=R0, hist=hist, acc=reft.evaluate(rlm, flip_test)["accuracy"])
    print(f"{name:>12}: loss {hist.losses[0]:.2f} -> {hist.losses[-1]:.3f}, held-out accuracy {runs[name]['acc']:.2f}")

# %% [markdown]
# ## 3. Read each trained ReFT back with DII
#
# `reft.as_basis(iv)` turns a trained intervention's `R` into an `interp` basis. Interchanging that subspace from
# a source prompt with the other P into the base prompt, on the **frozen** model, asks: does this subspace carry
# P? IIA near the DAS subspace's says yes; near 0 says the ReFT does its job through directions the model does
# not use for P. (`interp.interchange(lm, base, source, at=site, via=reft.as_basis(iv))` is the same call for any
# prompts.)

# %%
read = {"DAS subspace": das.iia_test}
for name, r in runs.items():
    read[f"ReFT, {name}"] = iia(lm, test, at=site, via=reft.as_basis(r["iv"]))
    r["moved"] = reft.principal_angles(r["iv"].basis_weight(), r["R0"])
    r["to_das"] = reft.principal_angles(r["iv"].basis_weight(), das.rotation)
read["random subspace"] = iia(lm, test, at=site, via=interp.LowRankRotation(lm.d_model, RANK))
for k, v in read.items():
    print(f"IIA along {k:>24}: {v:.2f}")
for name, r in runs.items():
    moved, to_das = r["moved"].numpy().round(1), r["to_das"].numpy().round(1)
    print(f"{name}: R moved {moved} degrees from its start; angles to the DAS subspace {to_das}")

out = interp.interchange(lm, test.base[:4], test.sources[0][:4], at=site, via=reft.as_basis(runs["DAS start"]["iv"]))
print([(b[-40:], top[0]) for b, top in zip(test.base[:4], out.top_k(1))])

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), constrained_layout=True)
plot_learning_curves(
    {k: r["hist"].losses for k, r in runs.items()},
    ax=axes[0],
    xlabel="optimizer step (batch of 8 prompts)",
    ylabel="training loss (cross-entropy, nats)",
    title=f"LoReFT on 'answer the other name', layer {LAYER}, rank {RANK}",
    logy=True,
)
names = list(read)
axes[1].bar(range(len(names)), [read[k] for k in names], color=["C2", "C0", "C1", "grey"])
axes[1].set_xticks(range(len(names)), names, rotation=15, ha="right")
axes[1].set_ylim(0, 1.05)
axes[1].set_ylabel("IIA for P (held-out pairs)")
axes[1].set_title("DII along each subspace on the frozen model: does it carry P?")
for i, k in enumerate(names):
    axes[1].annotate(f"{read[k]:.2f}", (i, read[k]), ha="center", va="bottom")
save(fig, FIGURES / "05_das_initialised_reft.png")

# %% [markdown]
# ## What the bridge shows
#
# * **Learning curves.** Both runs start from the same identity edit; the one whose `R` starts in the DAS subspace
#   of P drives the loss down several times faster and ends far lower at the same step: the variable the task
#   needs flipping is already where it writes.
# * **DII reads the ReFT back.** Interchanging along the trained DAS-started ReFT's subspace moves P on the frozen
#   model almost as well as the DAS subspace itself; along the random-start ReFT's subspace, not at all (IIA 0,
#   like a random subspace), although that ReFT also learns to answer the other name (0.71 after 12 steps here,
#   0.96 after 16). Task accuracy alone does not say how; DII does: one flips the model's own variable, the other
#   gets its answers through directions the model does not use for P.
# * **`R` barely moves** in a short run (its principal angles to its start stay small, as in notebook 04), which is
#   why the start decides what the ReFT's subspace means.

# %%
das_run, rand_run = runs["DAS start"], runs["random start"]
assert das_run["acc"] > 0.9 and das_run["acc"] >= rand_run["acc"]  # the DAS start learns the task in 12 steps
assert sum(das_run["hist"].losses[-3:]) < 0.5 * sum(rand_run["hist"].losses[-3:])  # and its loss ends far lower
assert read["ReFT, DAS start"] > 0.5 > 0.2 > read["ReFT, random start"]  # only the DAS-started one carries P
print(f"notebook ran in {time.perf_counter() - T0:.0f} s")
