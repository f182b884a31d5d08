"""``headscope trace`` (causal tracing, one prompt or averaged over facts) and ``headscope patch``."""

from __future__ import annotations

from ...circuits.causal.patching import KINDS as PATCH_KINDS, METHODS
from ...circuits.causal.tracing import KINDS as TRACE_KINDS
from .base import Command
from .options import batch_run, choice_list, emit, interval_options, load, number_or_text, ray_options


def trace_arguments(p) -> None:
    p.add_argument("--prompt", help="the prompt to trace")
    p.add_argument("--subject", help="the subject to corrupt, as it appears in the prompt")
    p.add_argument("--target", default=None, help="target token (default: the model's top prediction)")
    p.add_argument("--facts", default=None, help="JSONL facts (subject, prompt or template, target) to average over")
    p.add_argument("--max-facts", type=int, default=None, help="trace a seeded sample of this many known facts")
    p.add_argument("--kinds", type=choice_list(TRACE_KINDS, "kind"), default=TRACE_KINDS,
                   help="comma-separated: " + ", ".join(TRACE_KINDS))
    p.add_argument("--samples", type=int, default=10, help="noised copies of the prompt")
    p.add_argument("--noise", type=number_or_text, default="3sd",
                   help="noise scale: a multiple of the embedding std (3sd) or a number")
    p.add_argument("--window", type=int, default=None, help="layers restored around each layer (default n_layers/5)")
    interval_options(p, " over the facts (with --facts)")
    ray_options(p)


def trace(args) -> None:
    from ...probes import HeadscopeError

    options = dict(kinds=args.kinds, samples=args.samples, noise=args.noise, window=args.window, seed=args.seed,
                   batch_size=args.batch_size)
    if args.facts:
        from ...circuits.causal.fact_effects import average_indirect_effects, read_facts

        facts = read_facts(args.facts)
        with batch_run(args) as (model, cluster, shards):
            result = average_indirect_effects(model, facts, max_facts=args.max_facts, interval=args.interval,
                                              level=args.level, cluster=cluster, shards=shards, **options)
            result.save(args.out, overwrite=args.overwrite)
        meta = result.meta
        emit(args, {"out": args.out, **{k: meta[k] for k in ("n_facts", "n_dropped", "n_facts_given", "interval")}},
             f"averaged over {meta['n_facts']} known facts ({meta['n_dropped']} of {meta['n_facts_given']} dropped "
             f"as unknown) -> {args.out}")
        return
    if not args.prompt or args.subject is None:
        raise HeadscopeError("trace needs --prompt and --subject (or --facts FILE.jsonl)")
    if args.ray:
        raise HeadscopeError("--ray runs the batch form, trace --facts FILE.jsonl; one prompt's trace runs here")
    from ...circuits.causal.tracing import trace as causal_trace

    result = causal_trace(load(args), args.prompt, args.subject, args.target, **options)
    result.save(args.out, overwrite=args.overwrite)
    meta = result.meta
    emit(args, {"out": args.out, **{k: meta[k] for k in ("target", "high_score", "low_score", "notes")}},
         "".join(f"note: {note}\n" for note in meta["notes"])
         + f"target {meta['target']!r}: clean {meta['high_score']:.4f}, corrupted {meta['low_score']:.4f} -> {args.out}")


def patch_arguments(p) -> None:
    p.add_argument("--clean", required=True, help="the clean prompt")
    p.add_argument("--corrupted", required=True, help="the corrupted prompt (same token length)")
    p.add_argument("--target", required=True, help="the target token")
    p.add_argument("--foil", default=None, help="with a foil the metric is the logit difference target - foil")
    p.add_argument("--kinds", type=choice_list(PATCH_KINDS, "kind"), default=("resid", "attn", "mlp", "heads"),
                   help="comma-separated: " + ", ".join(PATCH_KINDS))
    p.add_argument("--method", default="activation", choices=METHODS,
                   help="activation (exact) or attribution (gradient estimate)")


def patch(args) -> None:
    from ...circuits.causal.patching import activation_patching, attribution_patching

    model = load(args)
    if args.method == "activation":
        result = activation_patching(model, args.clean, args.corrupted, args.target, args.foil, kinds=args.kinds,
                                     batch_size=args.batch_size)
    else:
        result = attribution_patching(model, args.clean, args.corrupted, args.target, args.foil, kinds=args.kinds)
    result.save(args.out, overwrite=args.overwrite)
    meta = result.meta
    emit(args, {"out": args.out, "method": args.method, **{k: meta[k] for k in ("metric", "clean_metric", "corrupted_metric")}},
         f"{args.method} patching, {meta['metric']}: clean {meta['clean_metric']:.4f}, "
         f"corrupted {meta['corrupted_metric']:.4f} -> {args.out}")


COMMANDS = [Command("trace", "causal tracing (ROME) of one prompt, or averaged over a fact file", trace_arguments, trace),
            Command("patch", "activation (or attribution) patching of a clean into a corrupted prompt",
                    patch_arguments, patch)]
