"""``headscope info``: a model's structure as JSON."""

from __future__ import annotations

import json

from .base import Command
from .options import load


def run(args) -> None:
    print(json.dumps(load(args).info(), indent=2))


COMMANDS = [Command("info", "print a model's structure as JSON", lambda p: None, run, writes=False)]
