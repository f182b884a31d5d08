"""``headscope composition`` (alias ``svd``): composition scores, SVD channels and the head graph; ``laundry``."""

from __future__ import annotations

import argparse

from ...circuits.composition.scores import KINDS
from .base import Command
from .options import FLOATS, INTS, choice_list, emit, load, one_head


def head_scores(path: str):
    """A run directory with ``heads.parquet``, or a Parquet file of head scores: the file (read by the command)."""
    from pathlib import Path

    file = Path(path) / "heads.parquet" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise argparse.ArgumentTypeError(f"no head scores at {path} (a run dir with heads.parquet, or a Parquet file)")
    return file


def scores_arguments(p) -> None:
    p.add_argument("--kinds", type=choice_list(KINDS, "composition kind"), default=KINDS,
                   help="comma-separated composition kinds")
    p.add_argument("--top", type=int, default=50, help="pairs per kind (by z-score) whose channels are listed")
    p.add_argument("--components", type=int, default=4, help="components listed per pair")
    p.add_argument("--no-fold-norm", action="store_true", help="use the raw weights (TransformerLens's scores)")
    p.add_argument("--min-z", type=float, default=5.0, help="graph edges: pairs at least this many sd above chance")
    p.add_argument("--importance", type=head_scores, default=None,
                   help="a run dir (heads.parquet) whose head scores size the nodes")


def scores(args) -> None:
    from ...circuits.composition.graph import circuit_graph
    from ...circuits.composition.scores import composition
    from ...circuits.head_scores import head_scores as scores_of
    from ...probes import HeadscopeError
    from ...probes.results.result import read_table

    importance = None
    if args.importance is not None:  # a corrupt file or a frame without scores stops here, before the model loads
        importance = read_table(args.importance)
        try:
            scores_of(importance)
        except HeadscopeError as err:
            raise HeadscopeError(f"--importance {args.importance}: {err}") from None
    result = composition(load(args), args.kinds, top=args.top, components=args.components,
                         fold_norm=not args.no_fold_norm, seed=args.seed)
    graph = circuit_graph(result, importance, min_z=args.min_z)
    result.with_graph(graph).save(args.out, overwrite=args.overwrite)
    best = {kind: result.pairs(kind, 3) for kind in args.kinds}
    emit(args, {"out": args.out, "graph_heads": len(graph.nodes), "graph_edges": len(graph.frame),
                "top": {kind: [{"writer": f"L{r.writer_layer}H{r.writer_head}", "reader": f"L{r.reader_layer}H{r.reader_head}",
                                "score": r.score, "z": r.z} for r in pairs.itertuples()] for kind, pairs in best.items()}},
         "".join(f"{kind}: " + ", ".join(f"L{r.writer_layer}H{r.writer_head}->L{r.reader_layer}H{r.reader_head} "
                                         f"{r.score:.3f} (z {r.z:.1f}, top component {r.top1_share:.0%})"
                                         for r in pairs.itertuples()) + "\n" for kind, pairs in best.items())
         + f"graph: {len(graph.nodes)} heads, {len(graph.frame)} edges -> {args.out}")


def position(text: str):
    if text != "random" and not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} must be 'random' or an index in the list")
    return text if text == "random" else int(text)


def laundry_arguments(p) -> None:
    p.add_argument("--lengths", type=INTS, default=[2, 3, 4, 5, 6, 8], help="comma-separated list lengths")
    p.add_argument("--n", type=int, default=40, help="prompts per length")
    p.add_argument("--position", type=position, default="random", help="the answer's index in the list, or random")
    p.add_argument("--writer", type=one_head, default=None, help="layer-head whose components are scaled, e.g. 14-3")
    p.add_argument("--components", type=INTS, default=[], help="comma-separated component indices of the writer")
    p.add_argument("--scales", type=FLOATS, default=[1.0, 0.0], help="comma-separated scales of the subspace "
                                                                    "(1 = unchanged)")


def laundry(args) -> None:
    from ...circuits.composition.laundry import laundry_task

    result = laundry_task(load(args), args.lengths, n=args.n, position=args.position, seed=args.seed,
                          writer=args.writer, components=args.components,
                          scales=args.scales if args.writer else [1.0], batch_size=args.batch_size)
    result.save(args.out, overwrite=args.overwrite)
    acc = result.accuracy()
    emit(args, {"out": args.out, "among_items": {f"{scale:g}": {int(r.length): r.among_items for r in part.itertuples()}
                                                 for scale, part in acc.groupby("scale")}},
         "".join(f"scale {scale:g}: accuracy among items by length "
                 + ", ".join(f"{r.length}: {r.among_items:.2f}" for r in part.itertuples()) + "\n"
                 for scale, part in acc.groupby("scale")) + f"-> {args.out}")


COMMANDS = [Command("composition", "composition scores between heads, low-rank channels and the head graph",
                    scores_arguments, scores, aliases=("svd",)),
            Command("laundry", "list recall by list length, optionally scaling a writer head's subspace",
                    laundry_arguments, laundry)]
