"""Decoding with the engine: greedy or sampled continuations of several prompts, with a KV cache.

Prompts of one token length run together as a batch (no padding, so every row's positions are what
they are alone); each step feeds the last token of every row and extends the cache. Sampling
(``temperature > 0``, optional nucleus ``top_p``) draws from a generator seeded by ``seed``, so the
same seed gives the same text. A row that emits the end-of-text token stops there. ``interventions``
(steering vectors, ablations) apply to each forward, the prompt's and every step's, per row.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .attention_control import AttentionControl
from .interventions import Intervention
from .run import run
from ..errors import HeadscopeError
from ..models.model import Model, Tokens


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
    stop: Callable[[str], bool] | None = None,
    control: AttentionControl | None = None,
    observe: Callable[[list[int], torch.Tensor, torch.Tensor], None] | None = None,
    interventions: Callable[[list[int], bool], Sequence[Intervention]] | None = None,
) -> list[list[int]]:
    """The new token ids of each prompt's continuation (greedy when ``temperature`` is 0).

    ``stop(text)`` ends a row after a token whose text it accepts (that token is kept); the
    end-of-text token ends it before. ``control`` (``AttentionControl``) applies to every forward,
    the prompt's included; ``observe(prompt_indices, tokens, active)`` is called after each step with
    the token chosen for each row of the running group (and ``control.kept`` then holds what that
    step's forward recorded: the rows of the queries that produced these tokens).
    ``interventions(prompt_indices, prompt)`` gives the interventions of each forward of a running group
    (its rows are those prompts, in order): ``prompt`` is True for the forward over the prompts, False
    for the one-token steps after it.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise HeadscopeError(f"max_new_tokens {max_new_tokens!r} must be a positive integer")
    if temperature < 0 or not 0 < top_p <= 1:
        raise HeadscopeError(f"temperature {temperature!r} must be >= 0 and top_p {top_p!r} in (0, 1]")
    toks = [p if isinstance(p, Tokens) else model.tokenize(p) for p in prompts]
    longest = max(len(t) for t in toks) + max_new_tokens
    if longest > model.n_ctx:
        raise HeadscopeError(f"prompt plus {max_new_tokens} new tokens is {longest} tokens, over this model's "
                             f"context of {model.n_ctx}")
    step = _Step(model, temperature, top_p, torch.Generator().manual_seed(seed),
                 model.tokenizer.eos_token_id if stop_at_eos else None, stop, control,
                 interventions or (lambda rows, prompt: ()))
    out: list[list[int]] = [[] for _ in toks]
    by_length: dict[int, list[int]] = {}
    for i, t in enumerate(toks):
        by_length.setdefault(len(t), []).append(i)
    for length in sorted(by_length):
        rows = by_length[length]
        for start in range(0, len(rows), batch_size):
            group = rows[start:start + batch_size]
            ids = torch.tensor([toks[i].ids for i in group])
            notify = (lambda t, a, g=group: observe(g, t, a)) if observe else (lambda t, a: None)
            for row, new in zip(group, step.continue_(ids, max_new_tokens, notify, group)):
                out[row] = new
    return out


class _Step:
    """Continues a group of equal-length prompts one token at a time from a growing KV cache."""

    def __init__(self, model, temperature, top_p, generator, eos, stop, control, interventions):
        self.model, self.temperature, self.top_p, self.generator = model, temperature, top_p, generator
        self.eos, self.stop, self.control, self.interventions = eos, stop, control, interventions

    def continue_(self, ids: torch.Tensor, steps: int, observe, group: list[int]) -> list[list[int]]:
        model = self.model
        batch = model.batch_of_ids(ids)
        result = run(model, batch, self.interventions(group, True), logits_at=batch.last, kv_cache=True,
                     control=self.control)
        past, active = result.past, torch.ones(len(ids), dtype=torch.bool)
        ends = [steps] * len(ids)
        new = []
        for index in range(steps):
            token = _pick(result.logits.float().cpu(), self.temperature, self.top_p, self.generator)
            new.append(token)
            observe(token, active.clone())
            for row in active.nonzero()[:, 0].tolist():
                t = int(token[row])
                if t == self.eos or (self.stop is not None and self.stop(model.tokenizer.decode([t]))):
                    ends[row] = index if t == self.eos else index + 1
                    active[row] = False
            if not bool(active.any()) or index + 1 == steps:
                break
            step_batch = model.batch_of_ids(token[:, None])
            result = run(model, step_batch, self.interventions(group, False), logits_at=step_batch.last,
                         kv_cache=True, past=past, control=self.control)
            past = result.past
        tokens = torch.stack(new, dim=1).tolist()
        return [row[:end] for row, end in zip(tokens, ends)]


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
