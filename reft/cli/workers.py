"""Worker processes of the command line (``reft compare``): each runs ``reft train`` on options handed to it as
values, and none outlives the command that started it.

Example:
    >>> last_line(" 10%|#         | 1/10 [00:00<00:01, 9.1it/s]\\rreft train: error: no data\\n 20%|##")
    'no data'

A worker reads ``{"parent": pid, "args": {...}}`` (JSON) on stdin, runs ``reft train`` on those options
(:func:`worker`) and prints its result as one JSON line; its stdout and stderr go to files, so a chatty worker
never blocks. When one fails, every other one is stopped (SIGTERM to its process group, SIGKILL after
:data:`STOP_WAIT_S` seconds, then reaped) and the error names it, how it ended and the last line of its stderr
that is not a progress bar. SIGINT, or SIGTERM to the parent, stops them the same way before the interrupt goes
on; on Linux each worker also asks the kernel for SIGTERM when its parent dies, however it dies.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from interp.cli import execute

from ..interventions import ReftError
from . import train as _train

# A worker: `reft train` on the options it reads from stdin (:func:`worker`); tests put a stand-in here.
WORKER = (sys.executable, "-c", "from reft.cli.workers import worker; raise SystemExit(worker())")
STOP_WAIT_S = 5.0  # a stopped worker gets this long after SIGTERM before SIGKILL
PROGRESS = re.compile(r"\d+%\||\|\s*\d+/\d+|\d+/\d+ \[|[\d.?]+(it/s|s/it)")  # a progress bar's fragment


@dataclass
class _Worker:
    proc: subprocess.Popen
    out: IO[bytes]
    err: IO[bytes]


def run_workers(
    work: dict[str, argparse.Namespace], *, jobs: int = 1, debug: bool = False, report: Callable | None = None
) -> dict[str, dict]:
    """``reft train`` on each Namespace of ``work`` in its own process (:data:`WORKER`), at most ``jobs`` at once;
    each one's result by its name, in the order they finish (``report(name, result)`` is called as each does).

    A worker that fails stops every other one (SIGTERM, SIGKILL after :data:`STOP_WAIT_S` seconds) and raises a
    ReftError naming it, how it ended (exit code or signal) and the last line of its stderr that is not a
    progress bar (with ``debug``, the end of its stderr). SIGINT or SIGTERM to this process stops them the same
    way and raises KeyboardInterrupt.
    """
    queue, running, results = list(work), {}, {}
    with contextlib.ExitStack() as files, _deferred_interrupts() as interrupted:
        try:
            while queue or running:
                while queue and len(running) < max(1, jobs):
                    name = queue.pop(0)
                    running[name] = _start(work[name], files)
                    _raise_if(interrupted)
                name = _wait_any(running, interrupted)
                w = running.pop(name)
                results[name] = _result(name, w, others=list(running), debug=debug)
                if report is not None:
                    report(name, results[name])
            _raise_if(interrupted)  # one that came as the last worker ended is not lost
        finally:
            _stop(running.values())
    return results


def _start(args: argparse.Namespace, files: contextlib.ExitStack) -> _Worker:
    out = files.enter_context(tempfile.TemporaryFile())  # files, not pipes: a chatty worker never blocks
    err = files.enter_context(tempfile.TemporaryFile())
    proc = subprocess.Popen(WORKER, stdin=subprocess.PIPE, stdout=out, stderr=err, start_new_session=True)
    with contextlib.suppress(BrokenPipeError):  # a worker that died at once says why on its stderr
        proc.stdin.write(json.dumps({"parent": os.getpid(), "args": vars(args)}).encode())
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()
    return _Worker(proc, out, err)


def _wait_any(running: dict[str, _Worker], interrupted: list[str]) -> str:
    """The name of a worker that has ended (the first in ``running``'s order among those that have); raises
    KeyboardInterrupt once SIGINT or SIGTERM has come (:func:`_deferred_interrupts`)."""
    while True:
        for name, w in running.items():
            if w.proc.poll() is not None:
                return name
        _raise_if(interrupted)
        time.sleep(0.05)


def _result(name: str, w: _Worker, *, others: list[str], debug: bool) -> dict:
    """The worker's result (the last line of its stdout, JSON), or a ReftError saying how and why it ended."""
    code = w.proc.returncode
    lines = _read(w.out).strip().splitlines()
    if code == 0 and lines:
        with contextlib.suppress(json.JSONDecodeError):
            return json.loads(lines[-1])
    err = _read(w.err)
    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    why = last_line(err)
    if code == 0:
        why = f"no result on its stdout; {why}"
    stopped = f"; stopped the others ({', '.join(others)})" if others else ""
    tail = "\n" + "\n".join(err.strip().splitlines()[-40:]) if debug and err.strip() else ""
    hint = "" if debug else " (run again with --debug to see its stderr)"
    raise ReftError(f"method {name} failed ({how}): {why}{stopped}{hint}{tail}")


def _read(f: IO[bytes]) -> str:
    f.seek(0)
    return f.read().decode(errors="replace")


def last_line(text: str) -> str:
    """What a worker's stderr last said: its one-line error where it printed one, else its last line that is not
    a progress bar.

    Example:
        >>> last_line("a warning\\n 40%|####  | 4/10 [00:01<00:02, 3.1it/s]\\rreft train: error: no data\\n 50%|#####")
        'no data'
        >>> last_line("Traceback (most recent call last):\\n  ...\\nMemoryError: out of memory\\n 10%|#")
        'MemoryError: out of memory'
    """
    lines = [line.strip() for line in re.split(r"[\r\n]+", text) if line.strip()]
    errors = [line for line in lines if re.match(r"reft \w+: error: ", line)]
    if errors:
        return errors[-1].split(": error: ", 1)[1]
    said = [line for line in lines if not PROGRESS.search(line)]
    return said[-1] if said else "nothing on its stderr"


def _stop(workers) -> None:
    """SIGTERM to each running worker's process group, SIGKILL to those still there after STOP_WAIT_S; reaped."""
    workers = [w for w in workers if w.proc.poll() is None]
    if not workers:
        return
    with _signals_ignored():  # a second Ctrl-C must not leave workers behind half-stopped
        for w in workers:
            _signal_group(w.proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        for w in workers:
            try:
                w.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(w.proc, signal.SIGKILL)
                w.proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """``sig`` to the worker and whatever it started (its own session: ``start_new_session=True``)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _deferred_interrupts():
    """While the workers run, SIGINT and SIGTERM are noted in the list this yields, and :func:`_raise_if` raises
    KeyboardInterrupt for them between starting and polling workers, so that the workers are stopped first.

    Never raised where the signal lands: inside ``subprocess``, a KeyboardInterrupt can leave a started worker
    out of the list of those to stop, or leave ``Popen``'s wait lock held, so that stopping it waits forever.
    A SIGINT that was ignored (a shell's background job) stays ignored; the old handlers are put back afterwards.
    """
    noted: list[str] = []
    if not _main_thread():
        yield noted
        return

    def note(signum, frame):
        noted.append(signal.Signals(signum).name)

    watched = [signal.SIGTERM] + ([signal.SIGINT] if signal.getsignal(signal.SIGINT) != signal.SIG_IGN else [])
    old = {s: signal.signal(s, note) for s in watched}
    try:
        yield noted
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _raise_if(interrupted: list[str]) -> None:
    if interrupted:
        raise KeyboardInterrupt(interrupted[0])


@contextlib.contextmanager
def _signals_ignored():
    if not _main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def worker() -> int:
    """A ``reft compare`` worker: ``reft train`` on the options read from stdin (JSON: ``{"parent": pid, "args":
    {...}}``), its result printed as one JSON line; an error is one line on stderr, as ``reft train``'s."""
    payload = json.loads(sys.stdin.read())
    die_with_parent(payload["parent"])
    result = execute("reft", _train, argparse.Namespace(**payload["args"]))
    if isinstance(result, int):
        return result
    print(json.dumps(result), flush=True)
    return 0


def die_with_parent(parent: int) -> None:
    """On Linux, SIGTERM to this process when its parent dies, however it dies (SIGKILL included)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
