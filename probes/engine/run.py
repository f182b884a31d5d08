"""The hook engine: the one place that runs a model with hooks over a batch of prompts.

``run(model, batch, interventions, record, spec)`` takes a right-padded ``Batch`` and

- ``interventions``: ``Intervention`` objects (``interventions``), each changing some rows of one hook's
  activation (set, add, scale, project, apply), so each row of a sweep can ablate, restore, patch,
  steer or gate something different inside one hook call;
- ``record``: hook names or glob patterns whose activations to keep, or ``Record``s that also reduce
  them (e.g. to the last position), so only what is asked for is held;
- ``spec`` (``RunSpec``, or its fields as keywords):
  ``start_layer`` + ``resid``: start the forward at block ``l`` from a cached residual stream
  (``blocks.{l}.hook_resid_pre``; at ``l = 0`` it replaces the embeddings); blocks below ``l`` are
  swapped for pass-throughs and cost nothing, so a sweep of variants at layer ``l`` never recomputes
  the prefix they cannot change;
  ``logits_at``: the positions (one per row) whose logits are wanted; the unembedding then runs on
  those rows only; ``logits=False``: none are wanted, and the forward stops as soon as every recorded
  hook has fired (the blocks after the last one, the final norm and the unembedding never run);
  ``grad``: keep the autograd graph (recorded activations are not detached) for gradient methods;
  ``control``: an ``AttentionControl`` (``attention_control``): attention rows of the last queries
  computed in linear memory, and heads whose query or output is zeroed, inside the model's own
  attention call;
  ``kv_cache`` / ``past``: return the run's keys and values (every position, every layer), and resume a
  run from a prefix of them (``prefix_cache``): a variant that changes nothing before token ``t``
  needs only the positions from ``t`` on, attending to the cached keys and values of the rest. Only
  under SDPA: the bridge's eager attention ignores the resumed run's offset (wrong rotary positions
  and causal mask), so a resumed run that needs eager attention is refused.

Attention: the bridge re-implements attention eagerly to expose patterns. When no intervention or
record of a run reads a hook that only eager attention fires (``hook_pattern``, ``hook_attn_scores``,
the rotary hooks), the attention modules delegate to the HF implementation with SDPA instead, which
fires every other hook with the same values (``probe_sdpa_hooks`` finds that set per model at load,
and the tests check the values). ``attention="eager"`` forces the bridge's path.
"""

from __future__ import annotations

import contextlib
import fnmatch
import warnings
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator, Sequence

import torch

from ..models import hooks
from .attention_control import NAME, AttentionControl, controlling, register
from .attention_mode import attention_mode, choose_attention
from .interventions import Intervention
from ..errors import HeadscopeError
from ..models.model import Batch, Model


HookFn = Callable[[torch.Tensor, object], torch.Tensor | None]


@dataclass
class Record:
    """Keep the activations of ``hooks`` (names or glob patterns), reduced by ``keep(name, act)`` if given."""

    hooks: str | Sequence[str]
    keep: Callable[[str, torch.Tensor], torch.Tensor] | None = None


@dataclass
class RunSpec:
    """How one forward runs (module docstring): where it starts, which logits, gradients, keys and values."""

    start_layer: int = 0
    resid: torch.Tensor | None = None
    logits_at: torch.Tensor | None = None
    logits: bool = True
    attention: str = "auto"
    grad: bool = False
    kv_cache: bool = False
    past: object | None = None
    control: AttentionControl | None = None


@dataclass
class RunOutput:
    logits: torch.Tensor | None  # [batch, pos, vocab], [batch, vocab] with logits_at, None with logits=False
    cache: dict[str, torch.Tensor]
    past: object | None = None  # the HF cache of keys and values, when kv_cache=True


_GATES = ("use_attn_result", "use_split_qkv_input", "use_hook_mlp_in", "use_attn_in")


def hook_names(model: Model, patterns: str | Sequence[str]) -> list[str]:
    """TransformerLens hook names matching glob patterns (``blocks.*.hook_resid_post``) or exact names.
    Resolved once per model, patterns and hook gates (the bridge rebuilds its hook dictionary, with
    aliases, on every access: a run that records every layer paid that once per batch)."""
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",") if p.strip()]
    key = (tuple(patterns), tuple(bool(getattr(model.bridge.cfg, gate, False)) for gate in _GATES))
    resolved = model.__dict__.setdefault("_hook_names", {})
    if key not in resolved:
        resolved[key] = _resolve_hooks(model, key[0])
    return list(resolved[key])


def _resolve_hooks(model: Model, patterns: tuple[str, ...]) -> list[str]:
    bridge, available = model.bridge, None
    every = bridge.hook_dict  # built on each access (with its aliases): once per call
    out: list[str] = []
    for pattern in patterns:
        if not any(c in pattern for c in "*?["):  # an exact name: no scan of every hook (EAP records hundreds)
            matched = [pattern] if pattern in every and bridge._gated_hook_reason(pattern) is None else []
        else:
            if available is None:
                available = [n for n in every if bridge._gated_hook_reason(n) is None]
            matched = [n for n in available if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise HeadscopeError(
                f"hook pattern {pattern!r} matches no hook of this model; e.g. blocks.*.hook_resid_post, "
                "blocks.0.attn.hook_z, blocks.*.hook_mlp_out"
            )
        out.extend(matched)
    return _layer_sorted(list(dict.fromkeys(out)))


def _layer_sorted(names: list[str]) -> list[str]:
    def key(item: tuple[int, str]):
        order, name = item
        parts = name.split(".")
        layer = int(parts[1]) if parts[0] == "blocks" and parts[1].isdigit() else (-1 if "embed" in name else 10**6)
        return layer, order

    return [name for _, name in sorted(enumerate(names), key=key)]


def _records(model: Model, record) -> list[tuple[str, Callable | None]]:
    if record is None:
        return []
    if isinstance(record, (str, Record)):
        record = [record]
    if all(isinstance(r, str) for r in record):
        record = [Record(list(record))]
    out: dict[str, Callable | None] = {}
    for r in record:
        r = r if isinstance(r, Record) else Record(r)
        for name in hook_names(model, r.hooks):
            out[name] = r.keep
    return list(out.items())


def run(model: Model, batch: Batch, interventions: Iterable[Intervention] = (), record=None,
        spec: RunSpec | None = None, **spec_fields) -> RunOutput:
    """One forward pass over ``batch`` with interventions and a selective record (module docstring);
    ``spec_fields`` (``logits_at=...``) override fields of ``spec``."""
    spec = replace(spec or RunSpec(), **spec_fields)
    start_layer, resid, attention, grad = spec.start_layer, spec.resid, spec.attention, spec.grad
    kv_cache, past, control = spec.kv_cache, spec.past, spec.control
    captured: dict[str, torch.Tensor] = {}
    records = _records(model, record)
    if not spec.logits and (not records or grad or kv_cache):
        raise HeadscopeError("logits=False stops the forward after the last recorded hook: it needs a record, "
                             "and neither gradients nor keys and values")

    def make_recorder(name: str, keep) -> HookFn:
        def record_act(act: torch.Tensor, hook=None):
            kept = keep(name, act) if keep is not None else act
            captured[name] = kept if grad else kept.detach()
            if not spec.logits and len(captured) == len(records):
                raise _Recorded
            return act

        return record_act

    fwd = [(i.hook, i) for i in interventions] + [(n, make_recorder(n, k)) for n, k in records]
    if grad:  # weights are frozen: let gradients start at the embeddings so every activation has one
        fwd.insert(0, ("hook_embed", _requiring_grad))
    if spec.logits_at is not None:
        fwd.append(("unembed.hook_in", _gather_rows(spec.logits_at)))
    if start_layer or resid is not None:
        model.check_layer(start_layer)
        if resid is None or resid.shape[:2] != batch.input_ids.shape:
            raise HeadscopeError(f"start_layer={start_layer} needs resid of shape [batch, pos, d_model] "
                                 f"matching the batch {tuple(batch.input_ids.shape)}")
        if start_layer == 0:  # nothing to skip: the embeddings are replaced by resid
            fwd.insert(0, (hooks.resid_pre(0), lambda act, hook=None: resid.to(act.dtype)))
    mode = choose_attention(model, [name for name, _ in fwd], attention)
    if control is not None:
        if mode == "eager" or not model.sdpa_hooks:
            raise HeadscopeError("attention rows and head masks need the model's own attention (SDPA delegation); "
                                 "this run reads a hook only eager attention fires, or the model cannot delegate")
        mode = NAME
        register()
    if past is not None and mode == "eager":
        # the bridge's eager attention ignores the offset of a resumed run (rotary positions, causal mask)
        raise HeadscopeError("a run that reads attention patterns cannot resume from cached keys and values; "
                             "run every position instead")
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.set_grad_enabled(grad))
        stack.enter_context(warnings.catch_warnings())
        # the engine passes past_key_values on purpose (transformers is pinned below 5.40, which renames it)
        warnings.filterwarnings("ignore", message="`past_key_values` is deprecated", category=FutureWarning)
        stack.enter_context(attention_mode(model, mode))
        if control is not None:
            stack.enter_context(controlling(control))
        if start_layer:
            stack.enter_context(_start_at(model, start_layer, resid))
        stack.enter_context(model.bridge.hooks(fwd_hooks=fwd))
        kwargs = {"attention_mask": batch.attention_mask}
        if past is not None:
            if bool((batch.lengths != batch.input_ids.shape[1]).any()):
                raise HeadscopeError("a run resumed from cached keys and values cannot have padded rows")
            kwargs = {"past_key_values": past}
        if kv_cache:
            from transformers import DynamicCache

            # a cache without the model's config keeps every position, also on sliding-window layers
            kwargs["past_key_values"] = DynamicCache() if past is None else past
            logits, past = model.bridge(batch.input_ids, return_type="logits_and_cache", **kwargs)
        else:
            try:
                logits = model.bridge(batch.input_ids, return_type="logits", **kwargs)
            except _Recorded:
                logits = None
    if spec.logits_at is not None and logits is not None:
        logits = logits[:, 0]
    return RunOutput(logits, captured, past if kv_cache else None)


class _Recorded(Exception):
    """Raised by the last recorder of a ``logits=False`` run: everything asked for is kept."""


def probe_sdpa_hooks(model: Model) -> frozenset[str]:
    """Hooks that fire with the same shapes under SDPA delegation, if every layer's delegated attention
    computes what the eager one does.

    Each layer is compared on the eager run's own input to it (its ``attn.hook_in`` set from the eager
    run), so the comparison is of that layer's attention alone. Compared at the logits, bf16 rounding
    that the two paths make differently grows with depth: ``random:llama-8b`` (Llama-3-8B-shaped) differed
    by 6.9% of its largest logit against a 3% tolerance, lost delegation, and its retrieval scans were
    refused."""
    batch = model.batch(["The quick brown fox jumps over the lazy dog"])
    every = hook_names(model, "*")
    layers = range(model.n_layers)
    ins, outs = [hooks.attn_hook_in(l) for l in layers], [hooks.attn_hook_out(l) for l in layers]
    before, model.sdpa_hooks = model.sdpa_hooks, frozenset()
    try:
        eager = run(model, batch, record=every, attention="eager")
        model.sdpa_hooks = frozenset(every)  # let the probe run fire whatever it can
        sdpa = run(model, batch, [Intervention.set(n, eager.cache[n]) for n in ins], record=every, attention="sdpa")
    except Exception:  # an architecture whose HF attention cannot be delegated keeps eager
        return frozenset()
    finally:
        model.sdpa_hooks = before  # the caller sets what the probe found
    tol = 1e-4 if model.dtype == torch.float32 else 3e-2
    for name in outs:
        want = eager.cache[name].float()
        if (sdpa.cache[name].float() - want).abs().max() > tol * want.abs().max().clamp_min(1e-6):
            return frozenset()
    return frozenset(n for n, t in sdpa.cache.items() if n in eager.cache and eager.cache[n].shape == t.shape)


def prefix_cache(model: Model, past, rows: torch.Tensor, length: int):
    """A cache holding the first ``length`` positions of ``past``'s rows ``rows``, to resume from."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.hf_model.config)
    for i, layer in enumerate(past.layers):  # each layer's keys on its own device (a device map spreads them)
        idx = rows.to(layer.keys.device)
        cache.update(layer.keys[idx, :, :length], layer.values[idx, :, :length], i)
    return cache


def _requiring_grad(act: torch.Tensor, hook=None) -> torch.Tensor:
    return act if act.requires_grad else act.detach().requires_grad_(True)


def _gather_rows(positions: torch.Tensor) -> HookFn:
    def gather(act: torch.Tensor, hook=None) -> torch.Tensor:
        idx = positions.to(act.device)
        return act[torch.arange(act.shape[0], device=act.device), idx][:, None]

    return gather


# -- starting at a layer ------------------------------------------------------------------------

class _PassThrough(torch.nn.Module):
    """Stands in for a skipped decoder block; the last one hands over the cached residual."""

    def __init__(self, resid: torch.Tensor | None):
        super().__init__()
        self.resid = resid

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states if self.resid is None else self.resid


@contextlib.contextmanager
def _start_at(model: Model, layer: int, resid: torch.Tensor) -> Iterator[None]:
    originals = [model.layers[i] for i in range(layer)]
    for i in range(layer):
        model.layers[i] = _PassThrough(resid if i == layer - 1 else None)
    try:
        yield
    finally:
        for i, module in enumerate(originals):
            model.layers[i] = module
