"""``headscope app``: the dashboard on a live model."""

from __future__ import annotations

from .base import Command


def arguments(p) -> None:
    from ...probes.models.loading import DTYPES

    p.add_argument("--model", default="default", help="model to load at start (the page can load others)")
    p.add_argument("--runs", default="runs", help="directory of saved results to browse")
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=int, default=8050, help="port to serve on")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="float32", choices=list(DTYPES), help="weights and activations dtype")


def run(args) -> None:
    from ..dashboard import serve
    from ...probes.models.loading import resolve_device

    resolve_device(args.device)  # a bad value stops here, before the server starts
    serve(args.model, args.runs, host=args.host, port=args.port, device=args.device, dtype=args.dtype)


COMMANDS = [Command("app", "start the dashboard (binds to 127.0.0.1 unless --host says otherwise)", arguments, run,
                    writes=False, model="none")]
