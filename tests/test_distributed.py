"""Data parallel training under ``torchrun --nproc_per_node 2`` (gloo, 127.0.0.1) equals one process.

One torchrun launch of ``tests/distributed_worker.py`` trains a ReFT, fits DAS and runs a DAS sweep on a tiny
seeded Llama in 2 CPU processes; the same functions run here in one process, and the results must agree:
losses per step and final parameters within 1e-5, the sweep's grid exactly. A second launch runs ``reft train``
itself under torchrun. Each launch is bounded by a subprocess timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import distributed_worker as worker
import pytest
import torch
from torch.testing import assert_close

HERE = Path(__file__).parent
ROOT = HERE.parent
TIMEOUT = 120  # seconds per torchrun launch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], *, cwd=ROOT) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2`` on 127.0.0.1 with the gloo backend (CPU); skips where it cannot start."""
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available in this torch build")
    exe = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if exe is None:
        pytest.skip("no torchrun executable beside this Python or on PATH")
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    for _ in range(2):  # a port taken between choosing it and binding it: once more with another
        cmd = [exe, "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
        cmd += ["--master_port", str(_free_port()), *args]
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
        if p.returncode == 0 or "address already in use" not in p.stderr.lower():
            break
    if p.returncode and ("DistNetworkError" in p.stderr or "Gloo connectFullMesh failed" in p.stderr):
        pytest.skip(f"torchrun could not connect its 2 processes on 127.0.0.1: {p.stderr.strip().splitlines()[-1]}")
    err = "\n".join(line for line in p.stderr.splitlines() if "Warning: find_unused_parameters" not in line)
    assert p.returncode == 0, f"torchrun failed ({p.returncode}):\n{p.stdout[-3000:]}\n{err[:6000]}"
    return p


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> dict:
    """The 2-process results (rank 0's JSON) and the folder its checkpoints went to."""
    tmp = tmp_path_factory.mktemp("ddp")
    torchrun([str(HERE / "distributed_worker.py"), str(tmp / "out.json"), str(tmp / "ckpt")])
    return json.loads((tmp / "out.json").read_text()) | {"ckpt": tmp / "ckpt"}


@pytest.fixture(scope="module")
def one() -> dict:
    """The same runs in this process (no process group: the plain single-process code path)."""
    assert not torch.distributed.is_initialized()
    with torch.random.fork_rng():
        lm = worker.model()
        return {"reft": worker.reft_run(lm), "das": worker.das_run(lm), "sweep": worker.sweep_run(lm)}


def close(a, b, tol=1e-5):
    assert_close(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), rtol=tol, atol=tol)


def test_reft_training_in_two_processes_equals_one(two, one):
    assert two["world"] == 2 and two["ranks_agree"]  # both ranks ended with the same weights and losses
    r2, r1 = two["reft"], one["reft"]
    assert len(r2["losses"]) == len(r1["losses"]) == 6
    close(r2["losses"], r1["losses"])  # per step: the token-weighted loss of the global batch
    assert r2["tokens"] == r1["tokens"]  # response tokens seen, summed over ranks
    assert r2["state"].keys() == r1["state"].keys()
    for key in r1["state"]:
        close(r2["state"][key], r1["state"][key])  # R, W, b within 1e-5
    assert [s for s, _ in r2["evals"]] == [s for s, _ in r1["evals"]] == [3, 6]
    for (_, m2), (_, m1) in zip(r2["evals"], r1["evals"]):  # sharded evaluation, counts summed over ranks
        assert m2["n"] == m1["n"] and m2["accuracy"] == m1["accuracy"]
        close(m2["loss"], m1["loss"])
    assert r1["losses"][-1] < r1["losses"][0]  # it trained (so equal results are not two untouched inits)
    assert sorted(p.name for p in two["ckpt"].iterdir()) == ["step-3", "step-6"]  # rank 0 wrote them, once each


def test_das_fit_in_two_processes_equals_one(two, one):
    d2, d1 = two["das"], one["das"]
    assert [h["step"] for h in d2["history"]] == [h["step"] for h in d1["history"]] == list(range(1, 9))
    close([h["loss"] for h in d2["history"]], [h["loss"] for h in d1["history"]])
    assert [h.get("val_iia") for h in d2["history"]] == [h.get("val_iia") for h in d1["history"]]
    close(d2["R"], d1["R"])  # the learned rows R within 1e-5
    assert (d2["iia_train"], d2["iia_test"]) == (d1["iia_train"], d1["iia_test"])
    assert (torch.tensor(d1["R"]) - torch.tensor(d1["R0"])).abs().max() > 1e-3  # it trained: R moved from its init


def test_sharded_das_sweep_equals_the_unsharded_one(two, one):
    s2, s1 = two["sweep"], one["sweep"]
    assert torch.tensor(s1["iia"]).shape == (2, 2, 2)  # ranks x layers x positions: 8 cells, 4 per rank
    close(s2["iia"], s1["iia"], tol=1e-6)
    close(s2["iia_train"], s1["iia_train"], tol=1e-6)
    assert not torch.tensor(s2["iia"]).isnan().any()  # every cell was fitted by some rank and gathered


def test_a_batch_that_two_processes_cannot_split_is_refused_before_work(two, monkeypatch, capsys):
    bad = two["bad"]
    assert bad["das"].startswith("DASConfig.batch_size=7 is the global batch, split over 2 processes")
    assert "try DASConfig.batch_size=8 (or 6)" in bad["das"]
    assert bad["reft"].startswith("TrainConfig.batch_size=3 is the global batch, split over 2 processes")
    # the command lines refuse it in their checks, before any data or model is loaded (WORLD_SIZE from torchrun)
    import interp.cli
    from reft.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "--task", "style", "--batch-size", "3"]) == 2
    assert "--batch-size=3 is the global batch, split over 2 processes" in capsys.readouterr().err
    assert interp.cli.main(["das", "--task", "gender", "--batch-size", "5"]) == 2
    assert "try --batch-size=6 (or 4)" in capsys.readouterr().err


def test_reft_train_command_under_torchrun_equals_one_process(tmp_path, capsys):
    from test_reft_cli import _tiny_model_dir

    from reft.cli import main

    model = str(_tiny_model_dir(tmp_path / "tiny"))
    data = tmp_path / "train.jsonl"
    rows = [("say red now", " green"), ("say blue now", " ok now"), ("say green", " red"), ("now say ok", " blue")]
    data.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in rows))
    argv = ["train", "--model", model, "--data", str(data), "--eval-data", str(data), "--layers", "1"]
    argv += ["--positions", "f1+l1", "--rank", "4", "--steps", "5", "--batch-size", "2", "--lr", "5e-2", "--json"]
    p = torchrun(["-m", "reft", *argv, "--out", str(tmp_path / "two")])
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, p.stdout  # rank 0 alone prints
    two = json.loads(lines[0])
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    one = json.loads(capsys.readouterr().out)
    for key in ("train_loss_first", "train_loss_last", "eval_loss"):
        close(two[key], one[key])
    assert two["accuracy"] == one["accuracy"] and two["response_tokens"] == one["response_tokens"]
    assert (tmp_path / "two").is_dir()  # rank 0 saved; the saved weights equal the single-process ones
    from safetensors.torch import load_file

    w2, w1 = load_file(tmp_path / "two" / "weights.safetensors"), load_file(tmp_path / "one" / "weights.safetensors")
    assert w2.keys() == w1.keys()
    for key in w1:
        assert_close(w2[key], w1[key], rtol=1e-5, atol=1e-5)
