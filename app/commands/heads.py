"""``headscope heads``: the batch head report over models and prompt sets."""

from __future__ import annotations

from ...circuits.heads.ablation import METRICS, MODES, POSITIONS
from .base import Command
from .options import cluster, emit, placement, ray_options


def arguments(p) -> None:
    p.add_argument("--prompts", nargs="+", required=True, help="JSONL prompt sets (prompt, target, foil, corrupted)")
    p.add_argument("--ablation", default="zero", choices=MODES, help="how a head is ablated")
    p.add_argument("--metric", default="logprob", choices=METRICS, help="what the ablation effect measures")
    p.add_argument("--positions", default="all", choices=POSITIONS, help="positions at which heads are ablated")
    p.add_argument("--gradient", action="store_true", help="add gradient importance (Michel et al.)")
    p.add_argument("--pruning-curve", action="store_true", help="add the pruning curve with random controls")
    p.add_argument("--chunk-size", type=int, default=16, help="prompts per resumable chunk")
    ray_options(p)


def run(args) -> None:
    import pandas as pd

    from ...circuits.heads.report import head_report

    out = head_report(args.model, args.prompts, args.out, mode=args.ablation, metric=args.metric,
                      positions=args.positions, gradient=args.gradient, pruning=args.pruning_curve, seed=args.seed,
                      device=args.device, dtype=args.dtype, batch_size=args.batch_size, chunk_size=args.chunk_size,
                      overwrite=args.overwrite, placement=placement(args), cluster=cluster(args))
    top = pd.read_parquet(out / "heads.parquet").nlargest(5, "effect")
    emit(args, {"out": str(out), "top": [{"model": r.model, "prompt_set": r.prompt_set, "head": f"L{r.layer}H{r.head}",
                                          "effect": r.effect, "ci_low": r.ci_low, "ci_high": r.ci_high}
                                         for r in top.itertuples()]},
         f"head report -> {out}/report.html")


COMMANDS = [Command("heads", "head ablation, importance and detectors for prompt sets: a batch report", arguments, run,
                    model="several")]
