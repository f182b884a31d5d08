"""The ``headscope`` command line.

Every subcommand shares ``--model --device --dtype --seed --batch-size`` and writes results with
``--out DIR``. A user mistake (``HeadscopeError``) prints one line to stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="alias, random:<arch>, .gguf file, model dir or hub name")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    parser.add_argument("--seed", type=int, default=0, help="seed for random weights and stochastic analyses")
    parser.add_argument("--batch-size", type=int, default=None, help="rows per forward (default: fit memory)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headscope", description="A mechanistic-interpretability workbench.")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="print a model's structure as JSON")
    _common(info)

    cap = sub.add_parser("capture", help="capture activations of a prompt file to a directory")
    _common(cap)
    cap.add_argument("--prompts", required=True, help="text file (one prompt per line) or JSONL with 'prompt'")
    cap.add_argument("--hooks", required=True, help="hook names or glob patterns, comma-separated")
    cap.add_argument("--layers", default=None, help="comma-separated layers to keep (default: all matched)")
    cap.add_argument("--heads", default=None, help="comma-separated heads for per-head hooks (default: all)")
    cap.add_argument("--positions", default="last", help="last, all, or START:END token span")
    cap.add_argument("--shard-rows", type=int, default=4096, help="rows per safetensors shard")
    cap.add_argument("--out", required=True, help="output directory")
    return parser


def _int_list(text: str | None, what: str) -> list[int] | None:
    from headscope.probes import HeadscopeError

    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise HeadscopeError(f"--{what} {text!r} must be comma-separated integers") from None


def _positions(text: str):
    from headscope.probes import HeadscopeError

    if text in ("last", "all"):
        return text
    try:
        start, end = (int(x) for x in text.split(":"))
    except ValueError:
        raise HeadscopeError(f"--positions {text!r} must be last, all or START:END") from None
    return (start, end)


def _load(args):
    from headscope.probes import load_model

    return load_model(args.model, device=args.device, dtype=args.dtype, seed=args.seed)


def cmd_info(args) -> None:
    print(json.dumps(_load(args).info(), indent=2))


def cmd_capture(args) -> None:
    from headscope.probes import capture, read_prompts

    prompts = read_prompts(args.prompts)
    model = _load(args)
    result = capture(model, prompts, args.hooks, layers=_int_list(args.layers, "layers"),
                     heads=_int_list(args.heads, "heads"), positions=_positions(args.positions),
                     batch_size=args.batch_size, out=args.out, shard_rows=args.shard_rows)
    print(f"captured {len(result.frame)} rows of {len(result.meta['hooks'])} hooks to {args.out}")


COMMANDS = {"info": cmd_info, "capture": cmd_capture}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from headscope.probes import HeadscopeError

    try:
        COMMANDS[args.command](args)
    except HeadscopeError as err:
        print(f"headscope: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("headscope: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
