"""The attention implementation of a run: the bridge's eager path, or the HF modules' own (SDPA).

The bridge re-implements attention eagerly to expose patterns. A run that reads no hook only eager
attention fires delegates to the HF attention with SDPA (``attention_mode``), which fires every other
hook with the same values; ``run.probe_sdpa_hooks`` finds that set per model at load.
"""

from __future__ import annotations

import contextlib
import types
from typing import Iterable, Iterator


from ..errors import HeadscopeError
from ..models.model import Model


def choose_attention(model: Model, names: Iterable[str], attention: str = "auto") -> str:
    if attention not in ("auto", "eager", "sdpa"):
        raise HeadscopeError(f"unknown attention {attention!r}; use auto, eager or sdpa")
    needs_eager = any(n not in model.sdpa_hooks for n in names)
    if attention == "sdpa" and needs_eager:
        bad = sorted(n for n in names if n not in model.sdpa_hooks)
        raise HeadscopeError(f"attention='sdpa' cannot fire {bad[0]}; only eager attention computes it")
    if attention == "auto":
        return "eager" if needs_eager or not model.sdpa_hooks else "sdpa"
    return attention


def _sdpa_forward(self, *args, **kwargs):
    """Attention through the wrapped HF module (SDPA), keeping the bridge's in/out hooks."""
    if "hidden_states" in kwargs:
        hidden = kwargs.pop("hidden_states")
    else:
        hidden, args = args[0], args[1:]
    hidden = self.hook_in(hidden)
    out = self.original_component(hidden, *args, **kwargs)
    attn_out = out[0] if isinstance(out, tuple) else out
    return self.hook_out(attn_out), None


def _configs(model: Model):
    seen = []
    for cfg in (model.hf_model.config, getattr(model.hf_model.config, "text_config", None)):
        if cfg is not None and all(cfg is not s for s in seen):
            seen.append(cfg)
    return seen


@contextlib.contextmanager
def attention_mode(model: Model, mode: str) -> Iterator[None]:
    """Delegate attention to the HF modules with ``mode`` as their implementation (sdpa, or headscope's
    own, ``attention_control``); eager keeps the bridge's path."""
    if mode == "eager":
        yield
        return
    attns = [block.attn for block in model.bridge.blocks]
    configs = _configs(model)
    before = [cfg._attn_implementation for cfg in configs]
    for attn in attns:
        object.__setattr__(attn, "forward", types.MethodType(_sdpa_forward, attn))
    for cfg in configs:
        cfg._attn_implementation = mode
    try:
        yield
    finally:
        for attn in attns:
            object.__delattr__(attn, "forward")
        for cfg, impl in zip(configs, before):
            cfg._attn_implementation = impl
