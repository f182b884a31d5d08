"""Observe: load a model, tokenize with offsets, run it with hooks, capture activations.

The public API: ``load_model``, ``Model``, ``run`` / ``Edit`` (the hook engine), ``capture``,
``Result`` / ``load_result`` and ``HeadscopeError``.
"""

from .errors import HeadscopeError
from .result import Result, load_result
from .model import Batch, Model, Tokens
from .loading import load_model
from .engine import Edit, RunOutput, hook_names, run
from .capture import Activations, capture
from .prompts import read_prompts, read_records

__all__ = ["HeadscopeError", "Result", "load_result", "Batch", "Model", "Tokens", "load_model", "Edit",
           "RunOutput", "hook_names", "run", "Activations", "capture", "read_prompts", "read_records"]
