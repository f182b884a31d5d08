"""Edge attribution benchmark: prints ratios, never asserts timings.

1. EAP over every edge of the graph vs one bare forward + backward over the same prompts (the
   issue's goal: at most 3x);
2. EAP-IG with ``--steps`` m vs EAP (about m);
3. exact edge patching of the top ``--edges`` edges, batched, vs one forward per edge (the same
   values, checked), on ``--loop`` of them and scaled to all;
4. the faithfulness curve's circuits (MIB's 10 sizes, top edges by EAP, pruned), evaluated as rows of
   batched forwards vs one forward per (circuit, prompt) (the same values, checked).

The prompts are the IOI set (logit difference), or greater-than (probability difference of the
answer sets) where the model's tokenizer gives the IOI names' targets and foils one first token (a
random model's small tokenizer: every logit difference would be 0).

CPU:  python bench/bench_edges.py --model default
GPU:  python bench/bench_edges.py --model random:llama-1b --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import torch

from headscope.circuits.edges import EdgeGraph, circuit_metrics, edge_attribution, exact_edge_effects, prune, top_edges
from headscope.circuits.edges.faithfulness import FRACTIONS
from headscope.circuits.edges.prompts import edge_prompts
from headscope.circuits.metrics import answers, target_metric
from headscope.circuits.prompt_sets import answer_metric, as_prompt_set, keeping_length, read_prompt_set
from headscope.probes import load_model, run


def timed(fn, repeats: int, model) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def agreement(fast: np.ndarray, plain: np.ndarray) -> str:
    """How far the fast path's values are from the plain loop's, relative to the largest of them (a
    check that cannot pass by all values being 0)."""
    scale = float(np.abs(plain).max())
    return (f"largest |value| {scale:.3g}, largest difference {np.abs(fast - plain).max() / scale:.1e} of it"
            if scale else "every value is 0: nothing compared")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--edges", type=int, default=500)
    parser.add_argument("--loop", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    # the prompts whose corruption has their token length under this model's tokenizer (all of IOI for
    # the default model), repeated up to --prompts
    kept = [r for r in keeping_length(model, read_prompt_set("ioi").records)
            if model.first_token(r["target"])[0] != model.first_token(r["foil"])[0]]
    task = "IOI" if kept else "greater-than"
    kept = kept or keeping_length(model, read_prompt_set("greater-than").records)
    prompts = as_prompt_set((kept * args.prompts)[:args.prompts])
    metric = answer_metric(prompts.records)
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    batch = model.batch([r["prompt"] for r in prompts.records])
    target, foil = answers(edge_prompts(model, prompts, metric, "prompt"), range(len(prompts)), metric,
                           model.vocab_size, model.device)

    def bare():
        out = run(model, batch, grad=True, logits_at=batch.last)
        target_metric(out.logits, metric, target, foil).sum().backward()

    timed(bare, 1, model)
    t_bare, _ = timed(bare, args.repeats, model)
    rss_bare = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (Linux reports KiB)
    t_eap, eap = timed(lambda: edge_attribution(model, prompts, metric=metric, progress=False), args.repeats, model)
    peak = (f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if model.device.type == "cuda"
            else f"peak process memory {rss_bare:.2f} GiB after the bare passes, "
                 f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB after EAP")
    t_ig, ig = timed(lambda: edge_attribution(model, prompts, method="eap-ig", metric=metric, steps=args.steps,
                                              progress=False), 1, model)
    print(f"{model.spec} on {model.device.type}, {len(prompts)} {task} prompts ({len(kept)} distinct, {metric}), "
          f"{eap.meta['graph']}")
    print(f"EAP over every edge / bare forward + backward: {t_eap / t_bare:.2f} ({t_eap:.2f} s vs {t_bare:.3f} s); "
          f"{peak}")
    print(f"EAP-IG ({args.steps} steps) / EAP: {t_ig / t_eap:.2f}")
    top = eap.top(args.edges).frame
    t_exact, exact = timed(lambda: exact_edge_effects(model, prompts, top, metric=metric, progress=False), 1, model)
    few = top.iloc[:args.loop]
    # the plain loop: the same differences, one forward per (prompt, edge)
    t_loop, loop = timed(lambda: exact_edge_effects(model, prompts, few, metric=metric, batch_size=1, progress=False),
                         1, model)
    per_edge = t_loop / len(few)
    checked = agreement(exact["exact_effect"].to_numpy()[:len(few)], loop["exact_effect"].to_numpy())
    print(f"exact patching of the top {len(top)} edges, batched / one forward per edge: "
          f"{per_edge * len(top) / t_exact:.1f}x ({t_exact:.2f} s vs {per_edge * len(top):.2f} s, the loop timed on "
          f"{len(few)} edges); {checked}")
    rank = exact[["exact_effect"]].assign(eap=top["effect"].to_numpy()).corr(method="spearman").iloc[0, 1]
    print(f"Spearman correlation of EAP and exact effects over those edges: {rank:.2f}")
    # how close each estimate comes to the exact effects of the same edges
    truth = exact["exact_effect"].to_numpy()
    ig_top = ig.frame.set_index(["upstream", "downstream"]).loc[list(zip(top["upstream"], top["downstream"])), "effect"]
    for name, values in (("EAP", top["effect"].to_numpy()), (f"EAP-IG ({args.steps} steps)", ig_top.to_numpy())):
        error = np.abs(values - truth).sum() / np.abs(truth).sum()
        rho = np.corrcoef(np.argsort(np.argsort(values)), np.argsort(np.argsort(truth)))[0, 1]
        print(f"{name} vs exact over those edges: relative L1 error {error:.3f}, Spearman {rho:.3f}")
    graph = EdgeGraph.of(model)
    effect = eap.frame["effect"].to_numpy()
    masks = np.stack([prune(graph, top_edges(graph, effect, max(1, round(f * graph.n_edges)))) for f in FRACTIONS])
    t_batched, batched = timed(lambda: circuit_metrics(model, prompts, masks, metric=metric, progress=False), 1, model)
    t_plain, plain = timed(lambda: circuit_metrics(model, prompts, masks, metric=metric, batch_size=1, progress=False),
                           1, model)
    print(f"faithfulness curve ({len(masks)} circuits x {len(prompts)} prompts), batched / one forward per row: "
          f"{t_plain / t_batched:.1f}x ({t_batched:.2f} s vs {t_plain:.2f} s); {agreement(batched, plain)}")


if __name__ == "__main__":
    main()
