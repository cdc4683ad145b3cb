"""What tests/test_distributed.py runs under ``torchrun --nproc_per_node 2`` (gloo, 127.0.0.1), and in one process.

    torchrun --nproc_per_node 2 --master_addr 127.0.0.1 --master_port PORT tests/distributed_worker.py OUT.json

Each rank builds the same tiny Llama (seeded), initialises the gloo group, and runs ReFT training, a DAS fit
and a DAS sweep on the same data as the single-process reference (:func:`reft_run`, :func:`das_run`,
:func:`sweep_run` are imported by the test). Rank 0 writes one JSON: losses, final parameters, the sweep's grid,
whether every rank ended with the same parameters, and the errors a batch size not divisible by 2 gives.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import tiny_lm  # noqa: E402

import interp  # noqa: E402
import reft  # noqa: E402
from interp import distributed  # noqa: E402
from interp.causal import CausalModel  # noqa: E402


def model() -> interp.LM:
    torch.manual_seed(0)
    return tiny_lm("llama")


def reft_examples() -> list[dict]:
    """Five examples with prompts of 3..7 tokens and responses of 1..3 (unequal token counts per shard)."""
    gen = torch.Generator().manual_seed(1)
    out = []
    for i in range(5):
        prompt = torch.randint(3, 97, (3 + i,), generator=gen).tolist()
        out.append({"prompt_ids": prompt, "response_ids": [5, 6, 7][: 1 + i % 3]})
    return out


def reft_config(checkpoint_dir=None) -> reft.TrainConfig:
    # batches of 2 from 5 examples: the last of each epoch has 1 row, so one rank's shard is empty; grad_accum 2
    ckpt = dict(checkpoint_every=3, checkpoint_dir=str(checkpoint_dir)) if checkpoint_dir else {}
    return reft.TrainConfig(steps=6, batch_size=2, grad_accum=2, lr=2e-2, eval_every=3, progress=False, **ckpt)


def reft_run(lm, checkpoint_dir=None) -> dict:
    rlm = reft.attach(lm, {interp.Site("resid_post", 1, interp.first(1) + interp.last(1)): reft.LoReFT(32, rank=4)})
    exs = reft_examples()
    hist = reft.train_reft(rlm, exs, reft_config(checkpoint_dir), eval_examples=exs)
    state = {k: v.detach().tolist() for k, v in rlm.state_dict().items()}
    return {"losses": hist.losses, "evals": hist.evals, "tokens": hist.response_tokens, "state": state}


def das_pairs():
    model = CausalModel({"a": None, "G": (("a",), lambda a: a >= 50), "O": (("G",), lambda g: 5 if g else 6)})
    data = model.counterfactuals(lambda r: {"a": r.randrange(10, 90)}, variables="G", n=48, seed=0, changed_only=True)
    pairs = data.render(lambda s: [1, s["a"], 7], int, candidates=[5, 6])
    return pairs.split(0.75, seed=0)


def das_run(lm) -> dict:
    train, test = das_pairs()
    with torch.random.fork_rng():
        torch.manual_seed(0)  # fit_das's initialisation (seed 0)
        r0 = interp.LowRankRotation(32, 1).weight.tolist()
    das = interp.fit_das(
        lm, train, at=interp.Site("resid_post", 1, interp.last()), rank=1, test=test,
        steps=8, batch_size=8, lr=1e-2, eval_every=4, patience=0, progress=False,
    )  # fmt: skip
    out = {"history": das.history, "R": das.rotation.tolist(), "R0": r0}
    return out | {"iia_train": das.iia_train, "iia_test": das.iia_test}


def sweep_run(lm) -> dict:
    train, test = das_pairs()
    positions = {"a": interp.at(1), "last": interp.last()}
    sw = interp.sweep_das(
        lm, train, test, layers=[0, 1], positions=positions, ranks=[1, 2], steps=3, batch_size=8, progress=False
    )
    return {"iia": sw.iia.tolist(), "iia_train": sw.iia_train.tolist()}


def bad_inputs(lm) -> dict:
    """The errors of a global batch that 2 processes cannot split equally (raised before any work)."""
    train, _ = das_pairs()
    out = {}
    try:
        site = interp.Site("resid_post", 1, interp.last())
        interp.fit_das(lm, train, at=site, rank=1, batch_size=7, steps=1, progress=False)
    except interp.DASError as e:
        out["das"] = str(e)
    try:
        rlm = reft.attach(lm, {interp.Site("resid_post", 1, interp.last(1)): reft.LoReFT(32, rank=1)})
        reft.train_reft(rlm, reft_examples(), reft.TrainConfig(steps=1, batch_size=3, progress=False))
    except reft.ReftError as e:
        out["reft"] = str(e)
    return out


def main(out_path: str, checkpoint_dir: str | None = None) -> None:
    torch.set_num_threads(1)
    with distributed.launched():
        lm = model()
        t0 = time.perf_counter()
        result = {"world": distributed.world_size(), "reft": reft_run(lm, checkpoint_dir)}
        result["das"] = das_run(lm)
        result["sweep"] = sweep_run(lm)
        result["seconds"] = time.perf_counter() - t0
        result["bad"] = bad_inputs(lm)
        # every rank ended with the same parameters (DDP broadcast them at the start and averaged the gradients)
        mine = (result["reft"]["state"], result["das"]["R"], result["reft"]["losses"])
        result["ranks_agree"] = all(m == mine for m in distributed.gather(mine))
        if distributed.is_main():
            with open(out_path, "w") as f:
                json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
