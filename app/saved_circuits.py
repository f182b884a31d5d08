"""Circuits found from data and saved under the runs directory (``headscope circuit --out``), as the
circuit view's choices; each is read once per change of its files."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from ..probes import HeadscopeError, load_result

from .views.runs import find_runs


def choices(runs_root: Path) -> list[dict]:
    """Dropdown options, one per saved circuit run."""
    out = []
    for run in find_runs(runs_root):
        try:
            meta = json.loads((runs_root / run / "meta.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("kind") == "circuit":
            out.append({"label": f"run {run}: {meta.get('method', '?').upper()} on {meta.get('prompts', '?')} "
                                 f"({meta.get('model', '?')})", "value": run})
    return out


def read(runs_root: Path, run: str):
    """The saved ``Circuit`` of ``run``."""
    if run not in find_runs(runs_root):
        raise HeadscopeError(f"run {run!r} is not under the runs directory")
    directory = runs_root / run
    stamp = tuple(p.stat().st_mtime_ns for p in sorted(directory.glob("*.parquet")))
    return _load(str(directory), stamp)


@lru_cache(maxsize=4)
def _load(directory: str, _stamp: tuple):
    result = load_result(directory)
    if result.meta.get("kind") != "circuit":
        raise HeadscopeError(f"{directory} holds a {result.meta.get('kind')!r} result, not a circuit")
    return result
