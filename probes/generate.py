"""Decoding with the engine: greedy or sampled continuations of several prompts, with a KV cache.

Prompts of one token length run together as a batch (no padding, so every row's positions are what
they are alone); each step feeds the last token of every row and extends the cache. Sampling
(``temperature > 0``, optional nucleus ``top_p``) draws from a generator seeded by ``seed``, so the
same seed gives the same text. A row that emits the end-of-text token stops there.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .engine import run
from .errors import HeadscopeError
from .model import Model, Tokens


def generate(
    model: Model,
    prompts: Sequence[str | Tokens],
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 32,
    stop_at_eos: bool = True,
) -> list[list[int]]:
    """The new token ids of each prompt's continuation (greedy when ``temperature`` is 0)."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise HeadscopeError(f"max_new_tokens {max_new_tokens!r} must be a positive integer")
    if temperature < 0 or not 0 < top_p <= 1:
        raise HeadscopeError(f"temperature {temperature!r} must be >= 0 and top_p {top_p!r} in (0, 1]")
    toks = [p if isinstance(p, Tokens) else model.tokenize(p) for p in prompts]
    longest = max(len(t) for t in toks) + max_new_tokens
    if longest > model.n_ctx:
        raise HeadscopeError(f"prompt plus {max_new_tokens} new tokens is {longest} tokens, over this model's "
                             f"context of {model.n_ctx}")
    generator = torch.Generator().manual_seed(seed)
    eos = model.tokenizer.eos_token_id if stop_at_eos else None
    out: list[list[int]] = [[] for _ in toks]
    by_length: dict[int, list[int]] = {}
    for i, t in enumerate(toks):
        by_length.setdefault(len(t), []).append(i)
    for length in sorted(by_length):
        rows = by_length[length]
        for start in range(0, len(rows), batch_size):
            group = rows[start:start + batch_size]
            ids = torch.tensor([toks[i].ids for i in group])
            for row, new in zip(group, _continue(model, ids, max_new_tokens, temperature, top_p, generator, eos)):
                out[row] = new
    return out


def _continue(model: Model, ids: torch.Tensor, steps: int, temperature: float, top_p: float,
              generator: torch.Generator, eos: int | None) -> list[list[int]]:
    batch = model.batch_of_ids(ids)
    result = run(model, batch, logits_at=batch.last, kv_cache=True)
    past, done = result.past, torch.zeros(len(ids), dtype=torch.bool)
    new = []
    for step in range(steps):
        token = _pick(result.logits.float().cpu(), temperature, top_p, generator)
        new.append(token)
        if eos is not None:
            done |= token == eos
            if bool(done.all()):
                break
        if step + 1 < steps:
            step_batch = model.batch_of_ids(token[:, None])
            result = run(model, step_batch, logits_at=step_batch.last, kv_cache=True, past=past)
            past = result.past
    tokens = torch.stack(new, dim=1).tolist()
    if eos is not None:
        tokens = [row[: row.index(eos)] if eos in row else row for row in tokens]
    return tokens


def _pick(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, -1)
    if top_p < 1:
        sorted_p, order = probs.sort(-1, descending=True)
        outside = sorted_p.cumsum(-1) - sorted_p >= top_p  # keep the smallest set whose mass reaches top_p
        sorted_p[outside] = 0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
