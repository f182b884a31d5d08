"""Causal-tracing benchmark: the batched tracer vs the reference's plain per-cell loop (ratio).

The plain loop is the reference's (kmeng01/rome): one forward per (kind, layer, token) cell over
samples + 1 rows, row 0 clean and the restored value copied from it, full logits. Every cell costs
the same forward, so the loop is timed on ``--loop-cells`` cells drawn at random and scaled to all
cells (``--loop-cells 0`` runs them all). Also checks that the sampled cells agree.

CPU:  python bench/bench_tracing.py --model default
GPU:  python bench/bench_tracing.py --model random:llama-1b --device cuda --dtype bfloat16

The default prompt's subject comes first, so every token is traced (the worst case for skipping);
``--facts N`` adds N shipped facts, whose subjects sit anywhere.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from headscope.circuits.causal.fact_effects import known_facts, read_facts
from headscope.circuits.causal.tracing import trace, window_layers
from headscope.data import DATA_DIR
from headscope.probes import load_model
from headscope.probes.engine.attention_mode import attention_mode

HOOKS = {"resid": "blocks.{}.hook_resid_post", "mlp": "blocks.{}.hook_mlp_out", "attn": "blocks.{}.hook_attn_out"}


def sync(model):
    if model.device.type == "cuda":
        torch.cuda.synchronize()


def plain_cell(model, meta, noise, ids, cell) -> float:
    kind, layer, t = cell
    subject = meta["subject_positions"]

    def add_noise(x, hook):
        x = x.clone()
        x[1:, subject] += noise.to(x.device, x.dtype)
        return x

    def restore(x, hook):
        x = x.clone()
        x[1:, t] = x[0, t]
        return x

    restored = [layer] if kind == "resid" else window_layers(layer, meta["window"], model.n_layers)
    fwd = [("hook_embed", add_noise)] + [(HOOKS[kind].format(j), restore) for j in restored]
    with torch.no_grad(), attention_mode(model, "sdpa"):
        logits = model.bridge.run_with_hooks(ids, fwd_hooks=fwd)
    return float(torch.softmax(logits[1:, -1].float(), -1)[:, meta["target_token_id"]].mean())


def bench_one(model, prompt: str, subject: str, args) -> tuple[float, float]:
    """(batched seconds, plain-loop seconds) for the full trace of one fact; prints both."""
    times = []
    for _ in range(1 + args.repeats):  # the first run warms up (allocator, kernels), like the loop's first cell
        sync(model)
        start = time.perf_counter()
        result = trace(model, prompt, subject, samples=args.samples, progress=False)
        sync(model)
        times.append(time.perf_counter() - start)
    fast = statistics.median(times[1:])
    meta = result.meta
    n = meta["last_position"] + 1
    cells = [(k, l, t) for k in ("resid", "mlp", "attn") for l in range(model.n_layers) for t in range(n)]
    sample = cells if args.loop_cells == 0 else random.Random(0).sample(cells, min(args.loop_cells, len(cells)))
    gen = torch.Generator().manual_seed(meta["seed"])
    noise = torch.randn(args.samples, len(meta["subject_positions"]), model.d_model, generator=gen) * meta["noise_scale"]
    ids = torch.tensor([model.tokenize(prompt).ids] * (args.samples + 1), device=model.device)
    plain_cell(model, meta, noise, ids, sample[0])  # warm-up
    sync(model)
    start = time.perf_counter()
    plain = {c: plain_cell(model, meta, noise, ids, c) for c in sample}
    sync(model)
    loop = (time.perf_counter() - start) * len(cells) / len(sample)
    scores = result.frame.set_index(["kind", "layer", "position"])["score"]
    worst = max(abs(scores[c] - v) for c, v in plain.items())
    print(f"{prompt!r} (subject {subject!r} at {meta['subject_positions']}): 3 kinds x {model.n_layers} layers x "
          f"{n} tokens, {args.samples} samples: batched {fast:.2f} s (median of {args.repeats}); plain loop "
          f"{loop:.2f} s ({len(cells)} forwards{', extrapolated from ' + str(len(sample)) if len(sample) < len(cells) else ''})")
    print(f"  ratio plain loop / batched = {loop / fast:.1f}; max |score difference| on the compared cells = {worst:.2e}",
          flush=True)
    return fast, loop


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--prompt", default="The Eiffel Tower is located in the city of")
    parser.add_argument("--subject", default="The Eiffel Tower")
    parser.add_argument("--facts", type=int, default=0,
                        help="also trace this many shipped facts the model knows and print the overall ratio")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--loop-cells", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the batched trace (median)")
    args = parser.parse_args()

    model = load_model(args.model, device=args.device, dtype=args.dtype)
    print(f"model {args.model}: {model.n_layers} layers, {model.info()['dtype']}, "
          f"{torch.cuda.get_device_name(model.device) if model.device.type == 'cuda' else 'CPU'}")
    bench_one(model, args.prompt, args.subject, args)
    if args.facts:
        facts = known_facts(model, read_facts(DATA_DIR / "facts.jsonl"))
        picked = random.Random(0).sample(facts, min(args.facts, len(facts)))
        totals = [bench_one(model, f["prompt"], f["subject"], args) for f in picked]
        fast, loop = (sum(t[i] for t in totals) for i in range(2))
        print(f"{len(picked)} shipped facts: batched {fast:.2f} s, plain loop {loop:.2f} s, "
              f"ratio plain loop / batched = {loop / fast:.1f}")


if __name__ == "__main__":
    main()
