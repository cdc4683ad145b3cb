"""Attribution patching (AtP) against exact activation patching on IOI, per component, on the embedded model.

Run from the repository root (about a minute per component at --n 8 on a 2-core CPU):

    python experiments/atp_vs_exact.py --n 8
    python experiments/atp_vs_exact.py --n 16 --components attn_out,mlp_out --k 5
    python experiments/atp_vs_exact.py --n 16 --components resid_post --methods atp,atp*   # the demo grid, AtP*

Prints one line per component (cells, Pearson r between the two grids, how many of the top-k cells by |effect|
they share, seconds for each, the worst cell) and then each component's largest misses as
(layer, position, exact, AtP). The README's AtP table and notebook 01 come from this comparison.
"""

from __future__ import annotations

import argparse

import interp
from interp.attribution import compare_with_patching, report
from interp.tasks import IOI_POSITIONS, ioi_pairs

COMPONENTS = "resid_pre,resid_post,attn_out,mlp_out"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=16, help="IOI pairs (default 16, as `interp patch`)")
    p.add_argument("--components", default=COMPONENTS, help=f"comma-separated components (default {COMPONENTS})")
    p.add_argument("--k", type=int, default=10, help="top cells compared by |effect| (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the IOI pairs (default 0)")
    p.add_argument("--methods", default="atp", help="comma-separated: atp and/or atp* (AtP*: the QK fix)")
    p.add_argument("--grad-drop", action="store_true", help="AtP* rows rank their top-k by GradDrop's magnitudes")
    p.add_argument("--model", default=None, help="local HF model path or id (default: embedded Gemma-3-270M)")
    args = p.parse_args(argv)
    if args.n < 1 or args.k < 1:
        p.error(f"--n {args.n} and --k {args.k}: expected at least 1 each")
    components = [c.strip() for c in args.components.split(",") if c.strip()]
    lm = interp.load(args.model)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    pairs = ioi_pairs(args.n, seed=args.seed)
    kw = dict(components=components, positions=IOI_POSITIONS, k=args.k, methods=methods, grad_drop=args.grad_drop)
    comps = compare_with_patching(lm, pairs, progress=True, **kw)
    print(report(comps))
    for c in comps:
        misses = [(w["layer"], w["position"], round(w["exact"], 2), round(w["atp"], 2)) for w in c.worst(5)]
        print(f"{c.component} ({c.atp.method}): largest misses", misses)
        print(f"  {c.atp.method} time over exact: {c.atp_seconds / c.exact_seconds:.3f}")


if __name__ == "__main__":
    main()
