"""Component-level composition: every writer head's SVD components against every later reader head, for
one kind, vectorised (one product per writer layer) vs a plain loop over (writer, reader) pairs that forms
each pair's component scores from the OV SVD and the reader's d_model x d_model matrix. The loop runs on
a sample of pairs and is scaled to all of them.

CPU:  python bench/bench_composition.py --model default
GPU:  python bench/bench_composition.py --model random:llama-1b --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from headscope.circuits.composition.scores import component_scores, reader_factor, writer_svd
from headscope.circuits.composition.weights import head_weights
from headscope.probes import load_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--kind", default="q")
    parser.add_argument("--sample", type=int, default=200, help="pairs the plain loop times")
    args = parser.parse_args()
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    w = head_weights(model)
    L, H = model.n_layers, model.n_heads
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    svd = writer_svd(w)
    start = time.perf_counter()
    factor = reader_factor(w, args.kind)
    for layer in range(L - 1):
        component_scores(w, args.kind, layer, svd=svd, factor=factor)
    peak = H * model.d_head * (L - 1) * H * model.d_head  # the first writer layer's product, the largest
    sync()
    fast = time.perf_counter() - start
    pairs = [((a, b), (c, d)) for a in range(L) for b in range(H) for c in range(a + 1, L) for d in range(H)]
    sample = random.Random(0).sample(pairs, min(args.sample, len(pairs)))
    u, s, vh = svd
    start = time.perf_counter()
    for (wl, wh), (rl, rh) in sample:
        m = {"q": lambda: w.qk(rl, rh), "k": lambda: w.qk(rl, rh).T, "v": lambda: w.ov(rl, rh)}[args.kind]()
        ov_norm = s[wl, wh].norm()
        scores = torch.stack([(s[wl, wh, i] * vh[wl, wh, i] @ m).norm() for i in range(model.d_head)])
        (scores / ov_norm / m.norm()).tolist()
    sync()
    loop = (time.perf_counter() - start) / len(sample) * len(pairs)
    print(f"{args.model} on {model.device}: {L * H} heads x {model.d_head} components x later readers "
          f"({len(pairs)} pairs), kind {args.kind}")
    print(f"  vectorised {fast:.2f} s (largest block, one writer layer, {peak * 4 / 2**20:.0f} MiB); plain loop {loop:.1f} s "
          f"(timed on {len(sample)} pairs, scaled) = {loop / fast:.0f}x")


if __name__ == "__main__":
    main()
