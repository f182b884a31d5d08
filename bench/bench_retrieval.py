"""Retrieval-head scoring: time and peak memory against plain SDPA greedy generation of the same tokens.
Each of ``--lengths`` is a whole context: the prompt (haystack, needle, question) and the
``--max-new-tokens`` answer budget.

For each context length, one needle test: greedy retrieval scoring (SDPA prefill, then every decoding
step's attention rows computed from the cached keys and reduced to their argmax) vs the same greedy
generation without rows (the same tokens in float32; in bfloat16 a random-weight model's near-tied logits
can flip where the two paths pick different SDPA kernels, so the bench reports how many leading tokens agree). Also teacher-forced scoring, and on CUDA
whether one eager forward that forms full attention patterns fits at all.

CPU:  python bench/bench_retrieval.py --model default --lengths 1024,2048
GPU:  python bench/bench_retrieval.py --model random:llama-1b --device cuda --dtype bfloat16 \\
          --lengths 4096,8192,16384,32768
"""

from __future__ import annotations

import argparse
import time

import torch

from headscope.circuits.retrieval.haystack import build_test, read_needles
from headscope.circuits.retrieval.scores import has_newline, score_greedy, score_teacher_forced
from headscope.probes import load_model, run
from headscope.probes.engine.generate import generate


def measure(model, fn):
    """(seconds, peak GiB above the model's own memory on CUDA, else None) of ``fn()``, after a warm-up."""
    cuda = model.device.type == "cuda"
    fn()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    value = fn()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30 if cuda else None
    return seconds, peak, value


def eager_fits(model, test) -> str:
    try:
        ids = torch.tensor([test.tokens.ids])
        run(model, model.batch_of_ids(ids), record=["blocks.0.attn.hook_pattern"], logits_at=torch.tensor([0]))
        return "fits"
    except torch.cuda.OutOfMemoryError:
        return "out of memory"
    finally:
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--lengths", default="1024,2048")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    needle = read_needles()[0]
    print(f"{args.model} on {model.device} ({args.dtype}), {args.max_new_tokens} new tokens at most")
    for length in (int(x) for x in args.lengths.split(",")):
        # the length is the whole context: the haystack, needle and question, and the answer's budget
        test = build_test(model, length - args.max_new_tokens, 0.5, needle)
        scored_s, scored_mem, (_, new) = measure(model, lambda: score_greedy(model, test, args.max_new_tokens))
        plain_s, plain_mem, plain = measure(model, lambda: generate(model, [test.tokens], args.max_new_tokens,
                                                                      stop=has_newline))
        same = next((i for i, (a, b) in enumerate(zip(plain[0], new)) if a != b), min(len(new), len(plain[0])))
        forced_s, forced_mem, _ = measure(model, lambda: score_teacher_forced(model, test))
        line = (f"  {test.n_tokens} tokens, {len(new)} generated: greedy scoring {scored_s:.2f} s = "
                f"{scored_s / plain_s:.2f}x plain greedy generation ({plain_s:.2f} s, same first {same} tokens); teacher-forced "
                f"{forced_s:.2f} s = {forced_s / scored_s:.2f}x greedy scoring")
        if scored_mem is not None:
            line += (f"; peak memory {scored_mem:.2f} GiB = {scored_mem / plain_mem:.2f}x plain ({plain_mem:.2f} GiB), "
                     f"teacher-forced {forced_mem:.2f} GiB; eager patterns: {eager_fits(model, test)}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
