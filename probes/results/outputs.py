"""Where results are written, and what may be replaced there: never a file headscope did not write.

A result is built in a hidden staging directory beside its target and moved into place at the end,
so an interrupted run leaves nothing that looks complete. The target must be

- a new path, or an empty directory: the staging directory is renamed onto it;
- or, with ``overwrite=True``, an earlier headscope result (a ``meta.json`` of ours that lists the
  result's files): exactly those files are replaced, anything else a user put there stays.

Everything else is refused with one line, before any work and again at the end: an existing directory
that is not a result of ours, a file, a symbolic link, the working directory, the home directory,
``/`` or any directory holding one of them, and any path inside (or holding) the model cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import HeadscopeError
from ..models.files import cache_dir

META = "meta.json"


def read_our_meta(directory: Path) -> dict | None:
    """``directory``'s ``meta.json`` when headscope wrote it (a kind and the headscope version), else None."""
    try:
        meta = json.loads((directory / META).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(meta, dict) and isinstance(meta.get("kind"), str) and "headscope" in (meta.get("versions") or {}):
        return meta
    return None


def _protected() -> list[tuple[Path, str]]:
    return [(Path("/"), "the file system root"), (Path.home().resolve(), "your home directory"),
            (Path.cwd().resolve(), "the working directory")]


def check_output_dir(target: str | os.PathLike, overwrite: bool = False) -> Path:
    """The resolved output directory, or a one-line ``HeadscopeError`` saying why it may not be written."""
    text = str(target)
    if not text.strip():
        raise HeadscopeError("the output directory is empty text; give a new directory for the result")
    path = Path(text).expanduser()
    if path.is_symlink():
        raise HeadscopeError(f"output directory {text!r} is a symbolic link (to {os.readlink(path)}); "
                             "give a new directory, not a link")
    resolved = path.resolve()
    for place, name in _protected():
        if resolved == place or place.is_relative_to(resolved):
            raise HeadscopeError(f"output directory {text!r} is {name} or holds it; give a new directory for the result")
    cache = cache_dir().expanduser().resolve()
    if resolved.is_relative_to(cache) or cache.is_relative_to(resolved):
        raise HeadscopeError(f"output directory {text!r} is inside the model cache {cache} or holds it; "
                             "give a directory outside it")
    if resolved.exists() or resolved.is_symlink():
        if not resolved.is_dir():
            raise HeadscopeError(f"output directory {text!r} exists and is not a directory; give a new directory")
        if any(resolved.iterdir()):
            meta = read_our_meta(resolved)
            if meta is None:
                raise HeadscopeError(f"output directory {text!r} already exists and is not a headscope result "
                                     "(no meta.json of ours); nothing was written, give a new directory")
            if not overwrite:
                raise HeadscopeError(f"output directory {text!r} holds a headscope result already; "
                                     "pass --overwrite (save(..., overwrite=True)) to replace it")
            if not isinstance(meta.get("files"), list):
                raise HeadscopeError(f"output directory {text!r} holds a result of an older headscope that does not list "
                                     "its files; remove it yourself or give a new directory")
    parent = next(p for p in resolved.parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise HeadscopeError(f"output directory {text!r} cannot be written: {parent} is not a writable directory")
    return resolved


def new_staging(target: Path) -> Path:
    """An empty hidden sibling of ``target`` to build it in."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    except OSError as err:
        raise HeadscopeError(f"cannot write {target}: {err.strerror or err}") from None
    os.chmod(staging, 0o755)
    return staging


def _files(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def _record_files(staging: Path) -> list[str]:
    """Write the list of the result's files into its ``meta.json`` (the list overwrite may remove later)."""
    meta_file = staging / META
    if not meta_file.is_file():
        raise RuntimeError(f"a result must write {META} (staging {staging})")
    meta = json.loads(meta_file.read_text())
    files = _files(staging)
    meta["files"] = files
    meta_file.write_text(json.dumps(meta, indent=2))
    return files


def commit(staging: Path, target: Path, overwrite: bool = False) -> None:
    """Move a finished staging directory's result to ``target`` under this module's rules."""
    target = check_output_dir(target, overwrite)  # again: the target may have changed during a long run
    new = _record_files(staging)
    if not target.exists() or not any(target.iterdir()):
        os.replace(staging, target)  # POSIX rename replaces an empty directory
        return
    old = [f for f in read_our_meta(target)["files"] if _inside(target, f)]
    theirs = [f for f in new if (target / f).exists() and f not in old]
    if theirs:
        raise HeadscopeError(f"output {str(target)!r}: {theirs[0]} is in the way and was not written by headscope; "
                             "nothing was replaced, move it or give a new directory")
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    moved: list[tuple[Path, Path]] = []
    try:
        for f in old:
            if (target / f).is_file() and not (target / f).is_symlink():
                _move(target / f, trash / f, moved)
        for f in new:
            _move(staging / f, target / f, moved)
    except BaseException:
        for src, dst in reversed(moved):
            with contextlib.suppress(OSError):
                os.replace(dst, src)
        shutil.rmtree(trash, ignore_errors=True)
        raise
    _remove_empty_dirs(target, {str(Path(f).parent) for f in old})
    shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)


def _inside(directory: Path, relative: str) -> bool:
    """A listed file name that stays inside ``directory`` (a hand-edited meta.json cannot reach out)."""
    return isinstance(relative, str) and (directory / relative).resolve().is_relative_to(directory)


def _move(src: Path, dst: Path, moved: list[tuple[Path, Path]]) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)
    moved.append((src, dst))


def _remove_empty_dirs(target: Path, parents: set[str]) -> None:
    for name in sorted(parents, key=len, reverse=True):
        path = target / name
        with contextlib.suppress(OSError):
            while path != target and not any(path.iterdir()):
                path.rmdir()
                path = path.parent


@contextlib.contextmanager
def output_dir(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """``with output_dir(out) as tmp:`` write a result (with its meta.json) into ``tmp``; it becomes ``out``."""
    resolved = check_output_dir(target, overwrite)
    staging = new_staging(resolved)
    try:
        yield staging
        commit(staging, resolved, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_output_file(target: str | os.PathLike, overwrite: bool, ours) -> Path:
    """An output file path: new, or (with ``overwrite``) an existing file for which ``ours(path)`` is true."""
    path = Path(target).expanduser()
    if path.is_symlink():
        raise HeadscopeError(f"output {str(target)!r} is a symbolic link; give a new file name")
    if path.exists():
        if not path.is_file() or not ours(path):
            raise HeadscopeError(f"output {str(target)!r} exists and was not written by headscope; "
                                 "nothing was written, give a new file name")
        if not overwrite:
            raise HeadscopeError(f"output {str(target)!r} exists; pass --overwrite to replace it")
    parent = next(p for p in path.resolve().parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise HeadscopeError(f"output {str(target)!r} cannot be written: {parent} is not a writable directory")
    return path
