"""``headscope circuit``: a circuit found from data (edge scores, faithfulness curve, graph, report)."""

from __future__ import annotations

from ...circuits.edges.corruption import CORRUPTIONS
from ...circuits.edges.discovery import METHODS
from ...circuits.edges.faithfulness import BUILDERS
from ...circuits.edges.prompts import EDGE_METRICS
from .base import Command
from .options import at_least, batch_run, emit, interval_options, ray_options


def arguments(p) -> None:
    p.add_argument("--prompts", required=True, help="JSONL prompt set (prompt, target, foil, corrupted; optional "
                                                    "targets/foils answer sets) or a shipped set: ioi, greater-than")
    p.add_argument("--method", default="eap", choices=METHODS,
                   help="edge scores: eap (Syed et al.), eap-ig (Hanna et al.) or exact patching of every edge "
                        "(one forward row per edge and prompt: for small models)")
    p.add_argument("--steps", type=at_least(1, "--steps"), default=5, help="EAP-IG interpolation steps")
    p.add_argument("--corruption", default="prompt", choices=CORRUPTIONS,
                   help="an edge's corrupted value: from each record's corrupted prompt, or each writer's mean "
                        "output over the prompts' tokens (mean ablation; no corrupted prompts needed)")
    p.add_argument("--metric", default="auto", choices=("auto",) + EDGE_METRICS,
                   help="what an edge's effect measures; auto: prob_diff when the prompts give answer sets "
                        "(greater-than), else logit_diff; kl: the divergence from the clean next-token "
                        "distribution (with eap-ig or exact)")
    p.add_argument("--edges", type=at_least(0, "--edges"), default=200, help="edges in the chosen circuit")
    p.add_argument("--build", default="top", choices=tuple(BUILDERS),
                   help="top: the edges of largest |effect|; greedy: grown from the logits (both then pruned)")
    p.add_argument("--seeds", type=at_least(2, "--seeds"), default=3, help="random circuits per size (the control)")
    p.add_argument("--no-exact", action="store_true", help="skip exact patching of the circuit's edges")
    interval_options(p, " over prompts")
    ray_options(p)


def run(args) -> None:
    from ...circuits.edges.discovery import find_circuit
    from ...circuits.edges.prompts import check_metric
    from ...circuits.prompt_sets import answer_metric, read_prompt_set

    prompts = read_prompt_set(args.prompts)  # a malformed file stops here, before the model loads
    metric = args.metric
    if metric == "auto":
        metric = answer_metric(prompts.records)
    check_metric(metric, args.method)
    if args.corruption == "prompt":
        prompts.require("corrupted", "edge patching from corrupted prompts")
    if metric == "logit_diff":
        prompts.require("foil", "the logit difference")
    with batch_run(args) as (model, cluster, shards):
        result = find_circuit(model, prompts, method=args.method, metric=metric, corruption=args.corruption,
                              steps=args.steps, edges=args.edges, build=args.build, seeds=args.seeds,
                              exact=not args.no_exact, interval=args.interval, level=args.level, seed=args.seed,
                              batch_size=args.batch_size, cluster=cluster, shards=shards)
        result.save(args.out, overwrite=args.overwrite)
    m = result.meta
    reach = result.faithfulness[result.faithfulness["faithfulness"] >= 0.8]
    at80 = None if reach.empty else int(reach["n_edges"].iloc[0])
    emit(args, {"out": args.out, "n_edges": m["n_edges"], "circuit_edges": m["kept_edges"],
                "faithfulness": m["circuit_faithfulness"], "cpr": m["cpr"], "cmd": m["cmd"], "edges_for_80": at80,
                "heads": result.heads()[:10]},
         f"{m['method'].upper()} on {m['n_prompts']} prompts ({metric}); {m['graph']}\n"
         f"circuit: {m['kept_edges']} edges, faithfulness {m['circuit_faithfulness']:.3f}; "
         f"CPR {m['cpr']:.3f}, CMD {m['cmd']:.3f}; 80% faithful from "
         + ("no size tried" if at80 is None else f"{at80:,} edges") + "\n"
         f"heads: {', '.join(result.heads()[:10]) or 'none'}\n-> {args.out}")


COMMANDS = [Command("circuit", "a circuit from data: edge attribution (EAP, EAP-IG) or exact patching, "
                               "faithfulness curve with random controls", arguments, run)]
