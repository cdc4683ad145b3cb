"""``reft compare``'s workers never outlive it: a failed worker stops the others, SIGINT/SIGTERM/SIGKILL to
``reft compare`` ends them all, and the error says which method failed, how, and why.

The workers here are stand-ins (a few lines of Python put in ``reft.cli.workers.WORKER``) that read the options
``reft compare`` hands them, write their pid, and then fail or sleep; the real worker runs in
test_reft_cli.py's end-to-end test. An interrupted ``reft compare`` is a process of its own (a forked copy of this
one would inherit its threads and signal handlers). Each test is bounded to a minute of waiting.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import transformers

from reft.cli import main, workers

# The stand-in worker: `<method>.pid` in $PIDS (written whole, by a rename), then fail (method $FAIL, after the
# others started) or sleep.
FAKE = textwrap.dedent(
    """
    import json, os, signal, sys, time
    payload = json.loads(sys.stdin.read())
    args, pids = payload["args"], os.environ["PIDS"]
    pid_file = os.path.join(pids, args["method"] + ".pid")
    with open(pid_file + ".tmp", "w") as f:  # then renamed: a reader never sees an empty pid file
        f.write(str(os.getpid()))
    os.replace(pid_file + ".tmp", pid_file)
    if args["method"] == os.environ.get("FAIL"):
        others = int(os.environ["OTHERS"])
        for _ in range(200):  # fail once the other workers run, so that there is something to stop
            if len([n for n in os.listdir(pids) if n.endswith(".pid")]) > others:
                break
            time.sleep(0.05)
        sys.stderr.write("loading\\n 30%|###   | 3/10 [00:01<00:02, 2.9it/s]\\r")
        sys.stderr.write("reft train: error: TrainConfig.lr=inf; expected a finite number\\n 40%|####  | 4/10")
        sys.exit(2)
    if os.environ.get("STUBBORN"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL ends it
    time.sleep(120)
    """
)


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie waiting to be reaped counts as ended)."""
    try:
        import psutil
    except ImportError:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_for(cond, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def _pids(folder: Path, methods) -> dict[str, int]:
    return {m: int((folder / f"{m}.pid").read_text()) for m in methods if (folder / f"{m}.pid").exists()}


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """A compare command line over tiny local data and a config-only model, and the stand-in worker."""
    fake = tmp_path / "fake_worker.py"
    fake.write_text(FAKE)
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"prompt": "a", "response": " b"}) + "\n")
    model = tmp_path / "model"
    cfg = transformers.LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4
    )
    cfg.save_pretrained(model)
    pids = tmp_path / "pids"
    pids.mkdir()
    monkeypatch.setenv("PIDS", str(pids))
    argv = ["compare", "--data", str(data), "--model", str(model), "--layers", "1", "--steps", "1"]
    return argv, (sys.executable, str(fake)), pids


def test_a_failed_worker_stops_the_others_and_is_named(setup, monkeypatch, capsys):
    argv, fake, pids = setup
    monkeypatch.setattr(workers, "WORKER", fake)
    monkeypatch.setattr(workers, "STOP_WAIT_S", 0.5)  # a worker that ignores SIGTERM gets SIGKILL after this
    monkeypatch.setenv("FAIL", "lora")
    monkeypatch.setenv("OTHERS", "2")
    monkeypatch.setenv("STUBBORN", "1")
    t0 = time.monotonic()
    assert main([*argv, "--methods", "loreft,direft,lora", "--jobs", "3"]) == 2
    took = time.monotonic() - t0
    err = capsys.readouterr().err
    assert err == (
        "reft compare: error: method lora failed (exit code 2): TrainConfig.lr=inf; expected a finite number; "
        "stopped the others (loreft, direft) (run again with --debug to see its stderr)\n"
    )
    pid = _pids(pids, ["loreft", "direft", "lora"])
    assert len(pid) == 3 and not any(_alive(p) for p in pid.values()), pid
    assert took < 20, took  # not the stand-ins' 120 s sleep


def test_a_signal_while_a_worker_starts_still_stops_that_worker(setup, monkeypatch, capsys):
    """SIGTERM landing inside the start of a worker (subprocess's code) ends ``reft compare`` only once the
    worker is among those it stops; the handlers it put in place are gone afterwards."""
    argv, fake, _ = setup
    monkeypatch.setattr(workers, "WORKER", fake)
    started, start = [], workers._start

    def start_then_signal(args, files):
        w = start(args, files)
        started.append(w.proc)
        os.kill(os.getpid(), signal.SIGTERM)  # its handler runs before this returns
        return w

    monkeypatch.setattr(workers, "_start", start_then_signal)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        assert main([*argv, "--methods", "loreft,lora", "--jobs", "2"]) == 130
        assert capsys.readouterr().err == "reft compare: interrupted\n"
        assert len(started) == 1 and started[0].poll() is not None  # stopped and reaped, not left running
        assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    finally:
        for proc in started:
            proc.kill()
            proc.wait()


def test_a_signal_as_the_last_worker_ends_is_not_lost(setup, monkeypatch):
    _, fake, _ = setup
    monkeypatch.setattr(workers, "WORKER", fake)
    monkeypatch.setenv("FAIL", "lora")  # the stand-in exits at once (OTHERS=0: no one to wait for)
    monkeypatch.setenv("OTHERS", "0")

    def result_then_signal(name, w, **kw):
        os.kill(os.getpid(), signal.SIGTERM)  # comes while the last result is read
        return {"method": name}

    monkeypatch.setattr(workers, "_result", result_then_signal)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        workers.run_workers({"lora": argparse.Namespace(method="lora")})


# An interrupted ``reft compare``: its own process, as from a terminal (SIGINT's default handler, whatever the
# process running this test does with it), with the stand-in worker.
COMPARE = textwrap.dedent(
    """
    import json, signal, sys
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from reft.cli import main, workers
    workers.WORKER = tuple(json.loads(sys.argv[1]))
    sys.exit(main(json.loads(sys.argv[2])))
    """
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_no_worker_outlives_an_interrupted_compare(setup, tmp_path, sig):
    argv, fake, pids = setup
    argv = [*argv, "--methods", "loreft,lora", "--jobs", "2"]
    with open(tmp_path / "stderr.txt", "w+") as err:
        compare = subprocess.Popen([sys.executable, "-c", COMPARE, json.dumps(fake), json.dumps(argv)], stderr=err)
        try:
            assert _wait_for(lambda: len(_pids(pids, ["loreft", "lora"])) == 2, 60), "the workers did not start"
            pid = _pids(pids, ["loreft", "lora"])
            assert all(_alive(p) for p in pid.values())
            compare.send_signal(sig)
            code = compare.wait(30)
            assert not any(_alive(p) for p in pid.values()), pid  # stopped and reaped before compare exited
        finally:
            compare.kill()
            compare.wait()
            for p in _pids(pids, ["loreft", "lora"]).values():
                if _alive(p):
                    os.kill(p, signal.SIGKILL)
        err.seek(0)
        assert (code, err.read()) == (130, "reft compare: interrupted\n")


def _parent_of_a_worker(pid_file):
    """A process whose child asks to die with it (as every compare worker does), then sleeps."""
    child = os.fork()
    if child == 0:
        workers.die_with_parent(os.getppid())
        Path(f"{pid_file}.tmp").write_text(str(os.getpid()))
        os.replace(f"{pid_file}.tmp", pid_file)  # a reader never sees it empty
        time.sleep(120)
        os._exit(0)
    time.sleep(120)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_worker_dies_with_a_killed_compare(tmp_path):
    pid_file = tmp_path / "worker.pid"
    parent = multiprocessing.get_context("fork").Process(target=_parent_of_a_worker, args=(pid_file,))
    parent.start()
    try:
        assert _wait_for(pid_file.exists, 30)
        worker = int(pid_file.read_text())
        assert _alive(worker)
        parent.kill()  # SIGKILL: nothing runs in the parent
        parent.join(10)
        assert _wait_for(lambda: not _alive(worker), 10), worker
    finally:
        parent.kill()
        if pid_file.exists() and _alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_last_line_skips_progress_bars():
    assert workers.last_line(" 10%|#         | 1/10 [00:00<00:01, 9.1it/s]\rTraceback\nValueError: bad\n 20%|##") == (
        "ValueError: bad"
    )
    assert workers.last_line("") == "nothing on its stderr"
