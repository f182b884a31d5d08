"""Decoding with the engine's KV cache against a plain loop of full forwards."""

import pytest
import torch

from headscope.probes import HeadscopeError, run
from headscope.probes.engine.generate import generate

PROMPTS = ["the river runs", "A small cat walks to the", "the river runs past the old mill", "My neighbour"]


def plain_greedy(model, prompt, steps):
    ids = model.tokenize(prompt).ids
    for _ in range(steps):
        logits = run(model, model.batch_of_ids(torch.tensor([ids]))).logits[0, -1]
        ids.append(int(logits.argmax()))
    return ids[-steps:]


def test_greedy_decoding_equals_a_loop_of_full_forwards(tiny):
    got = generate(tiny, PROMPTS, 6, stop_at_eos=False, batch_size=2)
    assert got == [plain_greedy(tiny, p, 6) for p in PROMPTS]


def test_sampling_is_seeded(tiny_llama):
    a = generate(tiny_llama, PROMPTS, 8, temperature=1.0, seed=3, stop_at_eos=False)
    b = generate(tiny_llama, PROMPTS, 8, temperature=1.0, seed=3, stop_at_eos=False)
    c = generate(tiny_llama, PROMPTS, 8, temperature=1.0, seed=4, stop_at_eos=False)
    assert a == b and a != c
    narrow = generate(tiny_llama, PROMPTS, 8, temperature=1.0, top_p=1e-6, seed=5, stop_at_eos=False)
    assert narrow == generate(tiny_llama, PROMPTS, 8, stop_at_eos=False)  # a tiny nucleus is greedy


def test_stops_at_end_of_text(tiny_llama):
    free = generate(tiny_llama, PROMPTS, 10, stop_at_eos=False)
    stop = free[0][4]  # make the fifth greedy token of the first prompt the end-of-text token
    tok = tiny_llama.tokenizer
    saved = tok.eos_token_id
    tok.eos_token_id = stop
    try:
        stopped = generate(tiny_llama, PROMPTS, 10)
    finally:
        tok.eos_token_id = saved
    for row, full in zip(stopped, free):
        assert row == (full[: full.index(stop)] if stop in full else full)
    assert len(stopped[0]) <= 4


@pytest.mark.parametrize("kwargs,message", [
    ({"max_new_tokens": 0}, "max_new_tokens 0"),
    ({"max_new_tokens": 10**6}, "over this model's context"),
    ({"max_new_tokens": 3, "temperature": -1}, "temperature -1"),
    ({"max_new_tokens": 3, "top_p": 0}, "top_p 0"),
])
def test_generate_bad_input(tiny_llama, kwargs, message):
    with pytest.raises(HeadscopeError, match=message):
        generate(tiny_llama, PROMPTS, **kwargs)
