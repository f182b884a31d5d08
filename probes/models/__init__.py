"""Models and loading: the ``Model`` wrapper, model specs and their files, random-weight models, the cache."""

from .files import alias_names, cache_dir
from .loading import load_model
from .model import Batch, Model, Tokens

__all__ = ["Batch", "Model", "Tokens", "alias_names", "cache_dir", "load_model"]
