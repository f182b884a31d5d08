"""Batch work cut into units, run in this process or on a Ray cluster, with shards that survive interruption.

An analysis that runs over many prompts, tests or facts describes its work as ``Unit``s: a stable key
and a module-level function ``fn(model, **kwargs)`` that returns its rows (a frame, or named frames).
``run_units`` runs them

- here, one after another on one model (the single-process run);
- or on Ray (``Cluster``): one actor per model copy (one per GPU, or per share of the CPU cores), each
  loading the model once; Ray schedules the units over the actors (``ActorPool``), restarts an actor
  that dies and retries its unit there (``max_restarts``, ``max_task_retries``), and nothing of
  scheduling is written here.

Each unit's rows are written as Parquet shards into ``shards`` (``shard_dir``: a hidden directory
beside the output, tied to the run's parameters), atomically, so a unit retried after a crash
overwrites its own shard and no row is lost or doubled; a run interrupted and started again reuses
the finished shards. The frames come back in the units' order, so an analysis assembles exactly the
result the single-process run gives. One progress bar counts the units.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..errors import HeadscopeError, HeadscopeFailure
from ..progress import tracked

RAY_HINT = "pip install 'headscope[ray]'"


@dataclass(frozen=True)
class Unit:
    """One piece of work: ``fn(model, **kwargs)`` returns a frame or ``{name: frame}``; ``key`` names its shards."""

    key: str
    fn: Callable[..., Any]
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Cluster:
    """Where units run on Ray: ``address`` is ``local`` (a Ray started here for the run), ``auto`` (the cluster
    this machine belongs to) or a cluster's address; ``workers``: model copies (default: one per GPU, or 2)."""

    address: str = "local"
    workers: int | None = None


def check_cluster(cluster: Cluster | None) -> None:
    """One-line errors, before any work: Ray missing, or a number of workers below one."""
    if cluster is None:
        return
    try:
        import ray  # noqa: F401
    except ImportError:
        raise HeadscopeError(f"--ray needs Ray, which is not installed; {RAY_HINT}") from None
    if cluster.workers is not None and (isinstance(cluster.workers, bool) or not isinstance(cluster.workers, int)
                                        or cluster.workers < 1):
        raise HeadscopeError(f"workers {cluster.workers!r} must be a whole number of at least 1")
    if cluster.address not in ("local", "auto"):
        _check_reachable(cluster.address)


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A cluster's address answers within ``timeout`` seconds (Ray itself retries an unreachable one for
    minutes, printing a warning every few seconds)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise HeadscopeError(f"Ray address {address!r} must be local, auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        why = "no answer in %g s" % timeout if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise HeadscopeError(f"Ray address {address!r} cannot be reached ({why}); "
                             "is a Ray cluster running there?") from None


def shard_dir(out: Path, params: dict) -> Path:
    """``.<out>.shards`` beside ``out``: its shards are reused when ``params`` match, else removed. Only files
    this module writes there are ever removed; a directory of that name holding anything else is refused."""
    shards = out.parent / f".{out.name}.shards"
    if not shards.exists():
        return shards
    ours = shards.is_dir() and not shards.is_symlink() and all(
        f.is_file() and (f.name == "params.json" or f.name.endswith((".parquet", ".tmp"))) for f in shards.iterdir())
    if not ours:
        raise HeadscopeError(f"{shards} exists and is not a headscope run's shard directory; move it away")
    try:
        same = json.loads((shards / "params.json").read_text()) == json.loads(json.dumps(params, default=str))
    except (OSError, ValueError):
        same = False
    if not same:
        shutil.rmtree(shards)
    return shards


def start_shards(shards: Path, params: dict) -> None:
    """Make the shard directory (once the run's checks have passed) and record its parameters."""
    if not shards.exists():
        shards.mkdir(parents=True)
        (shards / "params.json").write_text(json.dumps(params, default=str))


def run_units(units: list[Unit], *, model=None, load: dict | None = None, cluster: Cluster | None = None,
              shards: Path | None = None, progress: bool = True, desc: str = "units") -> list[dict[str, pd.DataFrame]]:
    """Each unit's frames (``{name: frame}``; a unit that returns one frame gives ``{"rows": frame}``), in the
    units' order. Here: on ``model`` (or one loaded with ``load_model(**load)``); with ``cluster``: on Ray actors
    that each load ``load``. With ``shards``, finished units are read back and new ones written there."""
    keys = [u.key for u in units]
    if len(set(keys)) != len(keys):
        raise ValueError("unit keys must be unique")
    done = {u.key for u in units if shards is not None and _finished(shards, u.key)}
    pending = [u for u in units if u.key not in done]
    progress = progress and len(pending) > 1  # one unit's bar says nothing (and would precede a mistake's one line)
    try:
        results = _run(pending, model, load, cluster, shards, progress, desc)
    except HeadscopeError:  # a mistake the units found (a prompt the model cannot take) fails every run alike:
        if shards is not None and shards.is_dir():  # nothing is left behind
            shutil.rmtree(shards)
        raise
    return [results.get(u.key) or _read(shards, u.key) for u in units]


def _run(pending: list[Unit], model, load, cluster, shards, progress, desc) -> dict[str, dict[str, pd.DataFrame]]:
    results: dict[str, dict[str, pd.DataFrame]] = {}
    if cluster is None:
        if pending and model is None:
            from ..models.loading import load_model

            model = load_model(**load)
        for unit in tracked(pending, desc=desc, unit="unit", disable=not progress):
            results[unit.key] = _frames(unit.fn(model, **unit.kwargs))
            if shards is not None:
                _write(shards, unit.key, results[unit.key])
    elif pending:
        if shards is None:
            raise ValueError("a Ray run writes its units' rows as shards: give shards")
        _on_ray(pending, load, cluster, shards, progress, desc)
    return results


def _frames(value) -> dict[str, pd.DataFrame]:
    return value if isinstance(value, dict) else {"rows": value}


def _finished(shards: Path, key: str) -> bool:
    return (shards / f"{key}.done.parquet").is_file()


def _write(shards: Path, key: str, frames: dict[str, pd.DataFrame]) -> None:
    """The unit's frames, each written to a temporary name and renamed; a last marker says it is whole."""
    for name, frame in frames.items():
        tmp = shards / f"{key}.{name}.tmp"
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, shards / f"{key}.{name}.parquet")
    marker = shards / f"{key}.done.tmp"
    pd.DataFrame({"table": list(frames)}).to_parquet(marker, index=False)
    os.replace(marker, shards / f"{key}.done.parquet")


def _read(shards: Path, key: str) -> dict[str, pd.DataFrame]:
    from ..results.result import read_table

    names = read_table(shards / f"{key}.done.parquet")["table"].tolist()
    return {name: read_table(shards / f"{key}.{name}.parquet") for name in names}


class _Worker:
    """A Ray actor: one model copy, loaded once, running units and writing their shards."""

    def __init__(self, load: dict):
        import ray
        import torch

        from ..models.loading import load_model

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        if cpus:  # the worker's share of the cores: torch would otherwise take every core of the machine
            torch.set_num_threads(max(1, int(cpus)))
        self.model = load_model(**load)

    def run(self, unit: Unit, shards: str) -> str:
        _write(Path(shards), unit.key, _frames(unit.fn(self.model, **unit.kwargs)))
        return unit.key


class _Session:
    """Ray for one analysis: started here when it is not running already, and the workers of each model
    kept for the analysis's later units (a report's second stage reuses them), all given back at the end."""

    current: "_Session | None" = None

    def __init__(self, cluster: Cluster):
        self.cluster, self.workers, self.started = cluster, {}, False

    def __enter__(self) -> "_Session":
        import ray

        if not ray.is_initialized():
            try:
                ray.init(address=None if self.cluster.address == "local" else self.cluster.address,
                         include_dashboard=False, log_to_driver=False, configure_logging=False,
                         runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
            except ConnectionError:  # --ray auto on a machine that belongs to no cluster
                raise HeadscopeError(f"Ray address {self.cluster.address!r}: no running Ray cluster was found; "
                                     "start one (ray start --head) or use --ray local") from None
            self.started = True
        self.outer, _Session.current = _Session.current, self
        return self

    def __exit__(self, *exc) -> None:
        import ray

        _Session.current = self.outer
        for actors in self.workers.values():
            for actor in actors:
                ray.kill(actor)
        if self.started:
            ray.shutdown()

    def actors(self, load: dict, wanted: int) -> list:
        """The workers holding the model ``load`` names (made on first use): one per GPU or share of the CPUs."""
        import ray

        key = json.dumps(load, sort_keys=True, default=str)
        if key not in self.workers:
            resources = ray.cluster_resources()
            gpus = int(resources.get("GPU", 0))
            count = self.cluster.workers or gpus or 2
            per_worker = {"num_gpus": 1} if gpus else {"num_cpus": max(1, int(resources.get("CPU", 1)) // count)}
            remote = ray.remote(max_restarts=3, max_task_retries=3, **per_worker)(_Worker)
            self.workers[key] = [remote.remote(load) for _ in range(min(count, wanted))]
        return self.workers[key]


def on_cluster(cluster: Cluster | None):
    """``with on_cluster(cluster):`` the analysis's ``run_units`` calls share one Ray and its workers."""
    return _Session(cluster) if cluster is not None else contextlib.nullcontext()


def _on_ray(units: list[Unit], load: dict, cluster: Cluster, shards: Path, progress: bool, desc: str) -> None:
    """Run ``units`` on Ray actors (module docstring); their shards land in ``shards``."""
    from ray.exceptions import RayTaskError
    from ray.util import ActorPool

    with contextlib.ExitStack() as stack:
        session = _Session.current or stack.enter_context(_Session(cluster))
        pool = ActorPool(session.actors(load, len(units)))
        results = pool.map_unordered(lambda actor, unit: actor.run.remote(unit, str(shards)), units)
        try:
            for _ in tracked(results, desc=desc, unit="unit", disable=not progress, total=len(units)):
                pass
        except RayTaskError as err:  # a unit's own error (a mistake it found), as the single-process run raises it
            if isinstance(err.cause, (HeadscopeError, HeadscopeFailure)):
                raise err.cause from None
            raise
