"""The prompts of an edge analysis, encoded once for its metric and its corruption.

Metrics (``EDGE_METRICS``): those of head ablation (``prob``, ``logprob``, ``logit_diff``), the
probability difference of answer sets (``prob_diff``), and ``kl``: minus KL(clean ‖ run) of the
next-token distribution at the last position, so that an edge's ``effect = metric(clean) -
metric(patched)`` is the divergence its patch causes (positive, like the other metrics' effects when
the edge carries the clean behaviour). The clean distributions are taken once, from one forward per
batch. As in the reference (hannamw/EAP-IG, whose EAP takes the gradient on the clean run), KL has a
zero gradient at the clean run, so EAP with ``kl`` would score every edge 0: it is refused, and EAP-IG
(gradients at interpolated inputs) or exact patching is the way to use it.
"""

from __future__ import annotations

import torch

from ...probes import HeadscopeError, Model, run
from ...probes.engine.batching import row_chunks
from ..metrics import SET_METRICS
from ..prompt_sets import Encoded, encode

EDGE_METRICS = SET_METRICS + ("kl",)


def check_metric(metric: str, method: str | None = None) -> None:
    if metric not in EDGE_METRICS:
        raise HeadscopeError(f"unknown metric {metric!r}; use one of {', '.join(EDGE_METRICS)}")
    if metric == "kl" and method == "eap":
        raise HeadscopeError("metric 'kl' has zero gradient at the clean run, so EAP would score every edge 0; "
                             "use method eap-ig or exact with it")


def edge_prompts(model: Model, prompts, metric: str, corruption: str, batch_size: int | None = None) -> Encoded:
    """``prompts`` encoded for ``metric`` (a foil for ``logit_diff``, answer sets for ``prob_diff``, the
    clean next-token log-probabilities for ``kl``) and ``corruption`` (corrupted prompts of the same
    token length for ``"prompt"``)."""
    encoded = encode(model, prompts, foil=metric == "logit_diff", corrupted=corruption == "prompt",
                     sets=metric == "prob_diff")
    if metric == "kl":
        width = max(len(t) for t in encoded.tokens)
        parts = []
        for sl in row_chunks(model, len(encoded.tokens), width, batch_size):
            batch = model.batch(encoded.tokens[sl])
            parts.append(torch.log_softmax(run(model, batch, logits_at=batch.last).logits.float(), -1).cpu())
        encoded.clean_logprobs = torch.cat(parts)
    return encoded
