"""Head-ablation benchmark: prints ratios, never asserts timings.

1. All-heads zero-ablation sweep (every head, every position) vs the plain loops that ablate one
   head per forward pass: on one prompt at a time (the references' way) and over the padded batch
   of all prompts (the strongest plain loop), with the results compared;
2. the sweep's wall time vs the bare batched forward passes over the same rows (no hooks, every
   layer), i.e. how close to the hardware it runs once start-layer skipping is counted;
3. gradient importance (one forward + backward) vs the exact sweep.

CPU:  python bench/bench_heads.py --model default
GPU:  python bench/bench_heads.py --model random:llama-1b --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from headscope.circuits.heads.ablation import all_heads, prepare
from headscope.circuits.heads.single_heads import head_ablation
from headscope.circuits.heads.importance import gradient_importance
from headscope.probes import Intervention, load_model, run
from headscope.probes.engine.batching import chunks

PROMPTS = [
    ("The Eiffel Tower is located in the city of", " Paris"),
    ("When Mary and John went to the store, John gave a drink to", " Mary"),
    ("The capital of Germany is the city of", " Berlin"),
    ("Two plus three equals", " five"),
]


def sync(model):
    if model.device.type == "cuda":
        torch.cuda.synchronize()


def timed(model, fn):
    sync(model)
    start = time.perf_counter()
    out = fn()
    sync(model)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--loop-heads", type=int, default=60, help="heads the plain loop times (scaled to all)")
    args = parser.parse_args()

    model = load_model(args.model, device=args.device, dtype=args.dtype)
    heads = all_heads(model)
    print(f"model {args.model}: {model.n_layers} layers x {model.n_heads} heads = {len(heads)}, "
          f"{model.info()['dtype']}, {torch.cuda.get_device_name(model.device) if model.device.type == 'cuda' else 'CPU'}")
    records = [{"prompt": p, "target": t} for p, t in PROMPTS]
    toks = [model.tokenize(p) for p, _ in PROMPTS]
    batch = model.batch(toks)
    tid = torch.tensor([model.first_token(t)[0] for _, t in PROMPTS])

    head_ablation(model, records[:1], heads=heads[:2], progress=False)  # warm-up
    fast, result = timed(model, lambda: head_ablation(model, records, progress=False))

    def plain(layer, head, b, ids):
        def zero(z, hook=None):
            z = z.clone()
            z[:, :, head] = 0
            return z
        logits = run(model, b, [Intervention.apply(f"blocks.{layer}.attn.hook_z", zero)], logits_at=b.last).logits
        return torch.log_softmax(logits.float(), -1)[torch.arange(len(b)), ids.to(logits.device)].cpu().numpy()

    rng = np.random.default_rng(0)
    sample = [heads[i] for i in sorted(rng.choice(len(heads), min(args.loop_heads, len(heads)), replace=False))]
    singles = [model.batch([t]) for t in toks]
    frame = result.frame.set_index(["layer", "head", "prompt"])["ablated"]
    print(f"all-heads zero ablation (every position), {len(PROMPTS)} prompts: sweep {fast:.2f} s")
    for name, loop_fn in [
        ("one forward per head and prompt (the references' loop)",
         lambda h: np.concatenate([plain(*h, b, tid[i:i + 1]) for i, b in enumerate(singles)])),
        ("one forward per head over the padded batch of prompts", lambda h: plain(*h, batch, tid)),
    ]:
        loop_fn(sample[0])  # warm-up
        loop, values = timed(model, lambda: {h: loop_fn(h) for h in sample})
        loop *= len(heads) / len(sample)
        worst = max(float(np.abs(frame.loc[h].sort_index().to_numpy() - v).max()) for h, v in values.items())
        print(f"  plain loop, {name}: {loop:.2f} s (extrapolated from {len(sample)} heads); "
              f"ratio {loop / fast:.1f}; max |difference| {worst:.2e}", flush=True)

    rows = [t for t in toks for _ in heads]  # every (head, prompt) row, bare forwards over every layer
    per = max(1, 512 * 4 // max(len(t) for t in toks)) if model.device.type == "cpu" else 1024

    def bare():
        for sl in chunks(len(rows), per):
            b = model.batch(rows[sl])
            run(model, b, logits_at=b.last)
    run(model, model.batch(rows[:per]), logits_at=model.batch(rows[:per]).last)  # warm-up
    t_bare, _ = timed(model, bare)
    print(f"bare batched forwards over the same {len(rows)} rows, every layer: {t_bare:.2f} s; "
          f"sweep / bare = {fast / t_bare:.2f}")

    setup = prepare(model, records)
    gradient_importance(setup)  # warm-up (autograd)
    t_grad, _ = timed(model, lambda: gradient_importance(setup))
    print(f"gradient importance {t_grad:.2f} s; exact sweep / gradient = {fast / t_grad:.1f}")


if __name__ == "__main__":
    main()
