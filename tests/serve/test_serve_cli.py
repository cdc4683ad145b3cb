"""``reft serve``: vLLM's OpenAI-compatible server, started on a free local port with a saved ReFT folder and a
steering-vector file; requests naming different edits (and none) in one batch get different tokens, each equal to
:func:`reft.generate_ids` on the Hugging Face model with the same edit (the reference Server.generate is held to in
test_serve_equivalence.py); an unknown name, and beam search with an edit, are refused with HTTP 400 and the
server keeps serving.

The server runs as a child process (its own session, so every vLLM process it starts is ended with it), at most
:data:`READY_S` seconds to load and :data:`REQUEST_S` per request; the test stops it in any case.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import reft  # noqa: E402
from interp import Site, all_tokens, first, last  # noqa: E402
from reft.steering import steer  # noqa: E402

READY_S = 240  # load: three processes import vLLM (about 40 s on a quiet 2-core machine; more when it is busy)
REQUEST_S = 60
NEW = 8
PROMPTS = ["The capital of France is", "My favourite food is"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_S) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def _ready(port: int, proc: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    log.seek(0)
    tail = log.read().decode(errors="replace")[-3000:]
    pytest.fail(f"reft serve was not ready in {READY_S} s (exit code {proc.poll()}); its log ends:\n{tail}")


@pytest.fixture(scope="module")
def edits(gemma, tmp_path_factory):
    """A prompt-only LoReFT saved as a folder and a steering vector saved as a file; each changes the tokens."""
    root = tmp_path_factory.mktemp("serve_cli")
    g = torch.Generator().manual_seed(5)
    rlm = reft.attach(gemma, {Site("resid_post", 6, first(1) + last(1)): reft.LoReFT(gemma.d_model, 4)})
    with torch.no_grad():
        for name, p in rlm.interventions.named_parameters():
            if "original" not in name:
                p.add_(2.0 * torch.randn(p.shape, generator=g))
    folder = reft.save(rlm, root / "lo")
    vector = torch.randn(gemma.d_model, generator=g)
    vector = vector / vector.norm()
    save_file({"vector": vector}, str(root / "steer.safetensors"))
    hf = {"lo": rlm, "st": steer(gemma, Site("resid_post", 4, all_tokens()), vector, scale=300.0), None: None}
    args = ["--edit", f"lo={folder}", "--edit", f"st={root / 'steer.safetensors'},layer=4,positions=all,scale=300"]
    return args, hf, root


@pytest.fixture(scope="module")
def server(edits):
    args, _, root = edits
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(root / "serve.log", "w+b") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reft", "serve", *args, "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
        try:
            _ready(port, proc, log)
            yield port
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # vLLM's own shutdown ends its engine processes
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)


def test_each_request_gets_its_own_edit_in_one_batch(server, edits, gemma):
    _, hf, _ = edits
    rows = [(p, name) for p in PROMPTS for name in ("lo", "st", None)]
    bodies = [
        {"model": "gemma-3-270m", "prompt": p, "max_tokens": NEW, "temperature": 0, "return_token_ids": True}
        | ({"vllm_xargs": {"reft": name}} if name else {})
        for p, name in rows
    ]
    with ThreadPoolExecutor(len(bodies)) as pool:  # sent together: vLLM batches them
        answers = list(pool.map(lambda b: _post(server, b), bodies))
    assert all(code == 200 for code, _ in answers), answers
    got = {row: a["choices"][0]["token_ids"] for row, (_, a) in zip(rows, answers)}
    want = reft.generate_ids(gemma, [p for p, _ in rows], serve=[hf[n] for _, n in rows], max_new_tokens=NEW)
    for k, row in enumerate(rows):
        assert got[row] == want.new_ids[k].tolist(), row
    for p in PROMPTS:
        assert len({tuple(got[p, name]) for name in ("lo", "st", None)}) == 3, p  # every edit changes the tokens


def test_an_unknown_edit_is_refused_and_the_server_keeps_serving(server):
    code, answer = _post(server, {"model": "gemma-3-270m", "prompt": "Hi", "max_tokens": 2,
                                  "vllm_xargs": {"reft": "nope"}})  # fmt: skip
    assert code == 400 and "'nope'" in answer["error"]["message"] and "['lo', 'st']" in answer["error"]["message"]
    code, answer = _post(server, {"model": "gemma-3-270m", "prompt": "Hi", "max_tokens": 2, "n": 2,
                                  "use_beam_search": True, "vllm_xargs": {"reft": "lo"}})  # fmt: skip
    assert code == 400 and "beam search cannot carry edit 'lo'" in answer["error"]["message"]
    code, answer = _post(server, {"model": "gemma-3-270m", "prompt": "Hi", "max_tokens": 2})
    assert code == 200 and answer["usage"]["completion_tokens"] == 2
