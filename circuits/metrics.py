"""Next-token metrics shared by the interventions: probability, log-probability, logit difference.

All take the logits of the position being predicted (``[rows, vocab]``) and return one value per row.
"""

from __future__ import annotations

import torch

from ..probes import HeadscopeError

METRICS = ("prob", "logprob", "logit_diff")


def check_metric(metric: str, foil: str | None) -> None:
    if metric not in METRICS:
        raise HeadscopeError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    if metric == "logit_diff" and foil is None:
        raise HeadscopeError("metric 'logit_diff' needs a foil token to compare the target against")


def target_metric(logits: torch.Tensor, metric: str, target_id, foil_id=None) -> torch.Tensor:
    """The metric of the target in ``logits`` ``[..., vocab]``, computed in float32: one value per
    leading index. Token ids are ints or tensors broadcasting against the leading dimensions."""
    logits = logits.float()
    if metric == "logit_diff":
        return pick(logits, target_id) - pick(logits, foil_id)
    logprobs = pick(torch.log_softmax(logits, dim=-1), target_id)
    return logprobs.exp() if metric == "prob" else logprobs


def pick(values: torch.Tensor, ids) -> torch.Tensor:
    """``values[..., ids]`` with one id per leading index (``ids`` an int or a broadcasting tensor)."""
    if isinstance(ids, int):
        return values[..., ids]
    ids = torch.as_tensor(ids, device=values.device).expand(values.shape[:-1])
    return values.gather(-1, ids[..., None])[..., 0]
