"""Logit-lens benchmark: the lens over every layer and position vs the bare forward (ratio).

CPU:  python bench/bench_lens.py --model default
GPU:  python bench/bench_lens.py --model random:llama-1b --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from headscope.probes import load_model, run
from headscope.probes.lens import logit_lens

TEXT = ("The old mill stands by the river, where the water turns the wheel all day and the miller "
        "sells flour to the village. In the evening the children walk home along the bank and count the boats")


def median_time(model, fn, repeats=3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    tokens = model.tokenize(TEXT)
    batch = model.batch([tokens])
    bare = median_time(model, lambda: run(model, batch))
    lens = median_time(model, lambda: logit_lens(model, TEXT))
    cells = (model.n_layers + 1) * len(tokens)
    print(f"model {args.model}, {len(tokens)} tokens x {model.n_layers + 1} layers = {cells} cells: "
          f"bare forward {bare * 1000:.0f} ms, logit lens {lens * 1000:.0f} ms, lens / bare = {lens / bare:.1f}")


if __name__ == "__main__":
    main()
