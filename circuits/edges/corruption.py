"""Where an edge's corrupted value comes from: each record's ``corrupted`` prompt (patching, the
reference's ``intervention="patching"``), or every writer's mean output over all real tokens of the
prompt set (mean ablation, the reference's ``"mean"``: one vector per writer, the same at every
position and for every prompt)."""

from __future__ import annotations

import torch

from ...probes import HeadscopeError, Model
from ...probes.engine.batching import row_chunks
from ..prompt_sets import Encoded
from .writers import writer_outputs

CORRUPTIONS = ("prompt", "mean")


def check_corruption(corruption: str) -> None:
    if corruption not in CORRUPTIONS:
        raise HeadscopeError(f"unknown corruption {corruption!r}; use one of {', '.join(CORRUPTIONS)}")


class Corruption:
    """The corrupted writer outputs of any rows of an encoded prompt set (``outputs``)."""

    def __init__(self, model: Model, encoded: Encoded, kind: str, batch_size: int | None = None):
        check_corruption(kind)
        self.model, self.encoded, self.kind, self.mean = model, encoded, kind, None
        if kind == "mean":
            total, count = None, 0
            width = max(len(t) for t in encoded.tokens)
            for sl in row_chunks(model, len(encoded.tokens), width, batch_size):
                batch = model.batch(encoded.tokens[sl])
                real = batch.attention_mask.to(model.device).float()[:, None, :, None]  # [b, 1, p, 1]
                part = (writer_outputs(model, batch) * real).sum((0, 2))
                total = part if total is None else total + part
                count += float(real.sum())
            self.mean = total / count  # [writers, d_model]

    def outputs(self, rows, like) -> torch.Tensor:
        """``[len(rows), writers, pos, d_model]`` for the records ``rows``, shaped like the batch ``like``
        of their clean prompts (a new tensor for prompts, an expanded view of the means for ``"mean"``)."""
        if self.mean is None:
            return writer_outputs(self.model, self.model.batch([self.encoded.corrupted[i] for i in rows]))
        return self.mean[None, :, None, :].expand(len(rows), -1, like.input_ids.shape[1], -1)
