"""The engine: one forward with interventions and a selective record, sweeps, capture and generation."""

from .capture import Activations, capture
from .generate import generate
from .interventions import Edit, Intervention
from .batching import auto_batch_size, chunks, row_chunks
from .run import Record, RunOutput, RunSpec, hook_names, run
from .sweep import Patch, base_run, sweep

__all__ = ["Activations", "Edit", "Intervention", "Patch", "Record", "RunOutput", "RunSpec", "auto_batch_size",
           "base_run", "capture", "chunks", "generate", "hook_names", "row_chunks", "run", "sweep"]
