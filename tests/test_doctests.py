"""Every docstring example in interp/ and reft/ runs as a doctest on a tiny random model, one case per module.

The examples share one namespace (:func:`namespace`): a tiny random Llama ``lm`` (2 layers, d_model 32, 4 heads,
vocabulary 97) with no tokenizer, so inputs are token ids (``base``, ``source``, ``prompts``); counterfactual
``pairs`` over token ids with ``train``/``test`` halves; a DAS result ``das`` trained for one step; a ReFT model
``rlm`` and its ``examples``; ``tmp``, a fresh directory to write into; ``torch``, ``interp``, ``reft`` and their
public names. A module's own globals come next, then the namespace's values, which no module name hides.

Nothing here touches the network or loads the real model: ``interp.load()`` is made to fail. Examples that need
the real model or a tokenizer with words are marked ``# doctest: +SKIP``.
"""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from conftest import _tiny, tiny_lm  # noqa: E402

import interp  # noqa: E402
import reft  # noqa: E402
from interp.causal import CausalModel  # noqa: E402

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
AMBIGUOUS = {"load", "save"}  # interp.load and reft.load differ: examples write interp.load / reft.save in full


def _module_names() -> list[str]:
    names = []
    for pkg in (interp, reft):
        names.append(pkg.__name__)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
    return sorted(n for n in names if not n.endswith("__main__"))  # __main__ runs the command line on import


def _doctests(name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(name)
    return [t for t in doctest.DocTestFinder(exclude_empty=True).find(module, name) if t.examples]


MODULES = [n for n in _module_names() if _doctests(n)]


def public_names() -> dict:
    """``interp``'s and ``reft``'s public names, and the packages themselves."""
    names = {n: getattr(interp, n) for n in interp.__all__ if n not in AMBIGUOUS}
    names |= {n: getattr(reft, n) for n in reft.__all__ if n not in AMBIGUOUS and n not in names}
    return names | {"torch": torch, "interp": interp, "reft": reft}


def namespace(tmp) -> dict:
    """The values every example may use (see the module docstring); built fresh for each module."""
    torch.manual_seed(0)
    lm = tiny_lm("llama")
    gen = torch.Generator().manual_seed(0)
    base = torch.randint(3, 97, (4, 6), generator=gen)  # (B, T) token ids
    source = torch.randint(3, 97, (4, 6), generator=gen)
    prompts = torch.randint(3, 97, (8, 5), generator=gen)  # 8 prompts of 5 token ids
    # A binary variable G of the middle token a (a >= 50), read out as token 5 (True) or 6 (False).
    model = CausalModel({"a": None, "G": (("a",), lambda a: a >= 50), "O": (("G",), lambda g: 5 if g else 6)})
    data = model.counterfactuals(lambda r: {"a": r.randrange(10, 90)}, variables="G", n=40, seed=0, changed_only=True)
    pairs = data.render(lambda s: [1, s["a"], 7], int, candidates=[5, 6])  # prompts [1, a, 7]; answer 5 or 6
    train, test = pairs.split(0.75, seed=0)
    site = interp.Site("resid_post", 1, interp.last())
    das = interp.fit_das(lm, train, at=site, rank=4, test=test, steps=1, progress=False)
    rlm = reft.attach(lm, {interp.Site("resid_post", 1, interp.first(1) + interp.last(1)): reft.LoReFT(32, rank=4)})
    examples = [{"prompt_ids": p, "response_ids": [5, 6]} for p in prompts[:4].tolist()]  # ReFT: learn 5, 6
    return dict(
        lm=lm,
        tiny_model=_tiny("gpt2").eval(),
        base=base,
        source=source,
        prompts=prompts,
        data=data,
        pairs=pairs,
        train=train,
        test=test,
        site=site,
        das=das,
        rlm=rlm,
        examples=examples,
        tmp=tmp,
    )


@pytest.fixture
def offline(monkeypatch):
    """No network, no real model: interp.load() with no argument fails at once instead of loading Gemma."""

    def refuse():
        raise RuntimeError("doctests run on the tiny model; mark examples that need interp.load() '# doctest: +SKIP'")

    monkeypatch.setattr("interp.models.embedded_model_path", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield  # one thread, as every test on tiny models (conftest)
    plt.close("all")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, offline):
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    cwd = os.getcwd()
    os.chdir(tmp_path)  # a relative path an example writes lands in the temporary directory
    try:
        with torch.random.fork_rng():  # examples draw random tensors; the suite's RNG state is left as it was
            shared, public = namespace(tmp_path), public_names()
            for test in _doctests(name):
                test.globs = {**public, **test.globs, **shared}
                runner.run(test, out=report.append)
    finally:
        os.chdir(cwd)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed:\n" + "".join(report)
