"""``headscope retrieval`` (retrieval-head scores) and ``retrieval-mask`` (top-k vs random heads masked)."""

from __future__ import annotations

import math

from ...circuits.retrieval.haystack import TEMPLATES
from ...circuits.retrieval.masking import MODES as MASK_MODES
from ...circuits.retrieval.scores import MODES
from .base import Command
from .options import FLOATS, INTS, batch_run, choice_list, emit, interval_options, load, ray_options


def needle_tests(p, lengths: str = "256,512,1024,2048", depths: str = "0,0.25,0.5,0.75,1") -> None:
    p.add_argument("--lengths", type=INTS, default=INTS(lengths), help="comma-separated prompt lengths in tokens")
    p.add_argument("--depths", type=FLOATS, default=FLOATS(depths), help="comma-separated needle depths in [0, 1]")
    p.add_argument("--needles", default=None, help="JSONL needles (needle, question, real_needle); "
                                                   "default: the shipped ones")
    p.add_argument("--needles-per-cell", type=int, default=1, help="needles tested at each length and depth")
    p.add_argument("--template", default="auto", choices=TEMPLATES,
                   help="chat (the model's chat template), plain, or auto (chat when the model has one)")
    p.add_argument("--max-new-tokens", type=int, default=50, help="greedy tokens generated per test")


def finite(value):
    """A float for JSON, None where it is undefined (NaN)."""
    return None if value is None or math.isnan(value) else float(value)


def grid(args, model):
    from ...circuits.retrieval.haystack import needle_grid, read_needles

    chat = None if args.template == "auto" else args.template == "chat"
    return needle_grid(model, args.lengths, args.depths, read_needles(args.needles), seed=args.seed, chat=chat,
                       needles_per_cell=args.needles_per_cell)


def scores_arguments(p) -> None:
    needle_tests(p)
    ray_options(p)
    p.add_argument("--mode", default="greedy", choices=MODES, help="greedy (the reference's score) or teacher-forced")
    p.add_argument("--threshold", type=float, default=0.1, help="score above which a head is a retrieval head")
    interval_options(p)


def scores(args) -> None:
    from ...circuits.retrieval.haystack import grid_cells, read_needles
    from ...circuits.retrieval.scores import retrieval_scan

    # a malformed needle file or grid stops here, before the model loads
    cells = grid_cells(args.lengths, args.depths, read_needles(args.needles), seed=args.seed,
                       needles_per_cell=args.needles_per_cell)
    chat = None if args.template == "auto" else args.template == "chat"
    with batch_run(args) as (model, cluster, shards):
        result = retrieval_scan(model, cells, chat=chat, mode=args.mode, max_new_tokens=args.max_new_tokens,
                                threshold=args.threshold, interval=args.interval, level=args.level, seed=args.seed,
                                cluster=cluster, shards=shards)
        result.save(args.out, overwrite=args.overwrite)
    heads = result.heads()
    top = ", ".join(f"L{l}H{h} {s:.2f}" for l, h, s in heads[["layer", "head", "score"]].head(5).itertuples(index=False))
    emit(args, {"out": args.out, "n_kept": result.meta["n_kept"], "n_tests": result.meta["n_tests"],
                "share_above": float((heads["score"] > args.threshold).mean()), "interval": result.meta["interval"],
                "top": [{"head": f"L{l}H{h}", "score": s, "ci_low": finite(lo), "ci_high": finite(hi)}
                        for l, h, s, lo, hi in
                        heads[["layer", "head", "score", "ci_low", "ci_high"]].head(5).itertuples(index=False)]},
         f"{result.meta['n_kept']} of {result.meta['n_tests']} tests counted; "
         f"{(heads['score'] > args.threshold).mean():.1%} of heads above {args.threshold}; top: {top} -> {args.out}")


def mask_arguments(p) -> None:
    needle_tests(p, lengths="512,1024", depths="0.1,0.5,0.9")
    p.add_argument("--heads", required=True, help="retrieval_heads.json ({\"layer-head\": [scores]}) or its run dir")
    p.add_argument("--k", type=INTS, default=[1, 5, 10, 20], help="comma-separated numbers of heads to mask")
    p.add_argument("--modes", type=choice_list(MASK_MODES, "mode"), default=MASK_MODES,
                   help="uniform (query zeroed, the reference's) and/or zero")
    p.add_argument("--seeds", type=int, default=3, help="random head sets per k")
    p.add_argument("--threshold", type=float, default=0.1, help="heads above it are not drawn as random heads")
    interval_options(p)


def mask(args) -> None:
    from ...circuits.retrieval.haystack import read_needles
    from ...circuits.retrieval.masking import masking_test, read_head_scores

    head_scores = read_head_scores(args.heads)
    read_needles(args.needles)
    model = load(args)
    result = masking_test(model, grid(args, model), head_scores, args.k, modes=args.modes, seeds=args.seeds,
                          threshold=args.threshold, max_new_tokens=args.max_new_tokens, seed=args.seed,
                          interval=args.interval, level=args.level)
    result.save(args.out, overwrite=args.overwrite)
    c = result.curves()
    rows = []
    for (mode, k), part in c[c["kind"] != "none"].groupby(["mode", "k"]):
        top, rand = part[part["kind"] == "top"].iloc[0], part[part["kind"] == "random"].iloc[0]
        rows.append({"mode": mode, "k": int(k), "top": top["accuracy"], "random": rand["accuracy"],
                     "top_ci": [finite(top["ci_low"]), finite(top["ci_high"])],
                     "random_ci": [finite(rand["ci_low"]), finite(rand["ci_high"])]})
    none = c[c["kind"] == "none"].iloc[0]
    info = result.meta["interval"]
    band = lambda ci: "[undefined]" if None in ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"
    emit(args, {"out": args.out, "none": float(none["accuracy"]), "none_ci": [finite(none["ci_low"]),
                finite(none["ci_high"])], "masked": rows, "interval": info,
                "interval_over_tests": result.meta["interval_over_tests"]},
         f"no heads masked: {none['accuracy']:.3f}\n"
         + "".join(f"{r['mode']} k={r['k']}: top {r['top']:.3f} {band(r['top_ci'])}, random {r['random']:.3f} "
                   f"{band(r['random_ci'])}\n" for r in rows)
         + f"({info['level']:.0%} {info['method']} intervals: random over {info['n']} seeds, top over "
           f"{result.meta['n_tests']} tests) -> {args.out}")


COMMANDS = [Command("retrieval", "retrieval-head scores from needle-in-a-haystack tests", scores_arguments, scores),
            Command("retrieval-mask", "mask the top-k retrieval heads vs k random other heads", mask_arguments, mask)]
