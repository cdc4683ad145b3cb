"""Decode-time ReFT positions (generated(), recent(k)): cached generation and teacher-forced training both equal a
reference that recomputes the whole sequence with the edit at every position it names, on several architectures."""

from __future__ import annotations

import pytest
import torch
from conftest import ARCHS, randomize, tiny_lm

import interp
import reft
from interp import PositionError, Site, first, generated, last, recent
from reft.data import Tokenized, collate
from reft.generate import edits_while_generating, serve_ops, serve_step_ops

# Each position the tests use, with its prompt tokens per part on a prompt of n >= 2 tokens (by definition,
# written out independently of interp.positions) and the part that takes the generated tokens.
POSITIONS = {
    "f1+l1+g": (first(1) + last(1) + generated(), lambda n: [[0], [n - 1], []], 2),
    "g": (generated(), lambda n: [[]], 0),
    "r3": (recent(3), lambda n: [list(range(max(0, n - 3), n))], 0),
    "l1+r2": (last(1) + recent(2), lambda n: [[n - 1], [n - 2]], 1),  # a sum never repeats a token
    "f1+l1": (first(1) + last(1), lambda n: [[0], [n - 1]], None),  # prompt-only
}


def _model(lm, name, layer, *, kind="loreft", tied=True, seed=1):
    pos = POSITIONS[name][0]
    return randomize(reft.attach(lm, reft.at_layers(lm, [layer], pos=pos, kind=kind, rank=4), tied=tied), seed=seed)


def _edit_columns(rlm, name, start, n, gen_cols):
    """(intervention, target, columns) per placement of ``rlm`` on a row whose prompt is ``[start, start + n)``."""
    _, parts_of, decode_part = POSITIONS[name]
    out = []
    for pl in rlm.placements:
        parts = parts_of(n)
        js = range(len(parts)) if pl.part is None else [pl.part]
        cols = [start + i for j in js for i in parts[j]]
        if decode_part in js:
            cols += list(gen_cols)
        out.append((pl.intervention, pl.target, cols))
    return out


def reference_logits(lm, ids, mask, edits):
    """Logits (B, T, V) of one forward without a cache, with ``edits[b]`` = [(intervention, target, columns)]."""
    by_path: dict = {}
    for b, row in enumerate(edits):
        for iv, target, cols in row:
            assert target.io == "output" and target.cols is None and target.head is None
            by_path.setdefault(target.path, []).append((b, iv, cols))
    handles = []

    def hook_for(items):
        def hook(mod, args, output):
            h = output[0] if isinstance(output, tuple) else output
            h = h.clone()
            for b, iv, cols in items:
                if cols:
                    c = torch.tensor(cols)
                    h[b, c] = iv(h[b, c][None])[0].to(h.dtype)
            return (h, *output[1:]) if isinstance(output, tuple) else h

        return hook

    for path, items in by_path.items():
        handles.append(lm.hf.get_submodule(path).register_forward_hook(hook_for(items)))
    try:
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            return lm.hf(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
    finally:
        for h in handles:
            h.remove()


def _left_padded(rows):
    T = max(map(len, rows))
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, T - len(r) :] = torch.tensor(r)
        mask[b, T - len(r) :] = 1
    return ids, mask


def _generate_with_logits(lm, serve, ids, mask, new):
    """Cached greedy decoding under ``serve`` through generate_ids' machinery, keeping each step's raw logits."""
    batch = interp.engine.Batch(ids, mask)
    with torch.no_grad(), edits_while_generating(lm, serve_ops(serve, batch), serve_step_ops(serve)):
        out = lm.hf.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False,
            pad_token_id=0, output_logits=True, return_dict_in_generate=True,
        )  # fmt: skip
    return out.sequences, torch.stack(out.logits, 1)  # (B, T + new), (B, new, V)


def _check_generation(lm, serve, names, prompts, new=5):
    ids, mask = _left_padded(prompts)
    T = ids.shape[1]
    seq, step_logits = _generate_with_logits(lm, serve, ids, mask, new)
    full_mask = torch.cat([mask, torch.ones(len(prompts), new, dtype=torch.long)], 1)
    gen_cols = range(T, T + new - 1)  # the generated tokens fed back as inputs (the last one never is)
    edits = [
        [] if m is None else _edit_columns(m, names[b], T - len(prompts[b]), len(prompts[b]), gen_cols)
        for b, m in enumerate(serve)
    ]
    ref = reference_logits(lm, seq[:, :-1], full_mask[:, :-1], edits)[:, T - 1 :]  # (B, new, V)
    assert torch.allclose(step_logits, ref, atol=1e-5), float((step_logits - ref).abs().max())
    eos = lm.hf.generation_config.eos_token_id
    masked = ref.clone()
    masked[..., torch.tensor(eos if isinstance(eos, list) else [] if eos is None else [eos], dtype=torch.long)] = -1e9
    assert torch.equal(seq[:, T:], masked.argmax(-1))  # greedy under the recomputation (min_new_tokens: no EOS)
    x = {"input_ids": ids, "attention_mask": mask}
    got = reft.generate_ids(lm, x, serve=serve, max_new_tokens=new, min_new_tokens=new)
    assert torch.equal(got.ids[:, T:], seq[:, T:])  # generate_ids runs the same edits
    return seq, ref


# ---- generation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_decode_time_generation_equals_full_recomputation(arch):
    lm = tiny_lm(arch)
    a = _model(lm, "f1+l1+g", 0, seed=3)
    b = _model(lm, "r3", 1, kind="direft", seed=4)
    c = _model(lm, "f1+l1", 1, seed=5)  # prompt-only, served alongside
    prompts = [[1, 5, 6, 7, 8, 9], [1, 9, 3], [1, 4, 4, 2], [1, 7, 8, 9, 10]]
    serve, names = [a, None, b, c], ["f1+l1+g", None, "r3", "f1+l1"]
    seq, ref = _check_generation(lm, serve, names, prompts)
    plain, _ = _generate_with_logits(lm, [None] * 4, *_left_padded(prompts), 5)
    assert torch.equal(seq[1], plain[1])  # row 1 is served nothing: exactly the plain decode
    alone, _ = _generate_with_logits(lm, [a], *_left_padded(prompts[:1]), 5)
    assert torch.equal(seq[0], alone[0])  # left padding and the other rows change nothing for row 0
    ids, mask = _left_padded(prompts)
    with torch.no_grad(), edits_while_generating(lm, serve_ops(serve, interp.engine.Batch(ids, mask)), []):
        out = lm.hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, min_new_tokens=5, pad_token_id=0,
                             output_logits=True, return_dict_in_generate=True)  # fmt: skip
    prompt_only = torch.stack(out.logits, 1)  # the same prompt pass without the per-step edits ...
    assert not torch.allclose(prompt_only[[0, 2]], ref[[0, 2], : prompt_only.shape[1]], atol=1e-3)  # ... differs


@pytest.mark.parametrize("name", ["g", "l1+r2", "f1+l1+g"])
def test_untied_decode_parts_edit_with_their_own_copy(name):
    lm = tiny_lm("llama")
    rlm = _model(lm, name, 1, tied=False, seed=7)
    assert len(rlm.interventions) == len(POSITIONS[name][0].parts)
    _check_generation(lm, [rlm, None, rlm], [name, None, name], [[1, 5, 6, 7, 8], [1, 9, 3], [1, 4, 4]])


def test_decode_edit_changes_the_continuation_and_a_prompt_only_model_decodes_hook_free():
    lm = tiny_lm("gemma3")
    seen = []  # hooks present at each forward of generate, besides the spy and the model's own

    def count():
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in lm.hf.modules())

    own = count()

    def spy(mod, args):
        seen.append(count() - own - 1)

    prompts = [[1, 5, 6, 7, 8], [1, 9, 3, 4, 2]]
    ids, mask = _left_padded(prompts)
    handle = lm.hf.register_forward_pre_hook(spy)
    try:
        prompt_only = _model(lm, "f1+l1", 1)
        reft.generate_ids(prompt_only, {"input_ids": ids, "attention_mask": mask}, max_new_tokens=4)
        assert seen[0] > 0 and seen[1:] == [0, 0, 0]  # the prompt pass is hooked, then no hook at all
        seen.clear()
        decode = _model(lm, "f1+l1+g", 1)
        g = reft.generate_ids(decode, {"input_ids": ids, "attention_mask": mask}, max_new_tokens=4)
        assert seen[0] > 0 and all(s > 0 for s in seen[1:])  # every step is hooked
    finally:
        handle.remove()
    assert count() == own  # nothing left behind
    step_only = _model(lm, "g", 1, seed=2)
    s = reft.generate_ids(step_only, {"input_ids": ids, "attention_mask": mask}, max_new_tokens=4)
    p = reft.generate_ids(lm, {"input_ids": ids, "attention_mask": mask}, max_new_tokens=4)
    assert torch.equal(s.new_ids[:, 0], p.new_ids[:, 0])  # generated() leaves the prompt pass as it is ...
    assert g.new_ids.shape == (2, 4)


def test_step_ops_cover_only_decoding_rows():
    lm = tiny_lm("llama")
    a, c = _model(lm, "f1+l1+g", 0), _model(lm, "f1+l1", 0)
    assert not c.decodes and a.decodes and c.step_ops(3) == []
    ops = serve_step_ops([a, None, c, a])
    assert len(ops) == 1 and ops[0].rows.tolist() == [0, 3] and ops[0].index.tolist() == [[0], [0]]
    assert serve_step_ops([c, None]) == []


# ---- teacher-forced training ------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_teacher_forced_logits_equal_the_recomputation(arch):
    lm = tiny_lm(arch)
    a = _model(lm, "f1+l1+g", 0, seed=3)
    b = _model(lm, "r3", 1, kind="direft", tied=False, seed=4)
    rows = [Tokenized([1, 5, 6, 7], [8, 9, 10]), Tokenized([1, 9, 3, 4, 5, 6], [7]), Tokenized([1, 4, 2], [3, 3])]
    rb = collate(lm, rows)  # right-padded prompt + response
    for rlm, name in ((a, "f1+l1+g"), (b, "r3")):
        got = rlm.logits(rb)  # (B, k, V) at pred_at
        edits = [_edit_columns(rlm, name, 0, len(r.prompt), range(len(r.prompt), len(r.prompt) + len(r.response)))
                 for r in rows]  # fmt: skip
        ref = reference_logits(lm, rb.batch.input_ids, rb.batch.attention_mask, edits)
        ref = ref[torch.arange(len(rows))[:, None], rb.pred_at]
        m = rb.label_mask
        assert torch.allclose(got[m], ref[m], atol=1e-5), float((got[m] - ref[m]).abs().max())
        prompt_only = reference_logits(lm, rb.batch.input_ids, rb.batch.attention_mask,
                                       [_edit_columns(rlm, name, 0, len(r.prompt), []) for r in rows])  # fmt: skip
        assert not torch.allclose(got[m], prompt_only[torch.arange(len(rows))[:, None], rb.pred_at][m], atol=1e-4)


def test_training_a_decode_time_reft_lowers_the_loss_and_matches_generation():
    lm = tiny_lm("llama")
    rlm = reft.attach(lm, reft.at_layers(lm, [1], pos=reft.parse_positions("f1+l1+g"), rank=4))
    ex = [{"prompt_ids": [1, 5, 6, 7], "response_ids": [9, 11, 13]}, {"prompt_ids": [1, 8, 3], "response_ids": [12, 4]}]
    hist = reft.train_reft(rlm, ex, reft.TrainConfig(steps=60, lr=5e-2, batch_size=2, progress=False))
    assert hist.losses[-1] < hist.losses[0]
    # The trained edit, applied to the whole generated continuation, gives the logits teacher forcing trained.
    ids, mask = _left_padded([[1, 5, 6, 7]])
    seq, step_logits = _generate_with_logits(lm, [rlm], ids, mask, 3)
    rb = collate(lm, [Tokenized([1, 5, 6, 7], seq[0, 4:].tolist())])
    assert torch.allclose(rlm.logits(rb)[0], step_logits[0], atol=1e-5)


def test_a_decode_time_reft_saves_and_reloads(tmp_path):
    lm = tiny_lm("llama")
    rlm = _model(lm, "l1+r2", 1, tied=False)
    back = reft.load(reft.save(rlm, tmp_path / "r"), lm)
    assert [pl.site for pl in back.placements] == [pl.site for pl in rlm.placements] and back.decodes
    ids, mask = _left_padded([[1, 5, 6, 7, 8], [1, 9, 3]])
    x = {"input_ids": ids, "attention_mask": mask}
    assert torch.equal(
        reft.generate_ids(back, x, max_new_tokens=4).ids, reft.generate_ids(rlm, x, max_new_tokens=4).ids
    )


# ---- positions, the command line's forms, errors ----------------------------------------------------------


def test_cli_forms_parse_and_reprs_round_trip():
    P = reft.parse_positions
    assert P("g") == generated() and P("r4") == recent(4)
    assert P("f1+l1+g") == first(1) + last(1) + generated()
    assert P("f7+l7") == first(7) + last(7)  # unchanged
    for pos in (generated(), recent(4), first(1) + last(1) + generated(), last(2) + recent(3), first(3) + last(3)):
        assert P(repr(pos)) == pos
    assert repr(P("f1+l1+g")) == "first(1)+last()+generated()"
    for bad in ("x3", "recent()", "generated(2)", "gg", "r", "at()", "span(1)"):
        with pytest.raises(reft.ReftError, match="cannot read positions"):
            P(bad)
    with pytest.raises(PositionError, match="recent"):
        recent(0)


def test_decode_positions_locate_their_prompt_part_and_the_generated_columns():
    mask = torch.tensor([[0, 1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0, 0]])  # prompts of 4 and 3 tokens
    gen = torch.tensor([[0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1, 0]]).bool()
    assert recent(2).locate(mask).index.tolist() == [[3, 4], [1, 2]]
    assert recent(9).locate(mask).valid.sum(1).tolist() == [4, 3]  # a short prompt: all of it
    loc = (first(1) + last(1) + generated()).locate(mask, generated=gen)
    assert loc.index.tolist() == [[1, 4, 5, 6, 1], [0, 2, 3, 4, 5]] and loc.valid.sum(1).tolist() == [4, 5]
    parts = (last(1) + recent(2) + generated()).locate(mask, by_part=True, generated=gen)
    assert [p.index.tolist() for p in parts] == [[[4], [2]], [[3, 5, 6, 3], [1, 3, 4, 5]], [[], []]]
    # the generated tokens go to the first part that takes them: generated() after recent(2) gets none
    assert (first(1) + last(1)).locate(mask, generated=gen).index.tolist() == [[1, 4], [0, 2]]  # prompt-only
    assert not (first(1) + last(1)).decodes and generated().decodes and (last() + recent(1)).decode_part == 1


def test_decode_positions_in_a_one_forward_analysis_are_a_clear_error():
    lm = tiny_lm("llama")
    base = torch.randint(3, 97, (2, 5), generator=torch.Generator().manual_seed(0))
    for pos in (generated(), recent(2), last() + generated()):
        with pytest.raises(PositionError, match="generated tokens"):
            interp.collect(lm, base, at=Site("resid_post", 0, pos))
        with pytest.raises(PositionError, match="generated tokens"):
            interp.intervene(lm, base, at=Site("resid_post", 0, pos), via=interp.Zero())
    rlm = _model(lm, "f1+l1+g", 1)  # a ReFT's own edits in an analysis: its prompt part (no generated tokens)
    assert interp.collect(rlm, base, at=Site("resid_post", 1, last())).shape == (2, 1, 32)


def test_a_decode_time_model_refuses_uncached_decoding():
    lm = tiny_lm("llama")
    rlm = _model(lm, "f1+l1+g", 1)
    ids, mask = _left_padded([[1, 5, 6, 7]])
    with pytest.raises(reft.ReftError, match="one new token per step"):
        reft.generate_ids(rlm, {"input_ids": ids, "attention_mask": mask}, max_new_tokens=3, use_cache=False)


def test_generate_ids_refuses_a_reft_of_another_model_before_any_forward():
    """serve= entries are checked against the model generating, as serve_logits checks them (issue 22)."""
    lm, other = tiny_lm("llama"), tiny_lm("gpt2")
    alien = _model(other, "g", 0)
    calls = []
    lm.hf.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(reft.ReftError, match=r"serve\[1\] was built for"):
        reft.generate_ids(lm, torch.tensor([[5, 6, 7], [8, 9, 10]]), serve=[None, alien], max_new_tokens=2)
    assert calls == []  # refused before any forward
