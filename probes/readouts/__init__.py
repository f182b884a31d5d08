"""Readouts: attention patterns, the logit / tuned / token lenses, component attribution, linear probes."""

from .attention import attention_grid, attention_pattern
from .components import component_attribution
from .lens import logit_lens, tuned_lens
from .linear_probe import linear_probe
from .token_lens import token_lens
from .tuned_lens import TunedLens, lens_kl, load_tuned_lens, train_tuned_lens

__all__ = ["TunedLens", "attention_grid", "attention_pattern", "component_attribution", "lens_kl", "linear_probe",
           "load_tuned_lens", "logit_lens", "token_lens", "train_tuned_lens", "tuned_lens"]
