"""Engine benchmark: prints ratios, never asserts timings.

1. capture of every layer's residual stream (last position) vs the bare batched forward passes;
2. single-head zero ablations of every head of one layer: one forward per ablation (batch 1 each)
   vs all of them as rows of one batch (per-row ``Edit``), and the same batch started at that
   layer from the cached residual stream.

CPU:  python bench/bench_engine.py --model default
GPU:  python bench/bench_engine.py --model random:llama-1b --device cuda --dtype bfloat16 --seq-len 512
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from headscope.probes import Edit, capture, load_model, run
from headscope.probes.engine.batching import chunks


def timed(fn, device, repeats: int) -> float:
    return interleaved([fn], device, repeats)[0]


def interleaved(fns, device, repeats: int) -> list[float]:
    """Median seconds of each of ``fns``, taken in turns within each repeat (the machine's speed drifts
    between repeats: timed one after another, two equal functions differed by 1.4x on the 2-core CPU)."""
    for fn in fns:
        fn()  # warm-up
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, kept in zip(fns, times):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            kept.append(time.perf_counter() - start)
    return [statistics.median(kept) for kept in times]


def make_prompt(model, n_tokens: int) -> str:
    words = "the quiet river runs past an old mill where seven children play every summer afternoon".split()
    text = words[0]
    while len(model.tokenize(text)) < n_tokens:
        text += " " + words[len(text.split()) % len(words)]
    return text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = load_model(args.model, device=args.device, dtype=args.dtype)
    dev = model.device
    print(f"model {args.model}: {model.n_layers} layers x {model.n_heads} heads, {model.info()['dtype']}, "
          f"{torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'CPU'}, torch {torch.__version__}")
    prompt = make_prompt(model, args.seq_len)
    prompts = [prompt] * args.prompts
    n_tok = len(model.tokenize(prompt))

    def bare():
        for sl in chunks(len(prompts), args.batch_size):
            batch = model.batch(prompts[sl])
            run(model, batch, logits_at=batch.last)

    def cap():
        capture(model, prompts, "blocks.*.hook_resid_post", positions="last", batch_size=args.batch_size,
                progress=False)

    t_bare, t_cap = interleaved([bare, cap], dev, args.repeats)
    print(f"capture all {model.n_layers} resid_post (last pos), {args.prompts} prompts x {n_tok} tokens: "
          f"{t_cap * 1e3:.1f} ms vs bare forward {t_bare * 1e3:.1f} ms -> capture/bare = {t_cap / t_bare:.2f}")

    layer, heads = model.n_layers // 2, torch.arange(model.n_heads)
    hook = f"blocks.{layer}.attn.hook_z"
    one = model.batch([prompt])
    many = model.batch([prompt] * model.n_heads)
    resid = run(model, many, record=[f"blocks.{layer}.hook_resid_pre"]).cache[f"blocks.{layer}.hook_resid_pre"]

    def loop():
        for h in range(model.n_heads):
            edit = Edit(hook, rows=torch.tensor([0]), heads=torch.tensor([h]))
            run(model, one, interventions=[edit], logits_at=one.last)

    def batched():
        run(model, many, interventions=[Edit(hook, rows=heads, heads=heads)], logits_at=many.last)

    def batched_from_layer():
        run(model, many, interventions=[Edit(hook, rows=heads, heads=heads)], start_layer=layer, resid=resid,
            logits_at=many.last)

    t_loop, t_batch, t_start = (timed(f, dev, args.repeats) for f in (loop, batched, batched_from_layer))
    print(f"{model.n_heads} single-head ablations at layer {layer}, {n_tok} tokens: one-by-one {t_loop * 1e3:.1f} ms, "
          f"batched {t_batch * 1e3:.1f} ms, batched from layer {layer} {t_start * 1e3:.1f} ms")
    print(f"  ratio one-by-one / batched = {t_loop / t_batch:.2f}; one-by-one / batched-from-layer = {t_loop / t_start:.2f}")


if __name__ == "__main__":
    main()
