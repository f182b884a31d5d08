"""Next-token metrics shared by the interventions: probability, log-probability, logit difference, and
the centred logit of the target (its logit minus the mean logit over the vocabulary, as McGrath et al.'s
Hydra effect reads the top token: a shift of every logit changes no probability, and no centred logit).

All take the logits of the position being predicted (``[rows, vocab]``) and return one value per row.
The probability difference of answer sets (``prob_diff``) and minus the KL divergence from the clean
distribution (``kl``) are read by the edge analyses only (``circuits.edges.prompts``).
"""

from __future__ import annotations

import torch

from ..probes import HeadscopeError

METRICS = ("prob", "logprob", "logit_diff")
SET_METRICS = METRICS + ("prob_diff",)  # the analyses that read answer sets (circuits.edges)


def check_metric(metric: str, foil: str | None) -> None:
    if metric not in METRICS:
        raise HeadscopeError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    if metric == "logit_diff" and foil is None:
        raise HeadscopeError("metric 'logit_diff' needs a foil token to compare the target against")


def target_metric(logits: torch.Tensor, metric: str, target_id, foil_id=None) -> torch.Tensor:
    """The metric of the target in ``logits`` ``[..., vocab]``, computed in float32: one value per
    leading index. Token ids are ints or tensors broadcasting against the leading dimensions;
    ``prob_diff`` (probability of the targets minus that of the foils) takes answer sets as masks
    ``[..., vocab]`` (``answer_masks``); ``kl`` (minus KL(clean || these logits)) takes the clean
    log-probabilities ``[..., vocab]`` as the target."""
    logits = logits.float()
    if metric == "kl":
        return -(target_id.exp() * (target_id - torch.log_softmax(logits, dim=-1))).sum(-1)
    if metric == "logit_diff":
        return pick(logits, target_id) - pick(logits, foil_id)
    if metric == "logit":
        return pick(logits, target_id) - logits.mean(-1)
    if metric == "prob_diff":
        probs = torch.softmax(logits, dim=-1)
        return (probs * target_id).sum(-1) - (probs * foil_id).sum(-1)
    logprobs = pick(torch.log_softmax(logits, dim=-1), target_id)
    return logprobs.exp() if metric == "prob" else logprobs


def pick(values: torch.Tensor, ids) -> torch.Tensor:
    """``values[..., ids]`` with one id per leading index (``ids`` an int or a broadcasting tensor)."""
    if isinstance(ids, int):
        return values[..., ids]
    ids = torch.as_tensor(ids, device=values.device).expand(values.shape[:-1])
    return values.gather(-1, ids[..., None])[..., 0]


def answer_masks(sets: list[list[int]], vocab: int, device) -> torch.Tensor:
    """``[rows, vocab]``: 1 at each row's answer tokens (each counted once)."""
    mask = torch.zeros(len(sets), vocab, device=device)
    for row, ids in enumerate(sets):
        mask[row, list(set(ids))] = 1.0
    return mask


def answers(encoded, rows, metric: str, vocab: int, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The target and foil of ``rows`` (indices into an ``Encoded`` set) as ``target_metric`` takes them
    for ``metric``: token ids, answer masks for ``prob_diff``, the clean log-probabilities for ``kl``."""
    if metric == "kl":
        return encoded.clean_logprobs[list(rows)].to(device), None
    if metric == "prob_diff":
        return (answer_masks([encoded.target_sets[i] for i in rows], vocab, device),
                answer_masks([encoded.foil_sets[i] for i in rows], vocab, device))
    foil = None if encoded.foil_ids is None else torch.tensor([encoded.foil_ids[i] for i in rows], device=device)
    return torch.tensor([encoded.target_ids[i] for i in rows], device=device), foil
