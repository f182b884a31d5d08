"""Ray benchmark: a head report over 8 prompt sets, run in this process and on Ray workers. Prints
ratios and whether each report equals the single-process one; never asserts timings.

1. overhead: one Ray worker that has every core of the machine vs the single-process run (goal: at
   most 1.1x the time);
2. scaling: two workers of one core each vs one worker of one core (goal: at least 1.7x on a 2-core
   machine).

Each run starts from the model's name, as the command does: the single-process run loads the model
once, each worker loads its own copy, and a Ray run's time includes starting Ray. The configurations
alternate within each repeat (the machine's speed drifts); the median of the repeats is printed.

CPU: python bench/bench_ray.py --model default --per-set 4 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from headscope.circuits.heads.report import head_report
from headscope.data import read_jsonl
from headscope.probes.engine.units import Cluster


def prompt_sets(folder: Path, n_sets: int, per_set: int) -> list[Path]:
    """``n_sets`` files of ``per_set`` IOI prompts each, consecutive records of the shipped set."""
    records = read_jsonl("ioi.jsonl")
    if n_sets * per_set > len(records):
        raise SystemExit(f"the IOI set has {len(records)} prompts, fewer than {n_sets} x {per_set}")
    files = []
    for i in range(n_sets):
        path = folder / f"ioi-{i}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records[i * per_set:(i + 1) * per_set]))
        files.append(path)
    return files


def report(model: str, sets: list[Path], out: Path, cpus: int | None, workers: int | None) -> float:
    """Seconds for one head report: here (``cpus`` None) or on a Ray of ``cpus`` cores with ``workers`` workers."""
    import ray

    start = time.perf_counter()
    if cpus is not None:
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        head_report([model], sets, out, cluster=None if cpus is None else Cluster("local", workers), progress=False)
    finally:
        if cpus is not None:
            ray.shutdown()
    return time.perf_counter() - start


def difference(table: pd.DataFrame, base: pd.DataFrame) -> str:
    """``equal``, or the largest difference of the numbers (a worker of one core sums in another order than
    a process of two)."""
    if table.equals(base):
        return "equal"
    if not table.drop(columns=table.select_dtypes("number").columns).equals(
            base.drop(columns=base.select_dtypes("number").columns)):
        return "DIFFERENT rows"
    numbers = table.select_dtypes("number")
    return f"largest difference {(numbers - base[numbers.columns]).abs().max().max():.1e}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--sets", type=int, default=8)
    parser.add_argument("--per-set", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", choices=("overhead", "scaling"), default=None, help="one of the two comparisons")
    args = parser.parse_args()
    cores = os.cpu_count()
    configs = {"single process": (None, None)}  # the reference for the tables, always run
    if args.only != "scaling":
        configs[f"Ray, 1 worker of {cores} cores"] = (cores, 1)
    if args.only != "overhead":
        configs.update({"Ray, 1 worker of 1 core": (1, 1), "Ray, 2 workers of 1 core": (2, 2)})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sets = prompt_sets(folder, args.sets, args.per_set)
        times: dict[str, list[float]] = {name: [] for name in configs}
        tables: dict[str, pd.DataFrame] = {}
        for r in range(args.repeats):
            for name, (cpus, workers) in configs.items():
                if name == "single process" and args.only == "scaling" and r:
                    continue  # only the reference table is needed
                out = folder / f"run-{r}-{len(times[name])}-{name.split(',')[-1].strip().replace(' ', '-')}"
                times[name].append(report(args.model, sets, out, cpus, workers))
                tables[name] = pd.read_parquet(out / "heads.parquet")
                print(f"  repeat {r + 1}: {name}: {times[name][-1]:.1f} s", flush=True)
    t = {name: statistics.median(v) for name, v in times.items()}
    base = tables["single process"]
    print(f"head report, {args.model}, {args.sets} prompt sets x {args.per_set} IOI prompts, {cores} cores, "
          f"median of {args.repeats}:")
    for name in configs:
        print(f"  {name}: {t[name]:.1f} s, heads table vs the single-process one: {difference(tables[name], base)}")
    if args.only != "scaling":
        print(f"overhead: Ray 1 worker of {cores} cores / single process = "
              f"{t[f'Ray, 1 worker of {cores} cores'] / t['single process']:.2f} (goal <= 1.1)")
    if args.only != "overhead":
        print(f"scaling: 1 worker of 1 core / 2 workers of 1 core = "
              f"{t['Ray, 1 worker of 1 core'] / t['Ray, 2 workers of 1 core']:.2f}x (goal >= 1.7)")


if __name__ == "__main__":
    main()
