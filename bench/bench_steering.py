"""Steering and Hydra benchmark: prints ratios, never asserts timings.

1. A strength x layer sweep of 20 settings (4 layers x 5 strengths of a mean-difference vector from
   the shipped sentiment pairs), each setting's greedy continuation of a prompt: every setting as a
   row of one batched decode vs one generation per setting (the texts compared); and the sweep's
   behaviour and cost forwards (settings as rows starting at their layer) vs one forward per setting,
   prompt and passage (the values compared);
2. the Hydra check of every attention, MLP and head output vs the bare forwards it needs (one
   full-depth forward per component and prompt, batched, no hooks).

CPU:  python bench/bench_steering.py --model default
GPU:  python bench/bench_steering.py --model random:llama-1b --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import time

import torch

from headscope.circuits.prompt_sets import read_prompt_set
from headscope.circuits.steering import Setting, Steering, hydra, mean_difference, read_pairs, steer_sweep
from headscope.circuits.steering.apply import CONTROLS
from headscope.probes import load_model, run
from headscope.probes.engine.generate import generate
from headscope.probes.engine.batching import chunks
from headscope.probes.text.corpus import passages


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
    parser.add_argument("--tokens", type=int, default=24, help="tokens generated per setting")
    parser.add_argument("--hydra-prompts", type=int, default=4)
    args = parser.parse_args()
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    where = torch.cuda.get_device_name(model.device) if model.device.type == "cuda" else "CPU"
    print(f"model {args.model}: {model.n_layers} layers, {model.info()['dtype']}, {where}")

    L = model.n_layers
    layers = sorted({L // 4, L // 2 - 1, L // 2, 3 * L // 4})
    strengths = [0.5, 1.0, 2.0, 4.0, 8.0]
    vector = mean_difference(model, read_pairs("sentiment-pairs"), layers)
    settings = [Setting(layer, s) for layer in layers for s in strengths]
    steering = Steering(model, vector)
    prompt = read_prompt_set("sentiment").records[0]["prompt"]
    n = len(model.tokenize(prompt))

    def hooks_for(rows):
        return lambda group, first: steering.interventions([rows[i] for i in group], first, torch.full((len(group),), n - 1),
                                                           torch.full((len(group),), n))

    def batched():
        new = generate(model, [prompt] * len(settings), args.tokens, stop_at_eos=False, batch_size=len(settings),
                       interventions=hooks_for(settings))
        return model.tokenizer.batch_decode(new)

    def loop():
        return [model.tokenizer.decode(generate(model, [prompt], args.tokens, stop_at_eos=False,
                                                interventions=hooks_for([s]))[0]) for s in settings]

    batched()  # warm-up
    t_fast, fast = timed(model, batched)
    t_loop, slow = timed(model, loop)
    same = sum(a == b for a, b in zip(fast, slow))
    print(f"{len(settings)} settings x {args.tokens} generated tokens: batched rows {t_fast:.2f} s, one generation per "
          f"setting {t_loop:.2f} s; ratio {t_loop / t_fast:.1f}x (goal: 5x CPU, 15x GPU); same text {same}/{len(settings)}")

    records = read_prompt_set("sentiment").records[:8]
    texts = passages("test")[:4]
    kw = dict(cost_texts=texts, cost_tokens=64, n_generate=0, progress=False)
    steer_sweep(model, vector, records[:2], layers=layers[:1], strengths=[1.0], **kw)  # warm-up
    t_sweep, sweep = timed(model, lambda: steer_sweep(model, vector, records, layers=layers, strengths=strengths, **kw))

    def plain_forwards():  # one forward per (setting, control) and per prompt and passage
        out = []
        for layer in layers:
            for s in strengths:
                for control in CONTROLS:
                    setting = Setting(layer, s, control)
                    for text in [r["prompt"] for r in records] + texts:
                        batch = model.batch([text])
                        run(model, batch, steering.interventions([setting], True, batch.last, batch.lengths.cpu()))
                        out.append(1)
        return out

    t_plain, _ = timed(model, plain_forwards)
    frame = sweep.frame
    print(f"behaviour + cost of {len(frame)} (setting, control) rows over {len(records)} prompts and {len(texts)} "
          f"passages: sweep {t_sweep:.2f} s, one forward per row and text {t_plain:.2f} s; ratio {t_plain / t_sweep:.1f}x")
    best = frame[frame["control"] == "vector"].sort_values("behaviour").iloc[-1]
    clean = frame[frame["control"] == "zero"].iloc[0]
    print(f"  largest behaviour {best['behaviour']:.3f} (layer {best['layer']}, strength {best['strength']:g}, cost "
          f"{best['cost']:.3f}); clean {clean['behaviour']:.3f}, cost {clean['cost']:.3f}")

    ioi = read_prompt_set("ioi").records[:args.hydra_prompts]
    hydra(model, ioi[:1], components=("attn",), progress=False)  # warm-up
    t_hydra, result = timed(model, lambda: hydra(model, ioi, progress=False))
    toks = [model.tokenize(r["prompt"]) for r in ioi]
    rows = [t for t in toks for _ in range(len(result.frame))]
    per = max(1, 512 * 4 // max(len(t) for t in toks)) if model.device.type == "cpu" else 1024

    def bare():
        for sl in chunks(len(rows), per):
            b = model.batch(rows[sl])
            run(model, b, logits_at=b.last)
    t_bare, _ = timed(model, bare)
    print(f"Hydra check of {len(result.frame)} components over {len(ioi)} IOI prompts: {t_hydra:.2f} s; the bare "
          f"full-depth forwards of the same {len(rows)} rows {t_bare:.2f} s; hydra / bare = {t_hydra / t_bare:.2f}")
    heads = result.frame[result.frame["component"] == "head"]
    print(f"  heads' self-repair: mean {heads['self_repair'].mean():.3f}, largest {heads['self_repair'].max():.3f}; "
          f"the final norm's part of it: mean {heads['norm_repair'].mean():.3f}")


if __name__ == "__main__":
    main()
