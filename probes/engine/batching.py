"""Memory-sized forwards: how many rows one forward takes, and what to do when the GPU runs out anyway.

``row_chunks`` cuts a list of rows into forwards that fit memory (every sweep uses it); on a GPU the
size comes from the free memory over one row's measured cost (``row_bytes``). ``Halving`` runs a loop of
forwards and halves them once on an out-of-memory error.
"""

from __future__ import annotations

import warnings
from typing import Callable, Iterator

import torch

from ..errors import HeadscopeError, HeadscopeFailure
from ..models import hooks
from ..models.model import Model
from .run import run


def row_chunks(model: Model, n_rows: int, seq_len: int, batch_size: int | None = None,
               per_row: int = 1) -> list[slice]:
    """Slices of ``range(n_rows)``, each run as one forward: ``batch_size`` rows of the batch (default:
    what fits memory for ``seq_len`` tokens), where each item takes ``per_row`` rows (its variants)."""
    size = max(1, (batch_size or auto_batch_size(model, seq_len)) // per_row)
    return list(chunks(n_rows, size))


def chunks(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of ``range(n)`` of at most ``size`` items."""
    if size < 1:
        raise HeadscopeError(f"batch size {size} must be at least 1")
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def auto_batch_size(model: Model, seq_len: int, budget_bytes: int | None = None) -> int:
    """Rows per forward that fit memory. On a GPU: the free memory (80% of it) over the measured cost of
    one row of ``seq_len`` tokens (``row_bytes``); on the CPU (or given ``budget_bytes``): a budget (2 GiB)
    over an estimate of every layer's activations with eager patterns."""
    if budget_bytes is None and model.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(model.device)
        return max(1, min(1024, int(free * 0.8) // row_bytes(model, seq_len)))
    budget_bytes = budget_bytes or 2 << 30
    itemsize = torch.finfo(model.dtype).bits // 8
    per_row = itemsize * seq_len * (8 * model.d_model + model.n_heads * seq_len + 2 * model.vocab_size)
    return max(1, min(1024, budget_bytes // max(per_row, 1)))


def row_bytes(model: Model, seq_len: int) -> int:
    """GPU memory one more row of ``seq_len`` tokens costs in the engine's heaviest common forward (every
    layer's residual stream kept, keys and values cached, the last position's logits), measured once per
    model and power-of-two length: the peak of two rows minus the peak of one."""
    bucket = 1 << max(0, int(seq_len) - 1).bit_length()
    costs = model.__dict__.setdefault("_row_bytes", {})
    if bucket not in costs:
        peaks = []
        for rows in (1, 2):
            ids = torch.randint(0, model.vocab_size, (rows, bucket))
            batch = model.batch_of_ids(ids)
            torch.cuda.synchronize(model.device)
            torch.cuda.reset_peak_memory_stats(model.device)
            base = torch.cuda.memory_allocated(model.device)
            run(model, batch, record=[hooks.resid_pre(l) for l in range(model.n_layers)], logits_at=batch.last,
                kv_cache=True)
            peaks.append(torch.cuda.max_memory_allocated(model.device) - base)
        costs[bucket] = max(peaks[1] - peaks[0], peaks[0] // 2, 1)
    return costs[bucket]


class Halving:
    """The forwards of one loop, each over some rows: ``halving(rows, work)`` calls ``work(part)``; a GPU
    out-of-memory error halves the rows and goes on, once, with a warning, and the loop's later calls
    are halved too. A second one is a ``HeadscopeFailure`` that says to pass a smaller batch size."""

    def __init__(self, what: str = "rows"):
        self.what, self.halved = what, False

    def __call__(self, rows: list, work: Callable[[list], None]) -> None:
        for part in (_halves(rows) if self.halved else [rows]):
            try:
                work(part)
            except torch.cuda.OutOfMemoryError:
                if self.halved or len(part) == 1:
                    raise HeadscopeFailure(f"out of GPU memory at {len(part)} {self.what} per forward even after "
                                           "halving; pass a smaller --batch-size (batch_size=)") from None
                self.halved = True
                torch.cuda.empty_cache()
                warnings.warn(f"out of GPU memory at {len(part)} {self.what} per forward: halving the chunks "
                              "and going on", stacklevel=2)
                self(part, work)  # in halves now; one more error is the failure above


def _halves(rows: list) -> list[list]:
    return [rows[: len(rows) // 2], rows[len(rows) // 2:]] if len(rows) > 1 else [rows]
