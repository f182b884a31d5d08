"""What each head does: induction, previous-token, duplicate-token and attention-sink scores.

The first three reuse TransformerLens's head detector (``transformer_lens.head_detector``): its
detection patterns and its ``"mul"`` score, the share of a head's attention that falls on the
pattern's query-key pairs. They are computed on a generated batch of repeated random tokens
(BOS when the tokenizer has one, then ``seq_len`` random tokens, then the same tokens again), one
sequence at a time and averaged. ``detect_head`` itself is not called: it re-tokenizes a string
(random tokens do not survive a decode/encode round trip) and runs the model once per sequence; we
capture every layer's pattern in one batched run and score the cached patterns, which its scorer
leaves unmodified.

The attention-sink score is the mean attention a head pays to the first token, over every
destination position after the first of the given prompts (pads excluded).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ...probes.models import hooks
from ...probes import Model, Tokens, run
from ...probes.engine.batching import row_chunks

DETECTORS = ("induction", "previous_token", "duplicate_token")


def repeated_random_tokens(model: Model, seq_len: int = 40, n_seqs: int = 4, seed: int = 0) -> torch.Tensor:
    """``[n_seqs, (1 +) 2 * seq_len]`` ids: random non-special tokens repeated once, after BOS if any."""
    gen = torch.Generator().manual_seed(seed)
    special = set(model.tokenizer.all_special_ids)
    allowed = torch.tensor([i for i in range(model.vocab_size) if i not in special])
    half = allowed[torch.randint(len(allowed), (n_seqs, seq_len), generator=gen)]
    ids = torch.cat([half, half], 1)
    bos = model.tokenizer.bos_token_id
    if bos is not None:
        ids = torch.cat([torch.full((n_seqs, 1), bos), ids], 1)
    return ids


def _patterns(model: Model, ids: torch.Tensor) -> dict[int, torch.Tensor]:
    tokens = [Tokens("", row, [""] * len(row), [(0, 0)] * len(row)) for row in ids.tolist()]
    batch = model.batch(tokens)
    cache = run(model, batch, record="blocks.*.attn.hook_pattern", logits_at=batch.last).cache
    return {l: cache[hooks.pattern(l)].float().cpu() for l in range(model.n_layers)}


def detector_scores(model: Model, *, seq_len: int = 40, n_seqs: int = 4, seed: int = 0) -> pd.DataFrame:
    """Per head: induction, previous-token and duplicate-token scores (module docstring)."""
    from transformer_lens import head_detector as hd

    ids = repeated_random_tokens(model, seq_len, n_seqs, seed)
    patterns = _patterns(model, ids)
    make = {"induction": hd.get_induction_head_detection_pattern,
            "previous_token": hd.get_previous_token_head_detection_pattern,
            "duplicate_token": hd.get_duplicate_token_head_detection_pattern}
    scores = {name: np.zeros((model.n_layers, model.n_heads)) for name in DETECTORS}
    for s in range(n_seqs):
        for name in DETECTORS:
            detection = make[name](ids[s:s + 1]).float()
            for layer in range(model.n_layers):
                for head in range(model.n_heads):
                    scores[name][layer, head] += hd.compute_head_attention_similarity_score(
                        patterns[layer][s, head], detection_pattern=detection, exclude_bos=False,
                        exclude_current_token=False, error_measure="mul") / n_seqs
    return pd.DataFrame({"layer": np.repeat(np.arange(model.n_layers), model.n_heads),
                         "head": np.tile(np.arange(model.n_heads), model.n_layers),
                         **{name: scores[name].reshape(-1) for name in DETECTORS}})


def attention_sink(model: Model, prompts: list[Tokens], batch_size: int | None = None) -> pd.DataFrame:
    """Per head: mean attention from every destination after the first to the first token."""
    total = torch.zeros(model.n_layers, model.n_heads)
    count = 0
    for sl in row_chunks(model, len(prompts), max(len(p) for p in prompts), batch_size):
        batch = model.batch(prompts[sl])
        cache = run(model, batch, record="blocks.*.attn.hook_pattern", logits_at=batch.last).cache
        mask = batch.attention_mask.float().cpu()[:, 1:]  # destinations 1.. that are real tokens
        for layer in range(model.n_layers):
            to_first = cache[hooks.pattern(layer)].float().cpu()[:, :, 1:, 0]  # [b, head, dest]
            total[layer] += (to_first * mask[:, None]).sum((0, 2))
        count += int(mask.sum())
    sink = (total / max(count, 1)).numpy()
    return pd.DataFrame({"layer": np.repeat(np.arange(model.n_layers), model.n_heads),
                         "head": np.tile(np.arange(model.n_heads), model.n_layers),
                         "attention_sink": sink.reshape(-1)})
