"""Per-head scores saved under the runs directory, as choices for the heads map and the circuit graph.

Every ``heads.parquet`` of a run (head reports, retrieval and arithmetic runs) offers each numeric
per-head column; a table with label columns (model, prompt set, operation, ablation mode) offers one
choice per combination of their values, so that no score is averaged over them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..probes import HeadscopeError

from .views.runs import find_runs

NOT_SCORES = ("layer", "head", "n_prompts", "n_tests")


def choices(runs_root: Path) -> list[dict]:
    """Dropdown options, one per (run, column, selection of label values)."""
    out = []
    for run in find_runs(runs_root):
        table = runs_root / run / "heads.parquet"
        if not table.is_file():
            continue
        try:
            frame = pd.read_parquet(table)
        except (OSError, ValueError):
            continue
        labels = [c for c in frame.select_dtypes(exclude="number").columns if c not in ("layer", "head")]
        selections = frame[labels].drop_duplicates().to_dict("records") if labels else [{}]
        out += [option(run, column, where) for column in frame.select_dtypes("number").columns
                if column not in NOT_SCORES for where in selections]
    return out


def option(run: str, column: str, where: dict) -> dict:
    return {"label": f"run {run}: {column}" + describe(where),
            "value": json.dumps({"run": run, "column": column, "where": where})}


def describe(where: dict) -> str:
    return f" ({', '.join(f'{k}={v}' for k, v in where.items())})" if where else ""


def is_choice(value) -> bool:
    return isinstance(value, str) and value.startswith("{")


def read_choice(runs_root: Path, value: str) -> tuple[pd.DataFrame, str]:
    """The chosen scores as a (layer, head, score) frame, and a title."""
    choice = json.loads(value)
    run, column, where = choice["run"], choice["column"], choice["where"]
    if run not in find_runs(runs_root):
        raise HeadscopeError(f"run {run!r} is not under the runs directory")
    frame = pd.read_parquet(runs_root / run / "heads.parquet")
    for key in [column, *where]:
        if key not in frame.columns:
            raise HeadscopeError(f"run {run!r} has no column {key!r}")
    for key, value in where.items():
        frame = frame[frame[key] == value]
    if frame.empty:
        raise HeadscopeError(f"run {run!r} has no rows with{describe(where)}")
    frame = frame.groupby(["layer", "head"], as_index=False)[column].mean().rename(columns={column: "score"})
    return frame, f"{column}{describe(where)} from run {run}{interval_note(runs_root / run)}"


def interval_note(run_dir: Path) -> str:
    """How the run's intervals were made, as its meta.json records it (empty when it records none)."""
    try:
        info = json.loads((run_dir / "meta.json").read_text()).get("interval")
    except (OSError, ValueError, AttributeError):
        return ""
    if not isinstance(info, dict) or "method" not in info:
        return ""
    return f" [intervals: {float(info.get('level', 0.95)):.0%} {info['method']}, n = {info.get('n')}]"
