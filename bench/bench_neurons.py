"""Neuron scores: every FFN neuron of every layer at the last position, vectorised (chunked over the
vocabulary) vs a plain loop that reads each neuron's ``x + v_i`` through the final norm and the
unembedding one at a time. The loop runs on a sample of neurons and is scaled to all of them.

CPU:  python bench/bench_neurons.py --model default
GPU:  python bench/bench_neurons.py --model random:llama-1b --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import time

import torch

from headscope.circuits.arithmetic.neurons import final_scale, last_state, neuron_scores, neuron_vectors
from headscope.probes import load_model, run
from headscope.probes.readouts.decompose import final_norm, unembed_matrix

PROMPT = "6 + 2 = 8\n9 + 3 = 12\n9 + 6 = 15\n1 + 7 = "


def timed(model, fn):
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    value = fn()
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--prompts", type=int, default=4, help="copies of the prompt scored together")
    parser.add_argument("--sample", type=int, default=256, help="neurons per layer the plain loop times")
    args = parser.parse_args()
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    toks = [model.tokenize(PROMPT)] * args.prompts
    state = last_state(model, toks)
    answers = torch.full((args.prompts,), 40 if args.model == "default" else 5, device=state.final.device)
    scale = final_scale(model, state)
    batch = model.batch(toks)
    with torch.no_grad():
        run(model, batch)
        bare, _ = timed(model, lambda: run(model, batch))
    neuron_scores(model, [state], answers, scale, layers=[0])  # warm-up
    fast, (scores, _) = timed(model, lambda: neuron_scores(model, [state], answers, scale))
    norm, (w_u, _) = final_norm(model), unembed_matrix(model)  # the default model has no output bias
    w_u = w_u.to(state.final.device)

    def plain(layers):
        out = []
        for layer in layers:
            for p in range(args.prompts):
                vectors, _ = neuron_vectors(model, layer, state.post[p, layer])
                x = state.resid_mid[p, layer]
                for i in range(args.sample):
                    logits = norm.linear(x + vectors[i], scale[p]) @ w_u
                    out.append(torch.log_softmax(logits, -1)[answers[p]])
        return out

    layers = [0, model.n_layers // 2, model.n_layers - 1]
    loop, _ = timed(model, lambda: plain(layers))
    n_neurons = state.post.shape[-1]
    per_neuron = loop / (len(layers) * args.prompts * args.sample)
    loop_all = per_neuron * model.n_layers * args.prompts * n_neurons
    print(f"{args.model} on {model.device} ({args.dtype}): {model.n_layers} layers x {n_neurons} neurons, "
          f"{args.prompts} prompts of {len(toks[0])} tokens")
    print(f"  vectorised {fast:.2f} s; plain loop {loop_all:.1f} s (timed on {args.sample} neurons of "
          f"{len(layers)} layers, scaled) = {loop_all / fast:.1f}x; vectorised / bare forward "
          f"{fast / bare:.0f}x ({bare * 1000:.1f} ms); scores {tuple(scores.shape)}")


if __name__ == "__main__":
    main()
