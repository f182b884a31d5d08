"""The ``headscope`` command line: the parser is built from the command modules in ``commands``.

A usage mistake (``HeadscopeError``, or a bad option) prints one line to stderr and exits with status 2;
a runtime failure (``HeadscopeFailure``: a download, a corrupt or unreadable file; or any other exception)
prints one line and exits with status 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys

from .commands import COMMANDS
from .commands.base import Formatter, Parser


def build_parser() -> Parser:
    from ..probes.results.result import library_versions

    parser = Parser(prog="headscope", description="A mechanistic-interpretability workbench.",
                    formatter_class=Formatter)
    parser.add_argument("--version", action="version", version=f"headscope {library_versions()['headscope']}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="name", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_to(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage mistake already printed in one line
        return done.code
    from ..probes import HeadscopeError, HeadscopeFailure

    try:
        if args.command.writes and getattr(args, "out", None):
            from ..probes.results.outputs import check_output_dir

            check_output_dir(args.out, args.overwrite)  # before any model loads or work starts
        args.command.run(args)
    except (HeadscopeError, HeadscopeFailure) as err:  # a mistake (2) or a failure the tool can describe (1)
        if args.debug:
            raise
        print(f"headscope: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, HeadscopeError) else 1
    except KeyboardInterrupt:
        print("headscope: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a runtime failure: one line, the traceback only with --debug
        if args.debug:
            raise
        print(f"headscope: failed: {type(err).__name__}: {' '.join(str(err).split())} (--debug shows the traceback)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
