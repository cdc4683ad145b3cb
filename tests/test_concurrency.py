"""Saves and loads that race or die (issue 22): one-step commits, consistent loads, exclusive creates, cleaned
leftovers, and loads that refuse hostile sizes at once.

Processes are forked from the test (they share the tiny model built here), each test is bounded in count and
time, and everything is written under pytest's tmp_path. ``pytest -s`` prints the trial counts that the README
quotes; ``INTERP_CONCURRENCY_SCALE=10`` runs ten times as many trials (and loads for ten times as long).
"""

from __future__ import annotations

import collections
import hashlib
import json
import multiprocessing as mp
import os
import random
import signal
import threading
import time

import pytest
import torch
from conftest import tiny_lm
from safetensors.torch import save_file
from test_from_pyreft import write_pyreft

import interp
import reft
from interp import LowRankRotation, Site, first, last
from interp.das import DASResult
from interp.errors import FormatError, SaveExistsError
from interp.io import rename

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or rename.RENAMEAT2 is None, reason="needs fork and renameat2 (Linux)"
)
CTX = mp.get_context("fork") if hasattr(os, "fork") else None
KINDS = ("das", "reft")
SCALE = float(os.environ.get("INTERP_CONCURRENCY_SCALE", "1"))
SECONDS, RACES, KILLS = 2.0 * SCALE, int(25 * SCALE), int(20 * SCALE)  # per kind


# ---- two results of each kind that differ in config.json and in weights.safetensors, with the same shapes ----


def results(kind: str, lm) -> tuple:
    if kind == "das":
        out = []
        for seed, iia in ((0, 0.25), (1, 0.75)):
            torch.manual_seed(seed)
            basis = LowRankRotation(lm.d_model, 2)
            out.append(DASResult(Site("resid_post", 1, last()), basis, ("G",), (2,), [{"step": 1, "loss": iia}],
                                 iia_train=iia, lm=lm))  # fmt: skip
        return tuple(out)
    out = []
    for seed, layer in ((0, 0), (1, 1)):
        torch.manual_seed(seed)
        iv = reft.LoReFT(lm.d_model, rank=4)
        with torch.no_grad():
            iv.W.weight.add_(torch.randn(iv.W.weight.shape))
        out.append(reft.attach(lm, {Site("resid_post", layer, first(1) + last()): iv}))
    return tuple(out)


def save(kind, obj, path, overwrite=False):
    return obj.save(path, overwrite=overwrite) if kind == "das" else reft.save(obj, path, overwrite=overwrite)


def load(kind, path, lm):
    return DASResult.load(path, lm) if kind == "das" else reft.load(path, lm)


def which(kind, got, a, b) -> str:
    """A or B: the result whose config part (IIA / the site's layer) and weights both match; else "mixed"."""
    for name, want in (("A", a), ("B", b)):
        if kind == "das":
            same = got.iia_train == want.iia_train and torch.equal(got.rotation, want.rotation)
        else:
            same = got.placements[0].site.layer == want.placements[0].site.layer and torch.equal(
                got.interventions[0].W.weight, want.interventions[0].W.weight
            )
        if same:
            return name
    return "mixed"


def peek(kind, path, a, b) -> str:
    """What ``path`` holds, read without cleaning anything: "A" or "B" (its config and weights, bound by the
    weights' hash, are one result's) or "mixed"."""
    with interp.io.Snapshot(path) as snap:
        tensors = snap.tensors({k: shape for k, (_, shape) in snap.header().items()})  # checks the hash
        config = snap.config.data
    for name, want in (("A", a), ("B", b)):
        if kind == "das":
            same = config["iia_train"] == want.iia_train and torch.equal(tensors["R"], want.rotation)
        else:
            same = config["placements"][0]["site"]["layer"] == want.placements[0].site.layer and torch.equal(
                tensors["0.W.weight"], want.interventions[0].W.weight
            )
        if same:
            return name
    return "mixed"


def leftovers(folder, name) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith(f".{name}.interp-"))


def dead_pid() -> int:
    p = CTX.Process(target=os._exit, args=(0,))
    p.start()
    p.join()
    return p.pid


# ---- 1. loads while saves overwrite the same path ------------------------------------------------------------


def _saver(kind, obj, path, deadline, q):
    torch.set_num_threads(1)
    n, errors = 0, []
    while time.time() < deadline:
        try:
            save(kind, obj, path, overwrite=True)
            n += 1
        except Exception as e:  # noqa: BLE001 - reported to the test
            errors.append(f"{type(e).__name__}: {e}")
    q.put(("save", n, errors[:3], len(errors)))


def _loader(kind, lm, a, b, path, deadline, q):
    torch.set_num_threads(1)
    counts, errors = collections.Counter(), []
    replaced = interp.io.snapshot.Snapshot.replaced

    def counted(snap):  # in this forked child only: count the reads that found the folder replaced and re-read
        out = replaced(snap)
        counts["re-read"] += out
        return out

    interp.io.snapshot.Snapshot.replaced = counted
    while time.time() < deadline:
        try:
            counts[which(kind, load(kind, path, lm), a, b)] += 1
        except Exception as e:  # noqa: BLE001 - reported to the test
            errors.append(f"{type(e).__name__}: {e}")
    q.put(("load", dict(counts), errors[:3], len(errors)))


@pytest.mark.parametrize("kind", KINDS)
def test_loads_during_overwrites_see_one_whole_result(kind, tmp_path):
    """Two processes save A and B to one path in a loop (overwrite=True) while two others load it: every load is
    exactly A or B (config and weights of one save), none fails (no bare [Errno 2], no mix)."""
    lm = tiny_lm("llama")
    a, b = results(kind, lm)
    path = tmp_path / "run"
    save(kind, a, path)
    deadline, q = time.time() + SECONDS, CTX.Queue()
    procs = [CTX.Process(target=_saver, args=(kind, obj, path, deadline, q)) for obj in (a, b)]
    procs += [CTX.Process(target=_loader, args=(kind, lm, a, b, path, deadline, q)) for _ in range(2)]
    for p in procs:
        p.start()
    reports = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    saves = [r for r in reports if r[0] == "save"]
    loads = collections.Counter()
    for r in reports:
        if r[0] == "load":
            loads.update(r[1])
    print(f"\n{kind}: {sum(r[1] for r in saves)} saves, {loads['A'] + loads['B'] + loads['mixed']} loads {dict(loads)}")
    assert all(r[3] == 0 for r in reports), [r[2] for r in reports if r[3]]
    assert loads["mixed"] == 0 and loads["A"] > 0 and loads["B"] > 0, loads
    assert all(r[1] > 0 for r in saves)
    assert leftovers(tmp_path, "run") == []
    assert which(kind, load(kind, path, lm), a, b) in ("A", "B")


# ---- 2. overwrite=False: of two racing saves exactly one succeeds ---------------------------------------------


def _racer(kind, name, obj, root, trials, barrier, q):
    torch.set_num_threads(1)
    for t in range(trials):
        barrier.wait(timeout=30)
        try:
            save(kind, obj, root / f"t{t}")
            q.put((t, name, "won", ""))
        except SaveExistsError as e:
            q.put((t, name, "lost", "commit" if "another save committed" in str(e) else "check"))
        except Exception as e:  # noqa: BLE001 - reported to the test
            q.put((t, name, "error", f"{type(e).__name__}: {e}"))


@pytest.mark.parametrize("kind", KINDS)
def test_of_two_racing_exclusive_saves_exactly_one_succeeds(kind, tmp_path):
    lm = tiny_lm("llama")
    a, b = results(kind, lm)
    trials, barrier, q = RACES, CTX.Barrier(2), CTX.Queue()
    procs = [
        CTX.Process(target=_racer, args=(kind, n, o, tmp_path, trials, barrier, q)) for n, o in (("A", a), ("B", b))
    ]
    for p in procs:
        p.start()
    outcomes = [q.get(timeout=60) for _ in range(2 * trials)]
    for p in procs:
        p.join(timeout=30)
    by_trial = collections.defaultdict(dict)
    for t, name, outcome, detail in outcomes:
        by_trial[t][name] = (outcome, detail)
    at_commit = 0
    for t in range(trials):
        got = sorted(o for o, _ in by_trial[t].values())
        assert got == ["lost", "won"], (t, by_trial[t])
        winner = next(n for n, (o, _) in by_trial[t].items() if o == "won")
        at_commit += any(d == "commit" for _, d in by_trial[t].values())
        assert which(kind, load(kind, tmp_path / f"t{t}", lm), a, b) == winner  # the winner's result, whole
    assert sorted(os.listdir(tmp_path)) == sorted(f"t{t}" for t in range(trials))  # no temporary folder left
    print(f"\n{kind}: {trials} races, exactly one success each; {at_commit} lost at the commit itself")


# ---- 3. kill -9 at random instants of saves and overwrites ------------------------------------------------------


def _save_loop(kind, a, b, path, ready):
    torch.set_num_threads(1)
    ready.set()
    while True:
        save(kind, b, path, overwrite=True)
        save(kind, a, path, overwrite=True)


def _save_once(kind, obj, path, ready):
    torch.set_num_threads(1)
    ready.set()
    save(kind, obj, path)


@pytest.mark.parametrize("kind", KINDS)
def test_a_save_killed_at_any_instant_leaves_the_old_or_the_new_result(kind, tmp_path):
    """kill -9 at a random instant of a loop of overwrites (even trials) or of one exclusive create (odd): the
    path holds the complete A or B (or, for a create, nothing); what the kill left is cleaned by the next load
    (or, in every other trial, the next save) of that path."""
    lm = tiny_lm("llama")
    a, b = results(kind, lm)
    t0 = time.perf_counter()
    save(kind, a, tmp_path / "probe")
    took = time.perf_counter() - t0
    rng = random.Random(0)
    trials, seen = KILLS, collections.Counter()
    for t in range(trials):
        path, create = tmp_path / f"t{t}", t % 2 == 1
        if not create:
            save(kind, a, path)
        ready = CTX.Event()
        target, args = (_save_once, (kind, b, path, ready)) if create else (_save_loop, (kind, a, b, path, ready))
        p = CTX.Process(target=target, args=args)
        p.start()
        assert ready.wait(timeout=30)
        time.sleep(rng.uniform(0, 3 * took if create else 4 * took))
        os.kill(p.pid, signal.SIGKILL)
        p.join(timeout=30)
        left = leftovers(tmp_path, path.name)
        seen["left something"] += bool(left)
        if not path.exists():
            assert create, f"trial {t}: the overwritten path is missing"
            seen["nothing (a create killed)"] += 1
        else:
            seen[peek(kind, path, a, b)] += 1  # read as it is, before anything cleans
        if (t // 2) % 2 == 0:  # the next load cleans
            if path.exists():
                assert which(kind, load(kind, path, lm), a, b) in ("A", "B")
            else:
                with pytest.raises(FileNotFoundError, match="no (saved DAS result|ReFT run)"):
                    load(kind, path, lm)
        else:  # the next save cleans
            save(kind, a, path, overwrite=True)
            assert which(kind, load(kind, path, lm), a, b) == "A"
        assert leftovers(tmp_path, path.name) == [], (t, left)
    print(f"\n{kind}: {trials} kill -9 trials (save {took * 1e3:.0f} ms): {dict(seen)}")
    assert seen["mixed"] == 0
    assert seen["left something"] > 0  # the cleaning was exercised


# ---- 4. leftovers: only a dead save's, of this host, of the save's own pattern -----------------------------------


def test_only_a_dead_saves_leftovers_of_the_own_pattern_are_removed(tmp_path):
    lm = tiny_lm("llama")
    a, _ = results("das", lm)
    path = save("das", a, tmp_path / "run")
    dead, host = dead_pid(), rename.HOST
    other_host = "0" * 6 if host != "0" * 6 else "1" * 6
    kept = [f".run.interp-{host}-{os.getpid()}-0123456789ab.tmp",  # a live process's save in flight
            f".run.interp-{host}-{os.getppid()}-0123456789ab.tmp",
            f".run.interp-{other_host}-{dead}-0123456789ab.tmp",  # another host's: its pid means nothing here
            ".run.interp-tmp", "run.interp-x.tmp", f".run.{dead}.tmp", "run.1"]  # fmt: skip  # not the pattern
    gone = [f".run.interp-{host}-{dead}-0123456789ab.tmp", f".run.interp-{host}-{dead}-ba9876543210.old"]
    for name in kept + gone:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    DASResult.load(path, lm)
    assert sorted(os.listdir(tmp_path)) == sorted(kept + ["run"])


def test_the_next_checkpoint_cleans_what_a_killed_run_left(tmp_path):
    """A killed training run leaves ``.step-N.interp-...tmp`` in its checkpoint folder: the next checkpoint saved
    there removes it; checkpoints of live runs stay."""
    lm = tiny_lm("llama")
    rlm = results("reft", lm)[0]
    ckpt, dead = tmp_path / "ckpt", dead_pid()
    ckpt.mkdir()
    stale = [f".step-{n}.interp-{rename.HOST}-{dead}-0123456789ab.tmp" for n in (1, 7)]
    live = f".step-3.interp-{rename.HOST}-{os.getppid()}-0123456789ab.tmp"
    for name in [*stale, live]:
        (ckpt / name).mkdir()
    cfg = reft.TrainConfig(steps=1, checkpoint_every=1, checkpoint_dir=str(ckpt), progress=False)
    reft.train_reft(rlm, [{"prompt_ids": [1, 4, 5], "response_ids": [7]}], cfg)
    assert sorted(os.listdir(ckpt)) == sorted([live, "step-1"])


# ---- 5. the fallback commit (no renameat2): an flock around the two renames ------------------------------------


def test_without_renameat2_saves_stay_exclusive_and_a_killed_overwrite_is_undone(tmp_path, monkeypatch):
    lm = tiny_lm("llama")
    a, b = results("das", lm)
    monkeypatch.setattr(rename, "RENAMEAT2", None)  # forked workers inherit it
    trials, barrier, q = 10, CTX.Barrier(2), CTX.Queue()
    procs = [
        CTX.Process(target=_racer, args=("das", n, o, tmp_path, trials, barrier, q)) for n, o in (("A", a), ("B", b))
    ]
    for p in procs:
        p.start()
    outcomes = [q.get(timeout=60) for _ in range(2 * trials)]
    for p in procs:
        p.join(timeout=30)
    wins = collections.Counter(t for t, _, o, _ in outcomes if o == "won")
    assert all(wins[t] == 1 for t in range(trials)) and len(outcomes) == 2 * trials, outcomes
    path = save("das", a, tmp_path / "run")
    save("das", b, path, overwrite=True)
    assert which("das", load("das", path, lm), a, b) == "B"
    # a kill between the two renames: the old result aside (a dead pid's .old), nothing at the path
    aside = tmp_path / f".run.interp-{rename.HOST}-{dead_pid()}-0123456789ab.old"
    os.rename(path, aside)
    assert which("das", load("das", path, lm), a, b) == "B"  # put back by the load
    assert leftovers(tmp_path, "run") == []


def test_a_result_the_previous_version_moved_aside_is_recovered(tmp_path):
    """The previous version's overwrite, killed between its two renames, left ``.run.<12 hex>.old`` and nothing
    at the path: the next load puts it back."""
    lm = tiny_lm("llama")
    a, _ = results("reft", lm)
    path = save("reft", a, tmp_path / "run")
    os.rename(path, tmp_path / ".run.0123456789ab.old")
    assert which("reft", load("reft", path, lm), a, a) == "A"


# ---- 6. hostile sizes are refused before anything of their size is read or built --------------------------------


@pytest.mark.parametrize("case", ["reft width 24576", "das width 12000"])
def test_hostile_sizes_are_refused_in_milliseconds(case, tmp_path):
    lm = tiny_lm("llama")
    kind = case.split()[0]
    path = save(kind, results(kind, lm)[0], tmp_path / "run")
    config = json.loads((path / "config.json").read_text())
    if kind == "reft":
        config["interventions"][0]["config"]["d_model"] = 24576
    else:  # consistently edited: config, weights and their hash all say 12000
        config["basis"]["d_model"] = 12000
        save_file({"R": torch.zeros(2, 12000)}, str(path / "weights.safetensors"))
        config["weights_sha256"] = hashlib.sha256((path / "weights.safetensors").read_bytes()).hexdigest()
    (path / "config.json").write_text(json.dumps(config))
    t0 = time.perf_counter()
    with pytest.raises(FormatError, match=r"d_model: (24576|12000), but .* width 32"):
        load(kind, path, lm)
    took = time.perf_counter() - t0
    print(f"\n{case}: refused in {took * 1e3:.1f} ms")
    assert took < 0.5


# ---- 7. a named pipe is refused at once, never read --------------------------------------------------------------


def _returns_within(fn, seconds=10.0):
    """``fn()``'s exception, or a failure if it blocks (a daemon thread: a blocked read cannot hang the suite)."""
    out = {}

    def run():
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(seconds)
    assert not th.is_alive(), f"blocked for {seconds} s"
    return out.get("error")


def test_a_named_pipe_instead_of_weights_is_refused_at_once(tmp_path):
    lm = tiny_lm("llama")
    path = save("das", results("das", lm)[0], tmp_path / "run")
    (path / "weights.safetensors").unlink()
    os.mkfifo(path / "weights.safetensors")
    err = _returns_within(lambda: DASResult.load(path, lm))
    assert isinstance(err, FormatError) and "weights.safetensors is a named pipe (FIFO)" in str(err), err
    theirs = tmp_path / "theirs"
    write_pyreft(theirs, [{"layer": 1, "component": "block_output", "kind": "LoreftIntervention", "rank": 4}])
    (pipe,) = theirs.glob("intkey_*.bin")
    pipe.unlink()
    os.mkfifo(pipe)
    err = _returns_within(lambda: reft.from_pyreft(theirs, lm))
    assert isinstance(err, FormatError) and f"{pipe.name} is a named pipe (FIFO)" in str(err), err


# ---- 8. values: float16 / bfloat16 rows load as float32; saves without the hash still load -------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_das_rows_stored_in_half_precision_load_as_float32(dtype, tmp_path):
    lm = tiny_lm("llama")
    a = results("das", lm)[0]
    path = save("das", a, tmp_path / "run")
    save_file({"R": a.rotation.to(dtype).contiguous()}, str(path / "weights.safetensors"))
    config = json.loads((path / "config.json").read_text())
    del config["weights_sha256"]  # as a save before the hash was recorded: still loads
    (path / "config.json").write_text(json.dumps(config))
    again = DASResult.load(path, lm)
    assert again.rotation.dtype == torch.float32
    assert torch.equal(again.rotation, a.rotation.to(dtype).float())


def test_interp_io_names_stay_importable():
    """What other modules import from interp.io before it became a package."""
    for name in ("Config", "FORMAT", "CONFIG", "WEIGHTS", "FormatError", "atomic_folder", "check_output_dir",
                 "check_save_dir", "check_output_file", "write_file_atomic", "dumps", "fingerprint", "check_model",
                 "compact_state", "load_compact", "same_rng", "read_tensors", "write_json", "write_tensors",
                 "position_to_json", "position_from_json", "site_to_json", "site_from_json", "legacy_position",
                 "check_format", "SITE", "MODEL", "WeightsChangedWarning"):  # fmt: skip
        assert hasattr(interp.io, name), name
