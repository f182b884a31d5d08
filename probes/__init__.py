"""Observe: load a model, tokenize with offsets, run it with hooks, capture activations.

The public API: ``load_model``, ``Model``, ``run`` / ``Intervention`` / ``Record`` (the hook engine), ``capture``,
``Result`` / ``load_result``, ``HeadscopeError`` (a user mistake) and ``HeadscopeFailure`` (a runtime
failure).
"""

from .errors import HeadscopeError, HeadscopeFailure
from .results.result import Result, load_result
from .models.model import Batch, Model, Tokens
from .models.loading import load_model
from .engine.interventions import Edit, Intervention
from .engine.run import Record, RunOutput, RunSpec, hook_names, run
from .engine.capture import Activations, capture
from .text.prompts import read_prompts, read_records

__all__ = ["HeadscopeError", "HeadscopeFailure", "Result", "load_result", "Batch", "Model", "Tokens", "load_model", "Edit",
           "Intervention", "Record", "RunSpec", "RunOutput", "hook_names", "run", "Activations", "capture", "read_prompts", "read_records"]
