"""headscope: a mechanistic-interpretability workbench.

The stable public API: everything a notebook or script uses is importable from here
(``import headscope as hs; model = hs.load_model("default"); hs.trace(model, ...)``), so moving a
module between subpackages never breaks a user's code. Names are resolved on first use, so
``import headscope`` stays cheap. The code lives in three folders, importable as
``headscope.probes`` (observe), ``headscope.circuits`` (intervene and discover) and ``headscope.app``
(dashboard and command line).
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("headscope")
except PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0+unknown"

_API = {
    "headscope.probes": ["HeadscopeError", "HeadscopeFailure", "Result", "load_result", "Model", "Batch", "Tokens", "load_model",
                         "Intervention", "Edit", "Record", "RunSpec", "run", "hook_names", "capture", "read_prompts",
                         "read_records"],
    "headscope.probes.engine": ["Patch", "generate", "row_chunks", "sweep"],
    "headscope.probes.readouts": ["attention_grid", "attention_pattern", "component_attribution", "logit_lens",
                                  "tuned_lens", "token_lens", "train_tuned_lens", "load_tuned_lens", "lens_kl",
                                  "linear_probe", "TunedLens"],
    "headscope.probes.text": ["passages"],
    "headscope.circuits.causal": ["trace", "average_indirect_effects", "read_facts", "activation_patching",
                                  "attribution_patching", "rank_correlation"],
    "headscope.circuits.heads": ["head_ablation", "gradient_importance", "pruning_curve", "top_vs_random",
                                 "detector_scores", "attention_sink", "head_report"],
    "headscope.circuits.heads.ablation": ["prepare"],
    "headscope.circuits.heads.importance": ["ranking"],
    "headscope.circuits.retrieval": ["retrieval_heads", "needle_grid", "read_needles", "masking_test"],
    "headscope.circuits.retrieval.scores": ["agreement"],
    "headscope.circuits.arithmetic": ["arithmetic_heads", "arithmetic_prompts", "neuron_attribution"],
    "headscope.circuits.composition": ["composition", "circuit_graph", "channel_test", "laundry_task"],
    "headscope.circuits.edges": ["Circuit", "EdgeGraph", "EdgeScores", "circuit_metrics", "edge_attribution",
                                 "exact_edge_effects", "find_circuit", "greedy_edges", "prune", "top_edges"],
    "headscope.circuits.steering": ["SteeringVector", "mean_difference", "actadd", "in_context_vector", "from_direction",
                                    "from_probe", "head_direction", "channel_direction", "read_pairs", "steer_sweep",
                                    "Steering", "Setting", "hydra"],
    "headscope.circuits.stats": ["mean_interval", "spearman"],
    "headscope.circuits.prompt_sets": ["read_prompt_set"],
    "headscope.data": ["DATA_DIR"],
}
_WHERE = {name: module for module, names in _API.items() for name in names}

__all__ = sorted(_WHERE) + ["__version__"]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'headscope' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
