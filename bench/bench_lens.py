"""Lens benchmarks, each as a ratio to the bare forward of the same prompt: the logit lens and the
tuned lens over every layer and position, component decoding with direct logit attribution (every
attention, MLP and head output at the last position), and tuned-lens training per token (training
time / bare forwards over the same number of tokens).

CPU:  python bench/bench_lens.py --model default
GPU:  python bench/bench_lens.py --model random:llama-1b --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from headscope.probes import load_model, run
from headscope.probes.readouts.components import component_attribution
from headscope.probes.readouts.lens import logit_lens
from headscope.probes.readouts.tuned_lens import TunedLens, train_tuned_lens

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
    parser.add_argument("--train-tokens", type=int, default=512)
    args = parser.parse_args()
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    tokens = model.tokenize(TEXT)
    batch = model.batch([tokens])
    bare = median_time(model, lambda: run(model, batch))
    lens = median_time(model, lambda: logit_lens(model, TEXT))
    zero = TunedLens.zeros(model)  # a trained lens costs the same
    tuned = median_time(model, lambda: logit_lens(model, TEXT, lens=zero))
    comps = median_time(model, lambda: component_attribution(model, TEXT))
    cells = (model.n_layers + 1) * len(tokens)
    print(f"model {args.model} on {model.device}, {len(tokens)} tokens x {model.n_layers + 1} layers = {cells} cells: "
          f"bare forward {bare * 1000:.0f} ms")
    print(f"  logit lens / bare = {lens / bare:.1f}; tuned lens / bare = {tuned / bare:.1f}; "
          f"components ({model.n_layers * (model.n_heads + 2) + 1} decoded) / bare = {comps / bare:.1f}")
    seq = 128
    train = median_time(model, lambda: train_tuned_lens(model, tokens=args.train_tokens, steps=4, seq_len=seq,
                                                        progress=False), repeats=1)
    fwd = median_time(model, lambda: run(model, model.batch_of_ids(torch.zeros(8, seq, dtype=torch.long))))
    per_token_fwd = fwd / (8 * seq)
    print(f"  tuned-lens training, {args.train_tokens} tokens: {train:.1f} s, "
          f"{train / args.train_tokens * 1e6:.0f} us per token = {train / args.train_tokens / per_token_fwd:.1f}x "
          f"a bare forward per token")


if __name__ == "__main__":
    main()
