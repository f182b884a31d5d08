"""The result type every analysis returns.

A result is a tidy long-form DataFrame (one row per layer/head/position/...) plus a metadata dict
(model spec, parameters, seed, library versions, timings). ``save(dir)`` writes ``<name>.parquet``
and ``meta.json`` into a temporary sibling directory and moves it into place, so an interrupted
run never leaves a directory that looks complete, and never replaces files headscope did not write. ``load_result(dir)`` returns the right subclass,
found through the ``kind`` recorded in ``meta.json``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from .errors import HeadscopeError
from .outputs import output_dir

_KINDS: dict[str, type["Result"]] = {}


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour a result depends on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("headscope", "torch", "transformers", "transformer-lens", "pandas"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


class Result:
    """Tidy DataFrame + metadata, with ``plot()``, ``save(dir)`` and ``load_result(dir)``.

    Subclasses set ``kind`` (the name written to meta.json), ``table`` (the Parquet file's stem)
    and implement ``plot``. Extra files (tensors, HTML) are written by ``_save_extra``.
    """

    kind: ClassVar[str] = "result"
    table: ClassVar[str] = "result"

    def __init__(self, frame: pd.DataFrame, meta: dict[str, Any] | None = None):
        self.frame = frame
        self.meta = dict(meta or {})
        self.meta.setdefault("kind", self.kind)
        self.meta.setdefault("versions", library_versions())
        self.meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _KINDS[cls.kind] = cls

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {len(self.frame)} rows, model={self.meta.get('model')!r}>"

    def plot(self):
        """A plotly Figure of the result."""
        raise NotImplementedError(f"{type(self).__name__} has no plot")

    def _save_extra(self, directory: Path) -> None:
        """Hook for subclasses that store more than the table."""

    def save(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write ``<table>.parquet`` and ``meta.json`` to the new directory ``directory``, atomically.

        An existing directory is refused unless it is an earlier result and ``overwrite`` is true;
        then only that result's files are replaced (``outputs``).
        """
        with output_dir(directory, overwrite) as staging:
            self.frame.to_parquet(staging / f"{self.table}.parquet", index=False)
            self._save_extra(staging)
            write_meta(staging, self.meta)
        return Path(directory)

    @classmethod
    def _load(cls, directory: Path, meta: dict[str, Any]) -> "Result":
        return cls(read_table(directory / f"{cls.table}.parquet"), meta)


def read_table(path: Path) -> pd.DataFrame:
    """A saved frame as it was: Parquet gives list cells back as arrays, so they become lists again."""
    import numpy as np

    frame = pd.read_parquet(path)
    for column in frame.columns[frame.dtypes == object]:
        if any(isinstance(v, np.ndarray) for v in frame[column].head(100)):
            frame[column] = [v.tolist() if isinstance(v, np.ndarray) else v for v in frame[column]]
    return frame


def _import_result_kinds() -> None:
    """Import every analysis module, so that their result classes register their kinds."""
    import importlib
    import pkgutil

    for package in ("headscope.probes", "headscope.circuits"):
        for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
            importlib.import_module(f"{package}.{info.name}")


def load_result(directory: str | os.PathLike) -> Result:
    """Load any saved result; the subclass is chosen by ``meta.json``'s ``kind``."""
    path = Path(directory)
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise HeadscopeError(f"not a saved result: {path} has no meta.json")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as err:
        raise HeadscopeError(f"corrupt result: {meta_file} is not valid JSON ({err.msg})") from None
    kind = meta.get("kind", "result")
    if kind not in _KINDS:
        _import_result_kinds()
    if kind not in _KINDS:
        raise HeadscopeError(f"unknown result kind {kind!r} in {meta_file}; known: {', '.join(sorted(_KINDS))}")
    try:
        return _KINDS[kind]._load(path, meta)
    except (OSError, ValueError) as err:
        if isinstance(err, HeadscopeError):
            raise
        raise HeadscopeError(f"corrupt result in {path}: {err}") from None


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    (directory / "meta.json").write_text(json.dumps(meta, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to meta.json")


_KINDS[Result.kind] = Result
