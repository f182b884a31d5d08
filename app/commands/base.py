"""A command: its name, help, arguments and what it runs; the parser is built from the registered ones."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable

from .options import model_options, out_options


class Parser(argparse.ArgumentParser):
    """Usage mistakes in one line (``headscope <command>: error: ...``), exit status 2."""

    def error(self, message: str):
        print(f"{self.prog}: error: {' '.join(message.split())}", file=sys.stderr)
        sys.exit(2)


class Formatter(argparse.HelpFormatter):
    """Help with every default shown (where the help text does not say it already)."""

    def _get_help_string(self, action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, argparse.SUPPRESS) or action.option_strings == []:
            return text
        if isinstance(default, (list, tuple)):
            default = ",".join(str(x) for x in default)
        return f"{text} (default: {default})"


@dataclass
class Command:
    """One subcommand: ``arguments(parser)`` adds its own options, ``run(args)`` does the work."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]
    aliases: tuple[str, ...] = ()
    writes: bool = True  # takes --out / --overwrite
    model: str = "one"  # "one", "several" or "none": the shared model options

    def add_to(self, sub) -> None:
        parser = sub.add_parser(self.name, aliases=list(self.aliases), help=self.help, description=self.help,
                                formatter_class=Formatter)
        if self.model != "none":
            model_options(parser, several=self.model == "several")
        self.arguments(parser)
        if self.writes:
            out_options(parser)
        if self.name not in ("app", "info"):
            parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
        parser.set_defaults(command=self)
