"""``headscope arithmetic``: arithmetic heads per operation, with layer and neuron analysis."""

from __future__ import annotations

from ...circuits.arithmetic.heads import MODES
from ...circuits.arithmetic.prompts import OPS
from .base import Command
from .options import INTS, batch_run, choice_list, emit, heads_or_count, interval_options, ray_options


def arguments(p) -> None:
    p.add_argument("--ops", type=choice_list(OPS, "operation"), default=tuple(OPS), help="comma-separated operations")
    p.add_argument("--digits", type=int, default=1, help="digits of the operands (1 to 3)")
    p.add_argument("--template", default="fewshot", help="fewshot, bare, or a template file with {a} {op} {b}")
    p.add_argument("--n", type=int, default=40, help="prompts per operation before filtering to solved ones")
    p.add_argument("--modes", type=choice_list(MODES, "ablation mode"), default=MODES, help="ablation modes")
    p.add_argument("--k", type=INTS, default=[1, 2, 4, 8], help="numbers of top heads masked in the control")
    p.add_argument("--control-seeds", type=int, default=3, help="random head sets per k")
    p.add_argument("--neuron-prompts", type=int, default=8, help="solved prompts per operation for the neuron "
                                                                 "analysis (0: none)")
    p.add_argument("--neuron-layers", type=INTS, default=None, help="comma-separated layers whose neurons are scored "
                                                                    "(default: all)")
    p.add_argument("--cna-heads", type=heads_or_count, default=1, help="a number k (each operation's top k heads) or "
                                                                      "heads 'layer-head,...' ablated for comparative "
                                                                      "neuron analysis")
    interval_options(p, " of the head effects over the prompts")
    ray_options(p)


def run(args) -> None:
    from ...circuits.arithmetic.heads import Unsolved, arithmetic_heads
    from ...circuits.arithmetic.prompts import operand_pairs, read_template
    from ...circuits.arithmetic.prompts import AccuracyTable
    from ...probes import HeadscopeError

    operand_pairs(args.ops[0], args.digits), read_template(args.template)  # bad options stop before the model loads
    with batch_run(args) as (model, cluster, shards):
        try:
            result = arithmetic_heads(model, args.ops, digits=args.digits, template=args.template, n=args.n,
                                      seed=args.seed, modes=args.modes, ks=tuple(args.k), seeds=args.control_seeds,
                                      neuron_prompts=args.neuron_prompts, neuron_layers=args.neuron_layers,
                                      cna_heads=args.cna_heads, batch_size=args.batch_size, interval=args.interval,
                                      level=args.level, cluster=cluster, shards=shards)
        except Unsolved as err:
            AccuracyTable(err.accuracy, {"model": args.model, "unsolved": str(err)}).save(args.out,
                                                                                          overwrite=args.overwrite)
            raise HeadscopeError(f"{err} (accuracy table -> {args.out}/accuracy.parquet)") from None
        result.save(args.out, overwrite=args.overwrite)
    acc = result.accuracy[result.accuracy["template"] == result.meta["template"]]
    zero = result.frame[result.frame["mode"] == result.meta["modes"][0]]
    tops = {op: part.nlargest(3, "effect") for op, part in zero.groupby("op", sort=False)}
    emit(args, {"out": args.out, "accuracy": {r.op: r.accuracy for r in acc.itertuples()},
                "top": {op: [{"head": f"L{r.layer}H{r.head}", "effect": r.effect} for r in top.itertuples()]
                        for op, top in tops.items()}},
         "accuracy: " + ", ".join(f"{r.op} {r.accuracy:.2f}" for r in acc.itertuples()) + "\n"
         + "".join(f"{op}: top heads " + ", ".join(f"L{r.layer}H{r.head} {r.effect:.2f}" for r in top.itertuples())
                   + "\n" for op, top in tops.items()) + f"-> {args.out}")


COMMANDS = [Command("arithmetic", "arithmetic heads per operation, with layer and neuron analysis", arguments, run)]
