"""What every command shares: the model and output options, and parsers for list-valued options.

Allowed values come from the analyses' own declarations (``choices=`` or ``choice_list``), so a mode,
metric or kind is declared once in the project and checked once, by argparse, before any model loads.
"""

from __future__ import annotations

import argparse
import contextlib
import math

MODEL_SPEC = "alias, random:<arch>, .gguf file, model dir or hub name"


def model_options(parser: argparse.ArgumentParser, several: bool = False) -> None:
    """``--model --device --dtype --seed --batch-size``."""
    from ...probes.models.loading import DTYPES
    from ...probes.models.placement import STRATEGIES

    if several:
        parser.add_argument("--model", nargs="+", default=["default"], help=f"one or more model specs ({MODEL_SPEC})")
    else:
        parser.add_argument("--model", default="default", help=f"model spec ({MODEL_SPEC})")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument("--device-map", default=None, choices=STRATEGIES,
                        help="spread the layers over the GPUs, CPU memory and disk with accelerate (default: one device)")
    parser.add_argument("--max-memory", type=max_memory, default=None,
                        help="with --device-map, each device's cap, like 0=20GiB,1=20GiB,cpu=60GiB")
    parser.add_argument("--offload-folder", default=None, help="with --device-map, a folder for the weights beyond "
                        "every cap, run from disk (default: none; a model that does not fit is refused with the size "
                        "that has no place)")
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES), help="weights and activations dtype")
    parser.add_argument("--seed", type=int, default=0, help="seed for random weights and stochastic analyses")
    parser.add_argument("--batch-size", type=int, default=None, help="rows per forward (default: what fits memory)")


def max_memory(text: str) -> dict:
    """``DEVICE=SIZE,...`` as accelerate's max_memory."""
    from ...probes import HeadscopeError
    from ...probes.models.placement import parse_max_memory

    try:
        return parse_max_memory(text)
    except HeadscopeError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def placement(args) -> dict:
    """The model options' placement keywords of ``load_model``."""
    return {"device_map": args.device_map, "max_memory": args.max_memory, "offload_folder": args.offload_folder}


def level(text: str) -> float:
    """A confidence level in (0, 1)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a confidence level between 0 and 1, like 0.95")
    return value


def interval_options(parser: argparse.ArgumentParser, over: str = "") -> None:
    """``--interval --level``: the intervals on the means (``circuits.stats``), ``over`` what they are."""
    from ...circuits.stats import METHODS

    parser.add_argument("--interval", default="t", choices=METHODS,
                        help=f"intervals{over}: t (Student-t on the mean) or bootstrap (seeded BCa, for skewed data)")
    parser.add_argument("--level", type=level, default=0.95, help="confidence level of the intervals")


def out_options(parser: argparse.ArgumentParser) -> None:
    """``--out DIR`` and ``--overwrite``."""
    parser.add_argument("--out", required=True, help="new output directory (an existing one is refused, "
                                                     "unless it is a headscope result and --overwrite is given)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the headscope result at --out (only its own files are removed)")


def choice_list(allowed, what: str = "value"):
    """An argparse type: comma-separated items, each one of ``allowed``."""
    allowed = tuple(allowed)

    def parse(text: str) -> tuple[str, ...]:
        items = tuple(x.strip() for x in text.split(",") if x.strip())
        for item in items:
            if item not in allowed:
                raise argparse.ArgumentTypeError(f"unknown {what} {item!r}; use {', '.join(allowed)}")
        if not items:
            raise argparse.ArgumentTypeError(f"give at least one {what} of {', '.join(allowed)}")
        return items

    return parse


def number_list(kind=float, what: str = "numbers"):
    """An argparse type: comma-separated numbers (``kind`` int or float)."""
    def parse(text: str) -> list:
        try:
            values = [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} must be comma-separated {what}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"{text!r} holds no {what}")
        return values

    return parse


def at_least(low: int, what: str):
    """An argparse type: a whole number of at least ``low`` (``what`` names the option)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"{what} must be a whole number of at least {low}, not {text!r}")
        return value
    return parse


INTS = number_list(int, "integers")
FLOATS = number_list(float, "numbers")


def span(text: str):
    """``last``, ``all`` or ``START:END``."""
    if text in ("last", "all"):
        return text
    try:
        start, end = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be last, all or START:END") from None
    return (start, end)


def heads_or_count(text: str):
    """A number k, or comma-separated ``layer-head`` pairs."""
    if text.strip().isdigit():
        return int(text)
    try:
        heads = [tuple(int(x) for x in part.split("-")) for part in text.split(",") if part.strip()]
        if not heads or any(len(h) != 2 for h in heads):
            raise ValueError
        return heads
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number or heads like 14-3,15-0") from None


def one_head(text: str) -> tuple[int, int]:
    """One ``layer-head``."""
    heads = heads_or_count(text)
    if isinstance(heads, int) or len(heads) != 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be one head like 14-3")
    return heads[0]


def number_or_text(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def emit(args, summary: dict, text: str) -> None:
    """The command's summary: ``text`` for a person, or with ``--json`` one JSON object on stdout."""
    import json

    if getattr(args, "json", False):
        print(json.dumps(summary, default=str))
    else:
        print(text)


def load(args):
    """The model the common options name."""
    from ...probes import load_model

    return load_model(**load_arguments(args))


def load_arguments(args) -> dict:
    """``load_model``'s arguments from the common options (what a Ray worker loads)."""
    return {"spec": args.model, "device": args.device, "dtype": args.dtype, "seed": args.seed, **placement(args)}


def ray_options(parser: argparse.ArgumentParser) -> None:
    """``--ray [ADDRESS] --workers N``: a batch command's units on a Ray cluster."""
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help="run the work's units on Ray: local (a Ray started for the run; the default with --ray "
                             "alone), auto (the cluster this machine belongs to) or a cluster's address; needs "
                             "pip install 'headscope[ray]'")
    parser.add_argument("--workers", type=at_least(1, "--workers"), default=None,
                        help="with --ray, model copies (default: one per GPU, or 2)")


def cluster(args):
    """The ``Cluster`` that ``--ray`` and ``--workers`` name, or None."""
    from ...probes.engine.units import Cluster

    return Cluster(args.ray, args.workers) if args.ray else None


@contextlib.contextmanager
def batch_run(args):
    """``(model, cluster, shards)`` of a batch command: the loaded model here, or with ``--ray`` the arguments
    each worker loads it with; the units' shard directory beside ``--out`` (finished units are reused by
    the same command run again), removed once the result is written."""
    import shutil

    from ...probes import HeadscopeError
    from ...probes.engine.units import check_cluster, on_cluster, shard_dir, start_shards
    from ...probes.results.outputs import check_output_dir

    where = cluster(args)
    check_cluster(where)
    params = {k: v for k, v in vars(args).items() if k not in _NOT_PARAMS}
    shards = shard_dir(check_output_dir(args.out, args.overwrite), params)
    model = load(args) if where is None else load_arguments(args)
    start_shards(shards, params)
    try:
        with on_cluster(where):
            yield model, where, shards
    except HeadscopeError:  # a mistake found once the work started: nothing is left behind
        shutil.rmtree(shards, ignore_errors=True)
        raise
    shutil.rmtree(shards, ignore_errors=True)


_NOT_PARAMS = ("command", "out", "overwrite", "json", "debug", "ray", "workers", "name")
