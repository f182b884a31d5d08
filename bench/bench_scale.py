"""Scale-out benchmark: a model split by a device map against the same model on one device, and the
memory-aware batch size of a large model. Prints ratios and differences, never asserts.

1. ``--split``: the model on one GPU, and the same model with a device map (``--max-memory`` caps the GPU so
   that the rest is offloaded to the CPU and brought in for each layer's forward): all-heads ablation,
   a causal trace and the logit lens on both, the largest difference of their numbers, and the split
   model's times relative to the one-device model's and to its own bare forward;
2. ``--batching``: the measured cost of one row, the automatic batch size at 512 tokens, and an all-heads
   ablation sweep with that batch size (its time and peak memory: it must neither run out of memory nor
   run at batch 1).

GPU: python bench/bench_scale.py --model random:llama-1b --dtype bfloat16 --split --max-memory 0=1GiB,cpu=64GiB
     python bench/bench_scale.py --model random:llama-8b --dtype bfloat16 --batching
"""

from __future__ import annotations

import argparse
import time

import torch

from headscope.circuits.causal import trace
from headscope.circuits.heads.single_heads import head_ablation
from headscope.probes import load_model, run
from headscope.probes.engine.batching import auto_batch_size, row_bytes
from headscope.probes.models.placement import parse_max_memory
from headscope.probes.readouts.lens import logit_lens

PROMPTS = [("The Eiffel Tower is located in the city of", " Paris"),
           ("When Mary and John went to the store, John gave a drink to", " Mary"),
           ("The capital of Germany is the city of", " Berlin"),
           ("Two plus three equals", " five")]


def timed(fn):
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start, out


def analyses(model):
    records = [{"prompt": p, "target": t} for p, t in PROMPTS]
    out = {}
    for name, fn in (("all-heads ablation", lambda: head_ablation(model, records, progress=False).frame["effect"]),
                     ("causal trace", lambda: trace(model, PROMPTS[0][0], "The Eiffel Tower", samples=4).frame["score"]),
                     ("logit lens", lambda: logit_lens(model, PROMPTS[0][0]).frame["target_prob"])):
        fn()  # warm-up
        out[name] = timed(fn)
    batch = model.batch([PROMPTS[0][0]])
    run(model, batch)
    out["bare forward"] = timed(lambda: run(model, batch).logits)
    return out


def split(args) -> None:
    # both placed the same way from the same CPU-built weights (a random model built on the GPU draws others)
    whole = load_model(args.model, dtype=args.dtype, device_map={"": 0})
    one = analyses(whole)
    del whole
    torch.cuda.empty_cache()
    model = load_model(args.model, dtype=args.dtype, device_map="auto", max_memory=parse_max_memory(args.max_memory))
    placed = model.hf_model.hf_device_map
    print(f"{args.model} split over {model.info()['devices']}: "
          f"{sum(1 for v in placed.values() if str(v) == 'cpu')} of {len(placed)} modules offloaded to the CPU")
    two = analyses(model)
    for name in one:
        (t1, a), (t2, b) = one[name], two[name]
        diff = float((torch.as_tensor(a.to_numpy() if hasattr(a, "to_numpy") else a.float().cpu())
                      - torch.as_tensor(b.to_numpy() if hasattr(b, "to_numpy") else b.float().cpu())).abs().max())
        print(f"  {name}: one GPU {t1:.3f} s, split {t2:.3f} s ({t2 / t1:.1f}x); split / its bare forward "
              f"{t2 / two['bare forward'][0]:.1f}; largest difference {diff:.2e}")
    print(f"  peak GPU memory of the split model {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


def batching(args) -> None:
    model = load_model(args.model, device="cuda", dtype=args.dtype)
    per_row = row_bytes(model, 512)
    size = auto_batch_size(model, 512)
    free, total = torch.cuda.mem_get_info()
    print(f"{args.model}: one row of 512 tokens costs {per_row / 2**20:.1f} MiB; free {free / 2**30:.1f} of "
          f"{total / 2**30:.1f} GiB; automatic batch size {size}")
    records = [{"prompt": (p + " ") * 40, "target": t} for p, t in PROMPTS]  # a few hundred tokens each
    torch.cuda.reset_peak_memory_stats()
    seconds, result = timed(lambda: head_ablation(model, records, progress=False))
    print(f"  all {len(result.frame) // len(records)} heads over {len(records)} prompts of "
          f"{[len(model.tokenize(r['prompt'])) for r in records][0]} tokens: {seconds:.2f} s, peak "
          f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB, no out-of-memory error")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="random:llama-1b")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--split", action="store_true")
    parser.add_argument("--max-memory", default="0=1GiB,cpu=64GiB")
    parser.add_argument("--batching", action="store_true")
    args = parser.parse_args()
    print(torch.cuda.get_device_name())
    if args.split:
        split(args)
    if args.batching:
        batching(args)


if __name__ == "__main__":
    main()
