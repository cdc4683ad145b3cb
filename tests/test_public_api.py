"""The public surface: interp.__all__ / reft.__all__ are small and resolve, old names warn, results read well.

Every name a notebook or the README uses resolves without a warning (checked statically, without running the
notebooks); internals that used to be public still resolve for one release with a DeprecationWarning; the library
never imports its command line; DIIResult, Grid and DASResult print summaries, never whole tensors.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_lm

import interp
import reft
from interp import DIIResult, Grid, Site, first, interchange, last

ROOT = Path(__file__).resolve().parents[1]
MAX_PUBLIC = 50  # interp.__all__ had 59 names with internals among them; adding one means removing one
POSITIONS = ("first", "last", "at", "span", "token", "generated", "recent")


def _resolve_quietly(module, name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DeprecationWarning (or any other) fails the lookup
        return getattr(module, name)


# ------------------------------------------------------------------------------------------- names


def test_every_public_name_resolves_without_a_warning_and_the_surface_stays_small():
    for pkg in (interp, reft):
        assert len(set(pkg.__all__)) == len(pkg.__all__), f"{pkg.__name__}.__all__ repeats a name"
        for name in pkg.__all__:
            assert _resolve_quietly(pkg, name) is not None, f"{pkg.__name__}.{name}"
    assert len(interp.__all__) <= MAX_PUBLIC, len(interp.__all__)
    assert "patch_grid" in interp.__all__ and interp.patch_grid is interp.patching.patch_grid
    assert {"InterpError", "InterpWarning"} <= set(interp.__all__)
    assert not {"rows", "collect_rows", "das_logits", "das_loss", "check_positions"} & set(interp.__all__)


def test_reft_reexports_every_position_constructor_and_site():
    from interp import positions

    constructors = {  # the typed positions' constructors: public functions of interp.positions returning a Position
        n
        for n, f in vars(positions).items()
        if inspect.isfunction(f) and f.__module__ == positions.__name__ and not n.startswith("_")
        and f.__annotations__.get("return") in ("Position", positions.Position)
    }  # fmt: skip
    assert set(POSITIONS) <= constructors
    for name in (*constructors, "Site"):
        assert name in interp.__all__ and name in reft.__all__, name
        assert getattr(reft, name) is getattr(interp, name), name


@pytest.mark.parametrize(("pkg", "name"), [(interp, n) for n in interp.MOVED] + [(reft, n) for n in reft.MOVED])
def test_old_names_resolve_with_a_deprecation_warning_naming_their_home(pkg, name):
    home = pkg.MOVED[name]
    with pytest.warns(DeprecationWarning, match=rf"{pkg.__name__}\.{name} .*`from {re.escape(home)} import {name}`"):
        obj = getattr(pkg, name)
    assert obj is getattr(sys.modules[home], name)
    assert name not in pkg.__all__


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        interp.nope  # noqa: B018
    with pytest.raises(ImportError):
        exec("from reft import nope", {})


def _used_names(sources: list[str] | None = None) -> set[tuple[str, str]]:
    """(module, name) of every ``from interp... import name`` and ``interp.name`` / ``reft.name`` in ``sources``
    (default: the notebooks, the experiments and the README's Python blocks)."""
    if sources is None:
        sources = [p.read_text() for p in [*ROOT.glob("notebooks/*.py"), *ROOT.glob("experiments/*.py")]]
        sources += re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    used = set()
    for src in sources:
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] in ("interp", "reft"):
                used |= {(node.module, a.name) for a in node.names}
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id in ("interp", "reft"):
                    used.add((node.value.id, node.attr))
    return used


def test_names_the_notebooks_and_readme_use_resolve_without_a_warning():
    used = _used_names()
    assert ("interp", "load") in used and ("interp.viz", "save") in used  # the scan sees both kinds of use
    for module, name in sorted(used):
        mod = importlib.import_module(module)
        if importlib.util.find_spec(f"{module}.{name}") if hasattr(mod, "__path__") else False:
            continue  # a submodule: `from reft.cli import compare`
        if name not in getattr(mod, "__all__", [name]):
            pytest.fail(f"{module}.{name} is used by a notebook or the README but is not in {module}.__all__")
        _resolve_quietly(mod, name)


def test_the_repository_itself_uses_no_deprecated_name():
    files = [p for d in ("interp", "reft", "tests", "bench") for p in (ROOT / d).rglob("*.py")]
    used = _used_names([p.read_text() for p in files])
    old = {(pkg.__name__, n) for pkg in (interp, reft) for n in pkg.MOVED}
    assert not used & old, sorted(used & old)


# Optional parameters a researcher naturally passes by position; every other option is keyword-only.
POSITIONAL_OPTIONS = {
    "load": {"name_or_path"},
    "interchange": {"source"},
    "attribution_patch": {"source"},
    "sweep_das": {"test"},
    "fit_mdas": {"isolate"},  # data, like cause: fit_mdas(lm, cause, isolate, at=...)
    "first": {"n"},
    "last": {"n"},
    "token": {"occurrence"},
}


def test_options_of_public_verbs_are_keyword_only():
    for name in interp.__all__:
        f = getattr(interp, name)
        if not inspect.isfunction(f):
            continue
        positional = {
            p.name
            for p in inspect.signature(f).parameters.values()
            if p.default is not p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        }
        assert positional <= POSITIONAL_OPTIONS.get(name, set()), (name, positional)


def test_the_library_never_imports_its_command_line():
    """Importing both packages, every task loader and the experiment script loads no ``interp.cli`` module."""
    code = """
import runpy, sys
import interp, reft, interp.viz
from interp.tasks import registry
for kind in ("patch", "das"):
    for name in registry.names(kind):
        registry.get(name, kind)
script = runpy.run_path("experiments/atp_vs_exact.py", run_name="experiment")
try:
    script["main"](["--help"])
except SystemExit as e:
    assert e.code == 0, e.code
cli = sorted(m for m in sys.modules if m.startswith(("interp.cli", "reft.cli")))
assert not cli, cli
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "--components" in r.stdout  # the experiment's options parsed


# ------------------------------------------------------------------------------------------- results in a notebook


class _Words:
    """A stand-in tokenizer: token ``i`` reads as `` w<i>``."""

    def decode(self, ids):
        return "".join(f" w{i}" for i in ids)


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    return tiny_lm("llama")


def _pairs(lm, n=4):
    gen = torch.Generator().manual_seed(0)
    return torch.randint(3, 97, (n, 6), generator=gen), torch.randint(3, 97, (n, 6), generator=gen)


def test_dii_result_repr_is_a_summary_with_shape_and_top_tokens(lm):
    base, source = _pairs(lm)
    res = interchange(lm, base, source, at=Site("resid_post", 1, last()))
    text = repr(res)
    assert text.startswith("DIIResult((4, 97) logits at the last token") and len(text) < 200, text
    assert "tensor(" not in text and str(int(res.logits[0].argmax())) in text  # prompt 0's top token id
    html = res._repr_html_()
    assert html.count("<tr>") == 1 + 4 and "top 3" in html and "tensor(" not in html

    many = DIIResult(torch.randn(64, 3, 500), SimpleNamespace(tokenizer=_Words()))  # several positions, words
    text = repr(many)
    assert "(64, 3, 500) logits at 3 positions per prompt" in text and len(text) < 200, text
    top = int(many.logits[0, -1].argmax())
    assert f"' w{top}'" in text and text.endswith(", …)")  # quoted words, 3 prompts then an ellipsis
    html = many._repr_html_()
    assert html.count("<tr>") == 1 + 8 + 1 and "56 more prompts" in html and len(html) < 3000


def test_grid_repr_and_html_table(lm):
    values = torch.linspace(-0.5, 1.0, 18 * 15).reshape(18, 15)
    values[0, 0] = float("nan")
    grid = Grid("effect", values, {"layers": list(range(18)), "positions": [f"t{i}" for i in range(15)]},
                meta={"component": "resid_post", "clean_accuracy": 1.0})  # fmt: skip
    text = repr(grid)
    assert len(text) < 250 and "tensor(" not in text, text
    assert "layers [0, 1, 2, …, 17] (18)" in text and "best layer 17, position 't14': 1.00" in text
    html = grid._repr_html_()
    assert html.count("<table") == 1 and html.count("<tr>") == 1 + 18
    rows = html.split("<tr>")
    assert rows[2].startswith("<th>17</th>") and rows[-1].startswith("<th>0</th>")  # layer 0 at the bottom
    assert "#bdbdbd" in rows[-1] and ">nan<" in rows[-1]  # the NaN cell is grey

    sweep = Grid("iia", torch.rand(2, 3, 2), {"ranks": [1, 4], "layers": [0, 1, 2], "positions": ["a", "last"]})
    assert sweep._repr_html_().count("<table") == 2 and "rank 4" in sweep._repr_html_()
    big = Grid("iia", torch.rand(100, 100), {"layers": list(range(100)), "positions": list(range(100))})
    assert "<table" not in big._repr_html_() and len(repr(big)) < 250


def test_das_result_repr_names_site_rank_and_iia(lm):
    base, _ = _pairs(lm, 8)
    from interp.causal import CausalModel

    model = CausalModel({"a": None, "G": (("a",), lambda a: a >= 50), "O": (("G",), lambda g: 5 if g else 6)})
    data = model.counterfactuals(lambda r: {"a": r.randrange(10, 90)}, variables="G", n=16, seed=0, changed_only=True)
    train, test = data.render(lambda s: [1, s["a"], 7], int, candidates=[5, 6]).split(0.5, seed=0)
    das = interp.fit_das(lm, train, at=Site("resid_post", 1, first(1) + last()), rank=2, test=test, steps=2,
                         progress=False)  # fmt: skip
    text = repr(das)
    assert text.startswith("DASResult(Site('resid_post', 1, first(1)+last()), LowRankRotation rank 2 of 32"), text
    assert f"test {das.iia_test:.2f}" in text and "variables ('G',)" in text and len(text) < 250
    assert "tensor(" not in text and "Parameter" not in text
