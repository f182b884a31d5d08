"""Write a cache entry (directory or file) atomically: build it under a temporary sibling name, rename it into place.

Only for headscope's own cache, whose entries are keyed by content and may be replaced whole; a
user's output goes through ``outputs``, which never replaces what headscope did not write.
An interrupted writer (error, Ctrl-C) leaves no entry that a later run would trust.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def _replace_dir(staging: Path, target: Path) -> None:
    """Move a finished staging directory to ``target``, replacing an older cache entry only at the end."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_dir(target) as tmp:`` write into ``tmp``; it becomes ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    os.chmod(staging, 0o755)
    try:
        yield staging
        _replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_file(target) as tmp:`` write the file ``tmp``; it becomes ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    try:
        yield Path(name)
        os.chmod(name, 0o644)
        os.replace(name, target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
