"""Next-token metrics shared by the interventions: probability, log-probability, logit difference.

All take the logits of the position being predicted (``[rows, vocab]``) and return one value per row.
"""

from __future__ import annotations

import torch

from headscope.probes import HeadscopeError, Model

METRICS = ("prob", "logprob", "logit_diff")


def check_metric(metric: str, foil: str | None) -> None:
    if metric not in METRICS:
        raise HeadscopeError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    if metric == "logit_diff" and foil is None:
        raise HeadscopeError("metric 'logit_diff' needs a foil token to compare the target against")


def target_metric(logits: torch.Tensor, metric: str, target_id: int, foil_id: int | None = None) -> torch.Tensor:
    """Per-row metric of ``target_id`` in ``logits`` ``[rows, vocab]``, computed in float32."""
    logits = logits.float()
    if metric == "logit_diff":
        return logits[:, target_id] - logits[:, foil_id]
    logprobs = torch.log_softmax(logits, dim=-1)[:, target_id]
    return logprobs.exp() if metric == "prob" else logprobs


def resolve_token(model: Model, text: str, role: str) -> tuple[int, str | None]:
    """The first token of ``text`` and, when it has several, a note saying which one is used."""
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise HeadscopeError(f"{role} {text!r} is not a token of the vocabulary: it tokenizes to nothing")
    note = None
    if len(ids) > 1:
        pieces = [model.tokenizer.decode([i]) for i in ids]
        note = f"{role} {text!r} is {len(ids)} tokens {pieces}; using the first, {pieces[0]!r}"
    return int(ids[0]), note
