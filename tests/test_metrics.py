"""Per-pair scores, restricted vocabularies and batch sizes (interp.metrics.score, vocab= and batch_size= on runs).

Every value is checked against a hand computation from full-vocabulary logits of the plain API
(``interchange`` and ``run`` without vocab=), on every tiny architecture. Tolerances (1e-4 on logits of order 1)
are far below what an interchange changes (each table asserts the edit moved the numbers by > 1e-2), so a
missing edit, a wrong column or a dropped row fails.
"""

from __future__ import annotations

import functools
import itertools

import pytest
import torch
from conftest import ARCHS, tiny_lm

from interp import LowRankRotation, Site, at, encode, interchange, intervene, last, run
from interp.causal import Pairs
from interp.dii import collect
from interp.engine import options, runner
from interp.grid import Grid
from interp.metrics import iia, pair_logits, score
from interp.patching import patch_grid
from interp.replay import PrefixCache
from interp.scores import PairScores

LENGTHS = (5, 3, 6, 4, 5, 6)  # prompts of different lengths: padding differs between rows and batches
SITE = Site("resid_post", 0, last())


@functools.cache
def model(arch):
    return tiny_lm(arch)


def _prompts(seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 97, (n,), generator=g).tolist() for n in LENGTHS]


def _pairs(lm, via, *, candidates=None, seed=0) -> Pairs:
    """Pairs whose labels make every score non-trivial: half of them are the intervened argmax (hits), one pair
    has equal labels (no contrast), the rest random."""
    base, source = _prompts(seed), _prompts(seed + 1)
    full = interchange(lm, encode(lm, base), encode(lm, source), at=SITE, via=via).logits
    top = full.argmax(-1).tolist() if candidates is None else [candidates[int(full[i, candidates].argmax())]
                                                                for i in range(len(base))]  # fmt: skip
    pool = list(range(3, 97)) if candidates is None else candidates
    g = torch.Generator().manual_seed(seed + 2)
    draw = lambda: pool[int(torch.randint(len(pool), (1,), generator=g))]  # noqa: E731
    labels = [top[i] if i % 2 == 0 else draw() for i in range(len(base))]
    base_labels = [draw() for _ in base]
    base_labels[1] = labels[1]  # no contrast
    return Pairs(("x",), base, [source], labels, base_labels, candidates)


def _by_hand(lm, pairs: Pairs, via):
    """The scores from full-vocabulary logits of interchange and run, with log-softmax for the log odds."""
    lg = interchange(lm, encode(lm, pairs.base), encode(lm, pairs.sources[0]), at=SITE, via=via).logits.float()
    clean = run(lm, pairs.base).logits.float()
    y, b, n = torch.tensor(pairs.labels), torch.tensor(pairs.base_labels), torch.arange(len(pairs))
    if pairs.candidates is None:
        hit = lg.argmax(-1) == y
    else:
        c = torch.tensor(pairs.candidates)
        hit = c[lg[:, c].argmax(-1)] == y
    lp, lq = lg.log_softmax(-1), clean.log_softmax(-1)
    return dict(
        hit=hit,
        hit_labels=(lg[n, y] > lg[n, b]) & (y != b),
        logit_diff=lg[n, y] - lg[n, b],
        clean_logit_diff=clean[n, y] - clean[n, b],
        log_odds_ratio=(lp[n, y] - lp[n, b]) - (lq[n, y] - lq[n, b]),
    )


VIAS = {"whole": lambda lm: None, "rank4": lambda lm: LowRankRotation(lm.d_model, 4)}
CANDIDATES = {"vocab": None, "candidates": [5, 6, 7, 8, 9, 10, 11, 12]}


@pytest.mark.parametrize("arch,via,cand", list(itertools.product(ARCHS, VIAS, CANDIDATES)))
def test_score_equals_a_hand_computation(arch, via, cand):
    lm = model(arch)
    torch.manual_seed(0)
    basis = VIAS[via](lm)
    pairs = _pairs(lm, basis, candidates=CANDIDATES[cand])
    s = score(lm, pairs, at=SITE, via=basis, batch_size=4)
    want = _by_hand(lm, pairs, basis)
    assert want["log_odds_ratio"].abs().max() > 1e-2  # the interchange moves the label words
    assert want["hit"].any() and not want["hit"].all()
    assert torch.equal(s.hit, want["hit"]) and torch.equal(s.hit_labels, want["hit_labels"])
    for key in ("logit_diff", "clean_logit_diff", "log_odds_ratio"):
        torch.testing.assert_close(getattr(s, key), want[key], atol=1e-4, rtol=0)
    assert s.contrast.tolist() == [y != b for y, b in zip(pairs.labels, pairs.base_labels)]
    assert s.iia == want["hit"].double().mean().item() == iia(lm, pairs, at=SITE, via=basis)
    mask = s.contrast
    assert s.iia_labels == want["hit_labels"][mask].double().mean().item()
    assert s.iia_labels == iia(lm, pairs, at=SITE, via=basis, against="base")
    assert s.mean_log_odds_ratio == pytest.approx(want["log_odds_ratio"][mask].mean().item(), abs=1e-4)
    assert s.means()["n_contrast"] == int(mask.sum()) < len(pairs)
    assert repr(s).startswith(f"PairScores({len(pairs)} pairs: iia ")


def test_score_without_the_argmax_reads_label_rows_only(monkeypatch):
    lm = model("llama")
    pairs = _pairs(lm, None)
    seen = []
    real = pair_logits

    def spy(*args, **kw):
        out = real(*args, **kw)
        seen.append(out.shape[-1])
        return out

    monkeypatch.setattr("interp.metrics.pair_logits", spy)
    s = score(lm, pairs, at=SITE, argmax=False)
    assert s.hit is None and s.iia is None and "iia_labels" in repr(s)
    assert seen == [len(set(pairs.labels) | set(pairs.base_labels))] * 2  # the interchange and the clean run
    torch.testing.assert_close(s.logit_diff, _by_hand(lm, pairs, None)["logit_diff"], atol=1e-4, rtol=0)


def test_label_iia_without_contrast_is_nan():
    lm = model("gpt2")
    pairs = _pairs(lm, None)
    same = Pairs(("x",), pairs.base, pairs.sources, pairs.labels, pairs.labels)
    assert iia(lm, same, at=SITE, against="base") != iia(lm, same, at=SITE, against="base")  # NaN
    s = score(lm, same, at=SITE)
    assert s.n_contrast == 0 and "nan" in repr(s) and not s.hit_labels.any()


def test_pair_scores_means_and_repr():
    t = torch.tensor
    s = PairScores(t([True, False, True]), t([True, False, False]), t([True, True, False]), t([2.0, -1.0, 0.0]),
                   t([0.0, 0.0, 0.0]))  # fmt: skip
    assert (s.iia, s.iia_labels, s.mean_logit_diff, s.mean_log_odds_ratio) == (2 / 3, 0.5, 0.5, 0.5)
    assert "(2 of 3 with distinct labels)" in repr(s)


# ---- restricted vocabularies -----------------------------------------------------------------------------------

VOCAB = [7, 3, 50, 96, 3]  # any order, a repeat: column j is token VOCAB[j]
RUNS = {
    "run": lambda lm, **kw: run(lm, _prompts(0), **kw),
    "run@positions": lambda lm, **kw: run(lm, _prompts(0), logits_at=at(1) + last(), **kw),
    "intervene": lambda lm, **kw: intervene(
        lm, _prompts(0), at=SITE, sources=[collect(lm, _prompts(1), at=SITE)], via=LowRankRotation(lm.d_model, 4), **kw
    ),  # fmt: skip
    "interchange": lambda lm, **kw: interchange(
        lm, _prompts(0), encode(lm, _prompts(1)), at=[SITE, Site("mlp_out", 1, last())], **kw
    ),  # fmt: skip
}


@pytest.mark.parametrize("arch,fn,backend", list(itertools.product(ARCHS, RUNS, ("nnsight", "hooks"))))
def test_restricted_vocab_equals_the_full_logits_columns(arch, fn, backend):
    lm = model(arch)
    with options(backend=backend):
        torch.manual_seed(0)
        full = RUNS[fn](lm)
        torch.manual_seed(0)
        few = RUNS[fn](lm, vocab=VOCAB)
        torch.manual_seed(0)
        split = RUNS[fn](lm, vocab=torch.tensor(VOCAB), batch_size=4)
    assert few.logits.shape == full.logits.shape[:-1] + (len(VOCAB),)
    torch.testing.assert_close(few.logits, full.logits[..., VOCAB], atol=1e-5, rtol=0)
    torch.testing.assert_close(split.logits, few.logits, atol=1e-5, rtol=0)
    assert few.vocab.tolist() == VOCAB
    torch.testing.assert_close(few.logit_diff(50, 7), full.logit_diff(50, 7), atol=1e-5, rtol=0)
    assert set(few.predictions().tolist()) <= set(VOCAB)
    assert "over 5 words" in repr(few)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size", [1, 4])
def test_batch_size_gives_one_batch_results(arch, size):
    lm = model(arch)
    basis = LowRankRotation(lm.d_model, 4)
    src = encode(lm, _prompts(1))
    whole = interchange(lm, _prompts(0), src, at=SITE, via=basis)
    parts = interchange(lm, _prompts(0), src, at=SITE, via=basis, batch_size=size)
    assert whole.logits.shape == parts.logits.shape == (len(LENGTHS), 97)
    torch.testing.assert_close(parts.logits, whole.logits, atol=1e-5, rtol=0)
    grad = intervene(lm, _prompts(0), at=SITE, via=basis, sources=[collect(lm, _prompts(1), at=SITE)],
                     batch_size=size, grad=True, vocab=[5, 6])  # fmt: skip
    grad.logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in basis.parameters())
    pairs = _pairs(lm, basis)
    one, many = score(lm, pairs, at=SITE, via=basis), score(lm, pairs, at=SITE, via=basis, batch_size=size)
    torch.testing.assert_close(many.logit_diff, one.logit_diff, atol=1e-5, rtol=0)
    assert torch.equal(many.hit, one.hit)


@pytest.mark.parametrize("arch", ARCHS)
def test_prefix_replay_in_intervene_and_run_is_exact(arch):
    lm = model(arch)
    site = Site("resid_post", 1, last())
    base, src = _prompts(0), collect(lm, encode(lm, _prompts(1)), at=site)
    cache = PrefixCache.collect(lm, base, layer=1)
    basis = LowRankRotation(lm.d_model, 4)
    kw = dict(at=site, via=basis, sources=[src], vocab=[5, 6, 7])
    want = intervene(lm, base, **kw).logits
    assert (want - run(lm, base, vocab=[5, 6, 7]).logits).abs().max() > 1e-2  # the edit shows
    for size in (None, 4):
        torch.testing.assert_close(intervene(lm, base, prefix=cache, batch_size=size, **kw).logits, want,
                                   atol=1e-4, rtol=0)  # fmt: skip
    torch.testing.assert_close(run(lm, base, prefix=cache).logits, run(lm, base).logits, atol=1e-4, rtol=0)
    moved = PrefixCache(1, [h + 1.0 for h in cache.streams])  # the layers below really are replayed from the cache
    assert (intervene(lm, base, prefix=moved, **kw).logits - want).abs().max() > 1e-2


def test_results_refuse_what_their_vocab_lacks():
    lm = model("llama")
    few = run(lm, _prompts(0), vocab=[5, 6])
    with pytest.raises(ValueError, match=r"token ids \[7\] are not in this result's vocab=\[5, 6\]"):
        few.logit_diff(5, 7)
    with pytest.raises(ValueError, match="logits for 2 words only"):
        few.prob(5)
    assert [t for t, _ in few.top_k(2)[0]] in ([5, 6], [6, 5])


# ---- patch_grid: per pair, several answer pairs ------------------------------------------------------------------

POSITIONS = {"first": at(0), "last": last()}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["cached", "full"])
def test_patch_grid_per_pair_and_answers(arch, method):
    lm = model(arch)
    base, source = _prompts(3), _prompts(4)
    pairs = Pairs.of(base, source, base_answer=[5] * 6, source_answer=[6, 7, 6, 7, 6, 7])
    grid = patch_grid(lm, pairs, positions=POSITIONS, method=method, progress=False)
    assert grid.per_pair.shape == grid.logit_diffs.shape == (2, 2, 6)
    torch.testing.assert_close(grid.per_pair.mean(-1), grid.effect, atol=1e-6, rtol=0)
    # the old grid, by hand: (mean LD_base - mean LD_patched) / (mean LD_base - mean LD_source), full logits
    ld = lambda r: r.logit_diff(pairs.base_answer, pairs.source_answer)  # noqa: E731
    ld_base, ld_source = ld(run(lm, base)).mean(), ld(run(lm, source)).mean()
    for i, layer in enumerate([0, 1]):
        for j, pos in enumerate(POSITIONS.values()):
            patched = ld(interchange(lm, base, encode(lm, source), at=Site("resid_post", layer, pos)))
            torch.testing.assert_close(grid.logit_diffs[i, j], patched, atol=1e-4, rtol=0)
            want = (ld_base - patched.mean()) / (ld_base - ld_source)
            assert abs(grid.effect[i, j].item() - want.item()) < 1e-4
    assert grid.effect.abs().max() > 1e-2
    two = patch_grid(lm, pairs, positions=POSITIONS, method=method, progress=False,
                     answers={"own": (pairs.base_answer, pairs.source_answer), "9-8": (9, 8)})  # fmt: skip
    assert two.answers == ["own", "9-8"] and two.effect.shape == (2, 2, 2) and two.per_pair.shape == (2, 2, 2, 6)
    torch.testing.assert_close(two.effect[0], grid.effect, atol=1e-6, rtol=0)
    other = Pairs.of(base, source, base_answer=[9] * 6, source_answer=[8] * 6)
    torch.testing.assert_close(two.effect[1], patch_grid(lm, other, positions=POSITIONS, method=method,
                                                         progress=False).effect, atol=1e-6, rtol=0)  # fmt: skip
    assert two.best()["answer"] in ("own", "9-8") and len(two.base_logit_diffs) == 2


def test_grid_round_trips_per_pair_values():
    lm = model("qwen2")
    pairs = Pairs.of(_prompts(3), _prompts(4), base_answer=[5] * 6, source_answer=[6] * 6)
    grid = patch_grid(lm, pairs, positions=POSITIONS, progress=False)
    again = Grid.from_dict(grid.to_dict(per_pair=True))
    assert torch.equal(again.per_pair, grid.per_pair) or torch.allclose(again.per_pair, grid.per_pair, atol=1e-6)
    assert torch.allclose(again.logit_diffs, grid.logit_diffs, atol=1e-5) and "per_pair" not in grid.to_dict()
    assert "per_pair over 6 pairs" in repr(grid)


# ---- the real model -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_gemma_unembeds_only_the_words_read(gemma, monkeypatch):
    """On Gemma-3-270M (262k-row unembedding, final softcapping) vocab= computes the few rows asked for, equal to
    the full logits' columns, and the label-word scores of 8 IOI pairs read only their label rows."""
    from interp.tasks import ioi_pairs

    pairs = ioi_pairs(8, seed=0)
    words = sorted(set(pairs.base_answer) | set(pairs.source_answer)) + [" the"]
    full = run(gemma, pairs.base)
    widths = []
    real = runner.readout

    def spy(*args, **kw):
        out = real(*args, **kw)
        widths.append(out.shape[-1])
        return out

    monkeypatch.setattr(runner, "readout", spy)
    few = run(gemma, pairs.base, vocab=words)
    assert widths == [len(words)] and few.logits.shape == (8, len(words)) and len(words) < 20
    torch.testing.assert_close(few.logits, full.logits[:, few.vocab], atol=1e-4, rtol=0)
    torch.testing.assert_close(
        few.logit_diff(pairs.base_answer, pairs.source_answer),
        full.logit_diff(pairs.base_answer, pairs.source_answer),
        atol=1e-4,
        rtol=0,
    )
    widths.clear()
    s = score(gemma, pairs, at=Site("resid_post", 16, last()), argmax=False)
    assert widths and max(widths) <= 2 * len(pairs)  # the label words, never the vocabulary
    assert s.iia_labels > 0.9 and s.mean_log_odds_ratio > 1  # late last-token patching flips IOI
