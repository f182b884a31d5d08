"""The command line, one module per command family; each declares its ``COMMANDS``.

Adding a command is one module here that declares ``COMMANDS = [Command(name, help, arguments, run)]``:
every module of this package except ``base`` and ``options`` is a command family.
"""

import importlib
import pkgutil

_SHARED = ("base", "options")
FAMILIES = [importlib.import_module(f"{__name__}.{info.name}") for info in pkgutil.iter_modules(__path__)
            if info.name not in _SHARED]
COMMANDS = [command for family in FAMILIES for command in family.COMMANDS]

__all__ = ["COMMANDS"]
