"""Patching benchmark: attribution patching vs exact activation patching of every head (time ratio and
rank correlation), and the batched exact sweep vs TransformerLens's one-forward-per-cell function.

CPU:  python bench/bench_patching.py --model default
"""

from __future__ import annotations

import argparse
import time

import transformer_lens.patching as tl_patching

from headscope.circuits.metrics import target_metric
from headscope.circuits.causal.patching import activation_patching, attribution_patching, rank_correlation
from headscope.probes import load_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--clean", default="The capital of France is the city of")
    parser.add_argument("--corrupted", default="The capital of Italy is the city of")
    parser.add_argument("--target", default=" Paris")
    parser.add_argument("--foil", default=" Rome")
    args = parser.parse_args()
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    kinds = ("heads", "resid")
    patch_args = (model, args.clean, args.corrupted, args.target, args.foil)

    activation_patching(*patch_args, kinds=("resid",), progress=False)  # warm-up
    start = time.perf_counter()
    exact = activation_patching(*patch_args, kinds=kinds, progress=False)
    t_exact = time.perf_counter() - start
    start = time.perf_counter()
    approx = attribution_patching(*patch_args, kinds=kinds)
    t_approx = time.perf_counter() - start
    corr = rank_correlation(exact, approx).set_index("kind")["spearman"]
    print(f"model {args.model}: {model.n_layers} layers x {model.n_heads} heads, {model.info()['dtype']}, {model.device}")
    print(f"exact patching (heads all positions + resid by position) {t_exact:.2f} s; attribution {t_approx:.2f} s "
          f"-> exact/attribution = {t_exact / t_approx:.1f}")
    print(f"  Spearman rank correlation, attribution vs exact: heads {corr['heads']:.3f}, resid {corr['resid']:.3f}")

    meta = exact.meta
    clean_ids, corr_ids = model.batch([args.clean]).input_ids, model.batch([args.corrupted]).input_ids
    _, clean_cache = model.bridge.run_with_cache(clean_ids)

    def metric(logits):
        m = target_metric(logits[:, -1], meta["metric"], meta["target_token_id"], meta["foil_token_id"])[0]
        return (m - meta["corrupted_metric"]) / (meta["clean_metric"] - meta["corrupted_metric"])

    start = time.perf_counter()
    tl_patching.get_act_patch_attn_head_out_all_pos(model.bridge, corr_ids, clean_cache, metric)
    t_tl = time.perf_counter() - start
    start = time.perf_counter()
    activation_patching(*patch_args, kinds=("heads",), progress=False)
    t_heads = time.perf_counter() - start
    print(f"every head, all positions: TransformerLens loop {t_tl:.2f} s, batched sweep {t_heads:.2f} s "
          f"-> loop/batched = {t_tl / t_heads:.1f}")


if __name__ == "__main__":
    main()
