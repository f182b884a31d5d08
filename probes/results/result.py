"""The result type every analysis returns.

A result is named tidy tables (one main long-form frame, one row per layer/head/position/..., plus any
others the analysis produces) and a metadata dict (model spec, parameters, seed, library versions,
timings). ``save(dir)`` writes one ``<name>.parquet`` per table, the files a subclass ``exports``
(e.g. a reference-format JSON), ``report.html`` when the subclass has a ``report`` (written by
``html.write_report``, the one place that writes report pages) and ``meta.json``, which names the
class that wrote it (``writer``) and its tables. ``load_result(dir)`` imports that class's module and
rebuilds the result; nothing scans the analysis modules. A result is written in a staging directory
and moved into place (``outputs``): an interrupted run leaves nothing that looks complete, and no file
headscope did not write is ever replaced.
"""

from __future__ import annotations

import importlib
import json
import os
import functools
import platform
import time
from pathlib import Path
from typing import Any, ClassVar, Mapping

import pandas as pd

from ..errors import HeadscopeError, HeadscopeFailure
from .html import write_report
from .outputs import output_dir


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour a result depends on."""
    return dict(_library_versions())


@functools.cache
def _library_versions() -> dict[str, str]:
    # read once per process: the lookups scan the environment's package metadata (4 ms on the 2-core
    # CPU, 5 ms on the GPU machine), 4% of a 32-prompt capture there
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("headscope", "torch", "transformers", "transformer-lens", "pandas"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


class Result:
    """Named tables + metadata, with ``plot()``, ``save(dir)`` and ``load_result(dir)``.

    Subclasses set ``kind`` (a readable name for meta.json), ``table`` (the main table's name),
    ``TABLES`` (the names of optional further tables, read as attributes: ``result.tests``; None when
    absent) and implement ``plot``; optionally ``derived`` (tables computed from the others, saved for
    other readers, not read back), ``exports`` (more files, name -> text) and ``report`` (the parts of
    an HTML page: strings and figures).
    """

    kind: ClassVar[str] = "result"
    table: ClassVar[str] = "result"
    TABLES: ClassVar[tuple[str, ...]] = ()
    title: ClassVar[str] = "headscope result"

    def __init__(self, frame: pd.DataFrame, meta: dict[str, Any] | None = None,
                 tables: Mapping[str, pd.DataFrame | None] | None = None):
        self.tables: dict[str, pd.DataFrame] = {self.table: frame}
        for name, value in (tables or {}).items():
            if name not in self.TABLES:
                raise TypeError(f"{type(self).__name__} has no table {name!r}; its tables: {self.TABLES}")
            if value is not None:
                self.tables[name] = value
        self.meta = dict(meta or {})
        self.meta.setdefault("kind", self.kind)
        self.meta.setdefault("versions", library_versions())
        self.meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    @property
    def frame(self) -> pd.DataFrame:
        """The main table."""
        return self.tables[self.table]

    @frame.setter
    def frame(self, value: pd.DataFrame) -> None:
        self.tables[self.table] = value

    def __getattr__(self, name: str):
        if name in type(self).TABLES:
            return self.__dict__.get("tables", {}).get(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {len(self.frame)} rows, model={self.meta.get('model')!r}>"

    def plot(self):
        """A plotly Figure of the result."""
        raise NotImplementedError(f"{type(self).__name__} has no plot")

    def derived(self) -> dict[str, pd.DataFrame]:
        """Tables computed from the stored ones, written beside them for other readers (not read back)."""
        return {}

    def exports(self) -> dict[str, str]:
        """Further files to write: name -> text."""
        return {}

    def report(self) -> list | None:
        """The HTML report's parts (strings and plotly figures), or None for no report.html."""
        return None

    def _write_files(self, directory: Path) -> None:
        """Hook for results that store data other than tables (activation tensors)."""

    def save(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the tables, exports, report and ``meta.json`` to the new directory ``directory``.

        An existing directory is refused unless it is an earlier result and ``overwrite`` is true;
        then only that result's files are replaced (``outputs``).
        """
        with output_dir(directory, overwrite) as staging:
            for name, table in {**self.tables, **self.derived()}.items():
                table.to_parquet(staging / f"{name}.parquet", index=False)
            for name, text in self.exports().items():
                (staging / name).write_text(text, encoding="utf-8")
            self._write_files(staging)
            parts = self.report()
            if parts:
                write_report(staging / "report.html", self.title, parts)
            write_meta(staging, self.saved_meta())
        return Path(directory)

    def to_json(self) -> str:
        """The whole result as one JSON document: ``{"meta": ..., "tables": {name: [row, ...]}}``."""
        tables = {name: json.loads(table.to_json(orient="records", double_precision=15))
                  for name, table in self.tables.items()}
        return json.dumps({"meta": self.saved_meta(), "tables": tables}, default=_json_default)

    def saved_meta(self) -> dict[str, Any]:
        """``meta`` as ``meta.json`` holds it: with the writing class and the table names."""
        cls = type(self)
        return {**self.meta, "writer": f"{cls.__module__}.{cls.__qualname__}", "tables": list(self.tables)}

    @classmethod
    def _load(cls, directory: Path, meta: dict[str, Any]) -> "Result":
        names = meta.get("tables") or [cls.table]
        tables = {n: read_table(directory / f"{n}.parquet") for n in names}
        return cls(tables.pop(cls.table), meta, tables)


def read_table(path: Path) -> pd.DataFrame:
    """A saved frame as it was: Parquet gives list cells back as arrays, so they become lists again.

    A missing, unreadable or corrupt file is a one-line ``HeadscopeFailure`` naming it."""
    import numpy as np

    try:
        frame = pd.read_parquet(path)
    except FileNotFoundError:
        raise HeadscopeFailure(f"missing Parquet file {path}; run the analysis again to regenerate it") from None
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise HeadscopeFailure(f"corrupt or unreadable Parquet file {path} ({reason}); "
                               "run the analysis again to regenerate it") from None
    for column in frame.columns[frame.dtypes == object]:
        if any(isinstance(v, np.ndarray) for v in frame[column].head(100)):
            frame[column] = [v.tolist() if isinstance(v, np.ndarray) else v for v in frame[column]]
    return frame


def writer_class(meta: dict[str, Any], meta_file: Path) -> type[Result]:
    """The ``Result`` subclass named by ``meta.json``'s ``writer`` (only headscope's own modules are imported)."""
    writer = meta.get("writer")
    if not isinstance(writer, str):
        raise HeadscopeError(f"{meta_file} was written by an earlier headscope (kind {meta.get('kind')!r}, no "
                             "writer recorded); run the analysis again with this version to regenerate it")
    module, _, name = writer.rpartition(".")
    try:
        if not module.startswith("headscope."):
            raise ImportError(module)
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise HeadscopeError(f"{meta_file} names writer {writer!r}, which this headscope does not have; "
                             "run the analysis again with this version to regenerate it") from None
    if not (isinstance(cls, type) and issubclass(cls, Result)):
        raise HeadscopeError(f"{meta_file} names writer {writer!r}, which is not a result class")
    return cls


def load_result(directory: str | os.PathLike) -> Result:
    """Load any saved result, as the class that wrote it (``meta.json``'s ``writer``)."""
    path = Path(directory)
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise HeadscopeError(f"not a saved result: {path} has no meta.json")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as err:
        raise HeadscopeError(f"corrupt result: {meta_file} is not valid JSON ({err.msg})") from None
    if not isinstance(meta, dict):
        raise HeadscopeError(f"corrupt result: {meta_file} does not hold a JSON object")
    cls = writer_class(meta, meta_file)
    try:
        return cls._load(path, meta)
    except (OSError, ValueError, KeyError) as err:  # the tables themselves fail in read_table, naming the file
        if isinstance(err, HeadscopeError):
            raise
        raise HeadscopeFailure(f"corrupt result in {path}: {type(err).__name__}: {err}") from None


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
