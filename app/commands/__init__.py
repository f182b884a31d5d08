"""The command line, one module per command family; each declares its ``COMMANDS``.

Adding a command is one module here (``Command(name, help, arguments, run)``) plus its name below.
"""

from . import app, arithmetic, capture, causal, composition, heads, info, lenses, retrieval

FAMILIES = (info, capture, causal, heads, lenses, retrieval, arithmetic, composition, app)
COMMANDS = [command for family in FAMILIES for command in family.COMMANDS]

__all__ = ["COMMANDS"]
