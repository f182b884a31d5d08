"""``headscope capture``: activations of a prompt file, streamed to safetensors shards."""

from __future__ import annotations

from .base import Command
from .options import INTS, emit, load, span


def arguments(p) -> None:
    p.add_argument("--prompts", required=True, help="text file (one prompt per line) or JSONL with 'prompt'")
    p.add_argument("--hooks", required=True, help="hook names or glob patterns, comma-separated")
    p.add_argument("--layers", type=INTS, default=None, help="comma-separated layers to keep (default: all matched)")
    p.add_argument("--heads", type=INTS, default=None, help="comma-separated heads for per-head hooks (default: all)")
    p.add_argument("--positions", type=span, default="last", help="last, all, or START:END token span")
    p.add_argument("--shard-rows", type=int, default=4096, help="rows per safetensors shard")


def run(args) -> None:
    from ...probes import capture, read_prompts

    prompts = read_prompts(args.prompts)
    result = capture(load(args), prompts, args.hooks, layers=args.layers, heads=args.heads, positions=args.positions,
                     batch_size=args.batch_size, out=args.out, shard_rows=args.shard_rows, overwrite=args.overwrite)
    emit(args, {"out": args.out, "rows": len(result.frame), "hooks": result.meta["hooks"]},
         f"captured {len(result.frame)} rows of {len(result.meta['hooks'])} hooks to {args.out}")


COMMANDS = [Command("capture", "capture activations of a prompt file to a directory", arguments, run)]
