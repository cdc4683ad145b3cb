"""Served in vLLM, trained edits give the tokens of reft.generate on the Hugging Face model (Gemma-3-270M).

One engine for the file (``served``), with a small step budget (16 tokens) so that prompts are prefilled in chunks
over several steps, mixed with other requests' decoding steps, and 16-token blocks so that prefix caching has
prompts long enough to share. One batch carries a different edit per request (prompt-only ReFT from a saved
folder, untied; prompt-only steering; decode-time ReFT; decode-time steering with ``recent(2)``) and none; each
edit is strong enough that a missing edit changes the tokens (checked against the unedited generation).
"""

from __future__ import annotations

import pytest

vllm = pytest.importorskip("vllm")

import torch  # noqa: E402
from conftest import randomize, tiny_lm  # noqa: E402

import reft  # noqa: E402
from interp import Site, all_tokens, at, first, generated, last, recent  # noqa: E402
from interp.engine import vllm_edit  # noqa: E402
from interp.errors import EditNotAppliedError, PositionError, ServeError  # noqa: E402
from interp.inputs import encode  # noqa: E402
from reft.generate import edits_while_generating, serve_step_ops  # noqa: E402
from reft.model import serve_ops  # noqa: E402
from reft.serve import Server  # noqa: E402
from reft.steering import steer  # noqa: E402

NEW = 10
LONG = (
    "Once upon a time, in a small village by the sea, there lived an old fisherman who went out every morning "
    "before sunrise, long before the baker lit his oven and the church bell rang, to cast his nets where"
)
PROMPTS = ["The capital of France is", LONG, "The best way to learn a new language is to", "My favourite food is"]
# (prompt index, edit) per request: batch 1 gives every edit once and the unedited LONG; batch 2 serves LONG again
# with the same edit (its cached prefix may be shared), another edit and none (never shared across edits).
BATCH1 = [(0, "style"), (1, "steer"), (2, "decode"), (3, "recent"), (1, None)]
BATCH2 = [(1, "steer"), (1, "style"), (1, None), (0, "decode")]
PLAIN = [(0, None), (2, None), (3, None)]


def _direction(seed: int) -> torch.Tensor:
    v = torch.randn(640, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


@pytest.fixture(scope="module")
def served(gemma, tmp_path_factory):
    lm = gemma
    style = randomize(
        reft.attach(lm, {Site("resid_post", 6, first(1) + last(1)): reft.LoReFT(640, 4)}, tied=False), seed=1
    )
    folder = reft.save(style, tmp_path_factory.mktemp("serve") / "style")
    decode = randomize(reft.attach(lm, {Site("resid_post", 8, last(1) + generated()): reft.LoReFT(640, 4)}), seed=2)
    edits = {
        "style": folder,  # loaded by the server from the saved folder
        "steer": steer(lm, Site("resid_post", 4, all_tokens()), _direction(3), scale=300.0),
        "decode": decode,
        "recent": steer(lm, Site("mlp_out", 9, recent(2)), _direction(4), scale=300.0),
        "far": steer(lm, Site("resid_post", 2, at(30)), _direction(5)),  # only prompts of 31 tokens or more
    }
    server = Server(None, edits, lm=lm, max_num_batched_tokens=16, block_size=16)
    rows = list(dict.fromkeys(BATCH1 + BATCH2 + PLAIN))
    ids, logprobs = _hf_generate(lm, [PROMPTS[i] for i, _ in rows], [server.edits.get(n) for _, n in rows])
    reference = {row: ids[k] for k, row in enumerate(rows)}
    reference["logprobs"] = {row: logprobs[k] for k, row in enumerate(rows)}
    yield server, reference, _run(server, BATCH1, logprobs=1)  # batch 1 runs first: the cache holds its blocks
    server.close()


def _hf_generate(lm, prompts, serve):
    """reft.generate_ids's tokens (greedy, left-padded batch, each row its own edit), with the log-probabilities of
    the chosen tokens."""
    batch = encode(lm, prompts, padding_side="left")
    with torch.no_grad(), edits_while_generating(lm, serve_ops(serve, batch), serve_step_ops(serve)):
        out = lm.hf.generate(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            max_new_tokens=NEW,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=0,
        )
    new = out.sequences[:, batch.input_ids.shape[1] :]
    lp = torch.stack(out.logits, 1).float().log_softmax(-1).gather(-1, new[..., None])[..., 0]
    eos = lm.hf.generation_config.eos_token_id
    eos = {eos} if isinstance(eos, int) else set(eos or ())
    ends = [next((k + 1 for k, t in enumerate(row) if t in eos), len(row)) for row in new.tolist()]
    # a row that ends early is padded by generate; vLLM's ends with the EOS token
    return [row[:n] for row, n in zip(new.tolist(), ends)], [p[:n] for p, n in zip(lp, ends)]


def _run(server, batch, **sampling):
    return server.generate([PROMPTS[i] for i, _ in batch], [n for _, n in batch], {"max_tokens": NEW, **sampling})


def test_one_batch_of_different_edits_equals_reft_generate(served):
    server, reference, out = served
    for (i, name), o in zip(BATCH1, out):
        assert o.token_ids == reference[i, name], (name, PROMPTS[i], o.text)
        gap = (torch.tensor(o.logprobs) - reference["logprobs"][i, name]).abs().max().item()
        assert gap < 1e-3, (name, gap)  # kernels differ (vLLM's CPU attention and GEMMs); measured ~4e-5
        if name is not None:  # the edit is visible: without it the tokens differ
            assert reference[i, name] != reference[i, None], name
    assert max(len(o.prompt_token_ids) for o in out) > 16  # LONG's prefill spans steps of 16 tokens


def test_prefix_cache_is_shared_within_an_edit_and_never_across(served):
    server, reference, _ = served
    out = _run(server, BATCH2)
    for (i, name), o in zip(BATCH2, out):
        assert o.token_ids == reference[i, name], (name, PROMPTS[i], o.text)
    same, other, none = out[0], out[1], out[2]
    assert same.cached_tokens >= 16  # LONG with "steer" again: its full blocks came from the cache
    assert other.cached_tokens == 0  # LONG with "style": the "steer" blocks are not shared
    assert none.cached_tokens >= 16  # LONG without an edit shares the unedited run's blocks (batch 1)


def test_prompt_only_edits_touch_prefill_steps_only(served):
    server, reference, _ = served
    before = list(server.editor.forwards)
    out = _run(server, [(0, "style"), (3, None)])  # two short prompts: one prefill step, then decoding
    assert [o.token_ids for o in out] == [reference[0, "style"], reference[3, None]]
    forwards, edited = (a - b for a, b in zip(server.editor.forwards, before))
    assert forwards >= NEW and edited == 1, (forwards, edited)


def test_a_finished_request_is_checked_even_after_the_editor_forgets_old_ones(served, monkeypatch):
    server, reference, _ = served
    monkeypatch.setattr(vllm_edit, "PRUNE_AT", 0)  # forget, at every step, every request that left the engine
    batch = [(0, "style"), (3, None), (2, "decode")]
    out = _run(server, batch)  # each request's check runs after the whole batch ends
    assert [o.token_ids for o in out] == [reference[row] for row in batch]


def test_an_edit_whose_module_hook_never_runs_is_refused(served):
    server, reference, _ = served
    editor = server.editor
    for handle in editor.handles[1:]:  # keep the per-step plan (the model's pre-hook), drop the edited modules' hooks
        handle.remove()
    try:  # a short prompt and 2 tokens: no full 16-token block reaches the prefix cache unedited
        with pytest.raises(EditNotAppliedError, match="'style'"):
            server.generate([PROMPTS[0]], ["style"], {"max_tokens": 2})
    finally:
        editor.remove()
        editor.install()
    assert _run(server, [(0, "style")])[0].token_ids == reference[0, "style"]


def test_unknown_names_bad_positions_and_unsupported_cases_are_refused(served, gemma):
    server, reference, _ = served
    with pytest.raises(ServeError, match="'nope'"):
        server.generate(["Hi"], ["nope"])
    with pytest.raises(ServeError, match="2 interventions for 1 prompts"):
        server.generate(["Hi"], ["style", None])
    with pytest.raises(ServeError, match="sampling n=2"):
        server.generate(["Hi"], ["style"], {"n": 2, "temperature": 1.0})
    with pytest.raises(PositionError, match=r"prompt 0 \(edit 'far'\): position at\(30\) asks for token 30"):
        server.generate([PROMPTS[0]], ["far"])  # refused before it is submitted: the engine keeps serving
    assert server.generate([PROMPTS[0]], ["style"], {"max_tokens": NEW})[0].token_ids == reference[0, "style"]
    head = steer(gemma, Site("head", 3, last(), head=1), torch.ones(256), scale=1.0)
    with pytest.raises(ServeError, match="component 'head'"):
        Server(None, {"h": head}, lm=gemma)
    with pytest.raises(ServeError, match="enforce_eager=False"):
        Server(None, {}, lm=gemma, enforce_eager=False)
    with pytest.raises(ServeError, match="tensor_parallel_size=2"):
        Server(None, {}, lm=gemma, tensor_parallel_size=2)


def test_other_architectures_and_models_are_refused_before_the_engine_starts(tmp_path, gemma):
    gpt2 = tiny_lm("gpt2")
    gpt2.hf.save_pretrained(tmp_path / "gpt2")
    edit = steer(gpt2, Site("resid_post", 0, last()), torch.ones(32))
    with pytest.raises(ServeError, match="GPT2LMHeadModel in vLLM: supported architectures are Gemma3ForCausalLM"):
        Server(tmp_path / "gpt2", {"x": edit}, lm=gpt2)
    llama = steer(tiny_lm("llama"), Site("resid_post", 0, last()), torch.ones(32))
    with pytest.raises(ServeError, match="built for a LlamaForCausalLM .* served model is a Gemma3ForCausalLM"):
        Server(None, {"x": llama}, lm=gemma)
    with pytest.raises(ServeError, match="compilation_config=.*a compiled forward does not run the module hooks"):
        Server(None, {}, lm=gemma, compilation_config={"mode": 3})
    with pytest.raises(ServeError, match="speculative_config=.*draft tokens would be edited"):
        Server(None, {}, lm=gemma, speculative_config={"method": "ngram", "num_speculative_tokens": 2})
    site = Site("resid_post", 3, last())
    classifier = reft.attach(gemma, {site: reft.LoReFT(gemma.d_model, 2)}, head=reft.ClassifierHead(gemma.d_model, 2))
    with pytest.raises(ServeError, match="classifier head; a server generates text"):
        Server(None, {"cls": classifier}, lm=gemma)
