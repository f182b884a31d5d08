"""``headscope steer`` (a steering vector swept over strengths x layers, with controls) and ``headscope hydra``
(direct and total effects of every component, and the self-repair between them)."""

from __future__ import annotations

from ...circuits.heads.ablation import MODES, POSITIONS
from ...circuits.steering.apply import PLACES
from ...circuits.steering.self_repair import KINDS, METRICS as HYDRA_METRICS
from ...circuits.steering.vectors import METHODS, POSITIONS as VECTOR_POSITIONS
from .base import Command
from .options import FLOATS, INTS, at_least, batch_run, choice_list, emit, interval_options, load, ray_options


def steer_arguments(p) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--pairs", help='JSONL contrast pairs {"positive": ..., "negative": ...} to make the vector '
                                        "from (a shipped set by name, e.g. sentiment-pairs)")
    source.add_argument("--vector", help="a saved vector: the --out of an earlier steer run (or a saved vector result)")
    p.add_argument("--method", default="mean-diff", choices=METHODS,
                   help="mean-diff: mean of positive - negative (CAA); actadd: the first pair, per position; "
                        "icv: in-context vector of the pairs as demonstrations (negative -> positive)")
    p.add_argument("--position", default="last", choices=VECTOR_POSITIONS,
                   help="mean-diff: the residual stream at each text's last token, or its mean over the text")
    p.add_argument("--layers", type=INTS, default=None,
                   help="comma-separated layers to make and sweep the vector at (default: the middle layer; "
                        "icv: every layer at once)")
    p.add_argument("--strengths", type=FLOATS, default=FLOATS("0,1,2,4,8"), help="comma-separated strengths")
    p.add_argument("--prompts", required=True,
                   help="JSONL {prompt, target, foil} for the logit-difference behaviour (or prompts, with --keywords)")
    p.add_argument("--keywords", type=lambda text: [k for k in text.split(",")], default=None,
                   help="comma-separated keywords: the behaviour becomes the fraction of generations holding one")
    p.add_argument("--places", default="all", choices=PLACES,
                   help="where the vector is added: every prompt position, the positions that produce new tokens, "
                        "or both")
    p.add_argument("--generate", type=at_least(0, "--generate"), default=2,
                   help="prompts whose steered continuations are written (all of them with --keywords)")
    p.add_argument("--max-new-tokens", type=at_least(1, "--max-new-tokens"), default=24, help="tokens generated")
    p.add_argument("--cost-tokens", type=at_least(2, "--cost-tokens"), default=64,
                   help="tokens of each held-out passage the cost reads")
    ray_options(p)


def steer(args) -> None:
    from ...circuits.steering import SteeringSweep, SteeringVector, read_pairs, steer_sweep
    from ...circuits.steering.vectors import from_frames, make_vector, vector_unit
    from ...circuits.prompt_sets import read_prompt_set
    from ...probes import HeadscopeError, Model, load_result
    from ...probes.engine.units import Unit, run_units

    pairs = read_pairs(args.pairs) if args.pairs else None
    prompts = args.prompts if args.keywords is not None else read_prompt_set(args.prompts)
    if args.keywords is None:
        prompts.require("foil", "the logit-difference behaviour (or give --keywords)")
    vector = None
    if args.vector:
        vector = load_result(args.vector)
        vector = vector.steering_vector if isinstance(vector, SteeringSweep) else vector
        if not isinstance(vector, SteeringVector):
            raise HeadscopeError(f"{args.vector} holds a {vector.kind} result, not a steering vector")
    with batch_run(args) as (model, cluster, shards):
        if vector is None:
            how = {"method": args.method, "pairs": pairs, "layers": args.layers, "position": args.position}
            vector = (make_vector(model, **how) if isinstance(model, Model) else
                      from_frames(run_units([Unit("vector", vector_unit, how)], load=model, cluster=cluster,
                                            shards=shards, desc="vector")[0]))
        sweep = steer_sweep(model, vector, prompts, layers=args.layers if args.vector else None,
                            strengths=args.strengths, places=args.places, keywords=args.keywords,
                            n_generate=args.generate, max_new_tokens=args.max_new_tokens, cost_tokens=args.cost_tokens,
                            seed=args.seed, batch_size=args.batch_size, cluster=cluster, shards=shards)
        sweep.save(args.out, args.overwrite)
    best = sweep.frame[sweep.frame["control"] == "vector"].nlargest(1, "behaviour").iloc[0]
    emit(args, {"out": args.out, "method": vector.meta["method"],
                "best": {"layer": int(best["layer"]), **{k: float(best[k]) for k in ("strength", "behaviour", "cost")}}},
         f"steering sweep -> {args.out}/report.html (largest behaviour {best['behaviour']:.3f} at layer "
         f"{best['layer']}, strength {best['strength']:g}; cost {best['cost']:.3f})")


def hydra_arguments(p) -> None:
    p.add_argument("--prompts", required=True, help="JSONL {prompt, target, foil (logit_diff), corrupted (resample)}")
    p.add_argument("--ablation", default="zero", choices=MODES, help="how a component is ablated for its total effect")
    p.add_argument("--metric", default="logit_diff", choices=HYDRA_METRICS,
                   help="logit_diff (target - foil) or logit (the target's centred logit), read at the last position")
    p.add_argument("--positions", default="all", choices=POSITIONS, help="positions at which components are ablated")
    p.add_argument("--components", type=choice_list(KINDS, "component kind"), default=KINDS,
                   help="comma-separated kinds of component to check")
    interval_options(p, " on each component's mean effects")


def hydra(args) -> None:
    import pandas as pd

    from ...circuits.prompt_sets import read_prompt_set
    from ...circuits.steering import hydra as check

    prompts = read_prompt_set(args.prompts)
    if args.metric == "logit_diff":
        prompts.require("foil", "the logit difference")
    if args.ablation == "resample":
        prompts.require("corrupted", "resample ablation")
    result = check(load(args), prompts, ablation=args.ablation, metric=args.metric, positions=args.positions,
                   components=tuple(args.components), interval=args.interval, level=args.level,
                   batch_size=args.batch_size)
    result.save(args.out, args.overwrite)
    top = result.frame.nlargest(5, "self_repair")
    emit(args, {"out": args.out, "most_repaired": [
        {"component": r.component, "layer": int(r.layer), "head": None if pd.isna(r.head) else int(r.head),
         "self_repair": r.self_repair} for r in top.itertuples()]}, f"Hydra check -> {args.out}/report.html")


COMMANDS = [
    Command("steer", "a steering vector (from contrast pairs or saved) swept over strengths x layers, beside a random "
                     "direction and the zero vector: behaviour, cost and generations", steer_arguments, steer),
    Command("hydra", "every attention, MLP and head's direct and total effect, and the self-repair between them",
            hydra_arguments, hydra),
]
