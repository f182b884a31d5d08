"""Steering vectors: directions in the residual stream to add while the model runs, and where from.

A ``SteeringVector`` holds one vector per layer (``[layers, positions, d_model]``: one position for a
vector added wherever it is asked for, several for ActAdd's, added at the prompt's first positions),
the hook it is read at and added to, and the identity of the model it was made from (a vector is
refused on another model). Made

- from contrast pairs (``{"positive", "negative"}`` texts), ``mean_difference``: the mean over pairs of
  the residual stream entering each layer (``blocks.l.hook_resid_pre``) for the positive text minus
  the negative one, at the last token or averaged over every token (CAA, Rimsky et al. 2024, takes the
  answer token; DiffMean, Marks & Tegmark 2023 and Wu et al. 2025, the mean difference as a probe);
- from one pair, ``actadd`` (Turner et al., "Activation Addition", 2023): the per-position difference of
  the two prompts' residual streams entering a layer, the shorter one padded with the pad token, added
  at the first positions of the prompt it steers;
- from demonstrations, ``in_context_vector`` (Liu et al., "In-context Vectors", ICML 2024): per
  demonstration, the residual stream after each block at the last token of its output minus that of
  its input (run separately, no template); the flattened (layers x d_model) differences' leading
  principal direction (centred, sign fixed so its projection of the mean difference is positive), cut
  back into one vector per layer. It is applied at every layer with strength lambda and the latent's
  norm restored (``apply``). The reference code (shengliu66/ICV) differs: it adds the mean difference
  to the principal direction (so its direction is close to the mean difference), flips signs by
  sklearn's convention, and applies the vector to each MLP's output with a cosine-dependent boost; the
  paper, followed here, adds it to the latent states themselves;
- from any direction the project finds, ``from_direction``: a linear probe's weights (``from_probe``), an
  attention head's mean output (``head_direction``) or an SVD channel of its OV circuit
  (``channel_direction``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import torch

from ...probes import HeadscopeError, Model, Result
from ...probes.engine.run import Record, run
from ...probes.models import hooks
from ...probes.readouts.decompose import head_outputs
from ...probes.text.prompts import read_records

METHODS = ("mean-diff", "actadd", "icv")
POSITIONS = ("last", "mean")
SIDES = ("positive", "negative")


class SteeringVector(Result):
    """One vector per layer: ``vectors`` ``[layers, positions, d_model]`` (``vector.safetensors``); the table
    gives each one's layer, position (-1: added wherever asked) and norm."""

    kind = "steering-vector"
    table = "vector"
    title = "headscope steering vector"

    def __init__(self, frame: pd.DataFrame, meta: dict, vectors: torch.Tensor | None = None,
                 directory: Path | None = None):
        super().__init__(frame, meta)
        self._vectors, self._directory = vectors, directory

    @property
    def vectors(self) -> torch.Tensor:
        if self._vectors is None:
            from safetensors.torch import load_file

            self._vectors = load_file(self._directory / "vector.safetensors")["vectors"]
        return self._vectors

    @property
    def layers(self) -> list[int]:
        return list(self.meta["layers"])

    @property
    def hook(self) -> str:
        """``resid_pre`` or ``resid_post``: the stream of each layer the vector is read at and added to."""
        return self.meta["hook"]

    def hook_name(self, layer: int) -> str:
        return (hooks.resid_pre if self.hook == "resid_pre" else hooks.resid_post)(layer)

    def at(self, layer: int) -> torch.Tensor:
        """The vector of ``layer``, ``[positions, d_model]``."""
        if layer not in self.layers:
            raise HeadscopeError(f"this {self.meta['method']} vector has no layer {layer}; it has layers "
                                 f"{_span(self.layers)}")
        return self.vectors[self.layers.index(layer)]

    def check_model(self, model: Model) -> None:
        """A one-line error when ``model`` is not the model the vector was made from."""
        mine, theirs = self.meta["identity"], model.identity()
        if mine != theirs:
            raise HeadscopeError(f"this steering vector was made from another model ({self.meta['model']}, fingerprint "
                                 f"{mine['fingerprint'][:12]}); {model.spec} has fingerprint {theirs['fingerprint'][:12]}")

    def plot(self):
        """Each layer's vector norm."""
        import plotly.graph_objects as go

        norms = self.frame.groupby("layer", as_index=False)["norm"].mean()
        fig = go.Figure(go.Bar(x=norms["layer"], y=norms["norm"]))
        fig.update_layout(title=f"{self.meta['method']} vector ({self.meta['hook']}), {self.meta['model']}",
                          xaxis={"title": "layer", "type": "category"}, yaxis_title="norm", height=320)
        return fig

    def _write_files(self, directory: Path) -> None:
        from safetensors.torch import save_file

        save_file({"vectors": self.vectors.contiguous().cpu()}, directory / "vector.safetensors")

    @classmethod
    def _load(cls, directory: Path, meta: dict) -> "SteeringVector":
        from ...probes.results.result import read_table

        if not (directory / "vector.safetensors").is_file():
            raise HeadscopeError(f"{directory} has no vector.safetensors; run headscope steer again to make it")
        return cls(read_table(directory / f"{cls.table}.parquet"), meta, directory=directory)


def _span(layers: list[int]) -> str:
    return f"{layers[0]}..{layers[-1]}" if layers == list(range(layers[0], layers[-1] + 1)) else str(layers)


def steering_vector(model: Model, vectors: torch.Tensor, layers: list[int], hook: str, method: str,
                    **meta) -> SteeringVector:
    """A ``SteeringVector`` of ``vectors`` ``[layers, positions, d_model]`` made from ``model``."""
    vectors = vectors.detach().float().cpu()
    k = vectors.shape[1]
    frame = pd.DataFrame({"layer": [l for l in layers for _ in range(k)],
                          "position": [p if k > 1 else -1 for _ in layers for p in range(k)],
                          "norm": vectors.norm(dim=-1).flatten().tolist()})
    return SteeringVector(frame, {"model": model.spec, "identity": model.identity(), "method": method, "hook": hook,
                                  "layers": list(layers), **meta}, vectors)


def make_vector(model: Model, method: str, pairs: list[dict], layers=None, position: str = "last") -> SteeringVector:
    """The vector ``method`` makes from ``pairs`` (ActAdd: the first pair) at ``layers`` (default: the middle
    layer; an in-context vector: every layer)."""
    if method not in METHODS:
        raise HeadscopeError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if method == "icv":
        return in_context_vector(model, pairs, layers)
    layers = layers or [model.n_layers // 2]
    if method == "actadd":
        return actadd(model, pairs[0]["positive"], pairs[0]["negative"], layers)
    return mean_difference(model, pairs, layers, position=position)


def vector_unit(model: Model, **how) -> dict[str, pd.DataFrame]:
    """``make_vector`` as a unit of batch work (``probes.engine.units``): the vector as frames
    (``from_frames`` makes it again)."""
    vector = make_vector(model, **how)
    return {"vector": vector.frame, "tensor": pd.DataFrame({"values": vector.vectors.flatten().tolist()}),
            "meta": pd.DataFrame({"json": [json.dumps({**vector.meta, "shape": list(vector.vectors.shape)},
                                                      default=str)]})}


def from_frames(frames: dict[str, pd.DataFrame]) -> SteeringVector:
    """The vector ``vector_unit`` returned."""
    meta = json.loads(frames["meta"]["json"].iloc[0])
    values = torch.tensor(frames["tensor"]["values"].to_numpy(), dtype=torch.float32).view(*meta.pop("shape"))
    return SteeringVector(frames["vector"], meta, values)


def read_pairs(path: str | Path) -> list[dict]:
    """Contrast pairs from a JSONL file: each line ``{"positive": text, "negative": text}``, both non-empty."""
    return [{side: r[side] for side in SIDES} for r in read_records(path, required=SIDES, what="pair")]


def check_layers(model: Model, layers) -> list[int]:
    layers = list(layers)
    if not layers:
        raise HeadscopeError("no layer given")
    for layer in layers:
        model.check_layer(layer)
    return sorted(set(layers))


def _residuals(model: Model, texts: list[str], names: list[str], position: str) -> torch.Tensor:
    """``[texts, hooks, d_model]``: each text's residual stream at ``names``, at its last token or the mean
    over its tokens, float32."""
    batch = model.batch(texts)
    mask = batch.attention_mask.float()[..., None]

    def keep(name, act):
        if position == "last":
            return act[torch.arange(len(act), device=act.device), batch.last].float()
        return (act.float() * mask).sum(1) / mask.sum(1)

    cache = run(model, batch, record=Record(names, keep=keep), logits=False).cache
    return torch.stack([cache[name] for name in names], 1)


def mean_difference(model: Model, pairs: list[dict], layers, *, position: str = "last") -> SteeringVector:
    """CAA / DiffMean: the mean over ``pairs`` of positive minus negative residual stream entering each of
    ``layers``, at the last token (``position="last"``) or averaged over each text's tokens (``"mean"``)."""
    started = time.perf_counter()
    layers = check_layers(model, layers)
    if position not in POSITIONS:
        raise HeadscopeError(f"unknown position {position!r}; use {' or '.join(POSITIONS)}")
    names = [hooks.resid_pre(l) for l in layers]
    diffs = (_residuals(model, [p["positive"] for p in pairs], names, position)
             - _residuals(model, [p["negative"] for p in pairs], names, position))
    return steering_vector(model, diffs.mean(0)[:, None], layers, "resid_pre", "mean-diff", position=position,
                           n_pairs=len(pairs), seconds=round(time.perf_counter() - started, 3))


def actadd(model: Model, positive: str, negative: str, layers) -> SteeringVector:
    """ActAdd: the per-position difference of the two prompts' residual streams entering each of ``layers``
    (the shorter prompt padded on the right with the pad token), to add at a prompt's first positions."""
    layers = check_layers(model, layers)
    a, b = model.tokenize(positive), model.tokenize(negative)
    width = max(len(a), len(b))
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else model.tokenizer.eos_token_id
    ids = torch.full((2, width), int(pad or 0))
    ids[0, :len(a)], ids[1, :len(b)] = torch.tensor(a.ids), torch.tensor(b.ids)
    names = [hooks.resid_pre(l) for l in layers]
    cache = run(model, model.batch_of_ids(ids), record=names, logits=False).cache
    diffs = torch.stack([cache[name][0] - cache[name][1] for name in names]).float()  # [layers, width, d]
    return steering_vector(model, diffs, layers, "resid_pre", "actadd", positive=positive, negative=negative,
                           n_pairs=1)


def in_context_vector(model: Model, pairs: list[dict], layers=None) -> SteeringVector:
    """The in-context vector of demonstrations ``pairs`` (input ``negative``, output ``positive``): module
    docstring. ``layers`` (default: every layer) are the blocks whose outputs it steers."""
    started = time.perf_counter()
    layers = check_layers(model, range(model.n_layers) if layers is None else layers)
    if len(pairs) < 2:
        raise HeadscopeError(f"an in-context vector needs at least 2 demonstrations (a principal direction of their "
                             f"differences); got {len(pairs)}")
    names = [hooks.resid_post(l) for l in layers]
    diffs = (_residuals(model, [p["positive"] for p in pairs], names, "last")
             - _residuals(model, [p["negative"] for p in pairs], names, "last"))  # [n, layers, d]
    direction = leading_direction(diffs.flatten(1)).view(len(layers), 1, model.d_model)
    return steering_vector(model, direction, layers, "resid_post", "icv", n_pairs=len(pairs),
                           seconds=round(time.perf_counter() - started, 3))


def leading_direction(diffs: torch.Tensor) -> torch.Tensor:
    """The first principal direction of the rows of ``diffs`` ``[n, D]`` (centred; unit norm), signed so that
    the mean row projects positively on it."""
    centred = diffs - diffs.mean(0)
    _, _, vh = torch.linalg.svd(centred.double(), full_matrices=False)
    direction = vh[0].float()
    return direction if float(diffs.mean(0) @ direction) >= 0 else -direction


def from_direction(model: Model, direction: torch.Tensor, layer: int, *, hook: str = "resid_pre",
                   source: str = "direction") -> SteeringVector:
    """A vector ``direction`` ``[d_model]`` added to the residual stream entering ``layer`` (``hook="resid_pre"``)
    or leaving it (``"resid_post"``)."""
    layer = check_layers(model, [layer])[0]
    direction = torch.as_tensor(direction).float().flatten()
    if direction.shape != (model.d_model,):
        raise HeadscopeError(f"a direction must have d_model = {model.d_model} entries; got {direction.numel()}")
    return steering_vector(model, direction[None, None], [layer], hook, "direction", source=source)


def head_direction(model: Model, layer: int, head: int, prompts: list[str]) -> SteeringVector:
    """A head's mean output (``z_h @ W_O[h]``) at the last token of ``prompts``, added where it is written (the
    residual stream leaving its layer)."""
    model.check_layer(layer), model.check_head(head)
    batch = model.batch(prompts)
    last = lambda name, act: act[torch.arange(len(act), device=act.device), batch.last]  # noqa: E731
    names = [hooks.z(layer)] + ([hooks.attn_hook_out(layer)] if hasattr(model.bridge.blocks[layer], "ln1_post") else [])
    cache = run(model, batch, record=Record(names, keep=last), logits=False).cache
    shares, _ = head_outputs(model, layer, cache[hooks.z(layer)], cache.get(hooks.attn_hook_out(layer)))
    return from_direction(model, shares[:, head].mean(0), layer, hook="resid_post",
                          source=f"L{layer}H{head} mean output over {len(prompts)} prompts")


def channel_direction(model: Model, layer: int, head: int, component: int = 0) -> SteeringVector:
    """The output side of singular component ``component`` of a head's OV circuit (``x @ W_V W_O``), the
    direction it writes when it reads that channel (``circuits.composition``), added leaving its layer."""
    from ..composition.weights import head_weights

    model.check_layer(layer), model.check_head(head)
    ov = head_weights(model).ov(layer, head)  # [d_model, d_model], rows read, columns written
    _, _, vh = torch.linalg.svd(ov, full_matrices=False)
    if not 0 <= component < model.d_head:
        raise HeadscopeError(f"component {component!r} out of range; a head's OV circuit has 0..{model.d_head - 1}")
    return from_direction(model, vh[component], layer, hook="resid_post",
                          source=f"L{layer}H{head} OV singular component {component}")


def from_probe(model: Model, probe, layer: int, label=None) -> SteeringVector:
    """A linear probe's direction for class ``label`` (default: the last class) at ``layer`` (0 = embeddings,
    ``l`` = entering block ``l``): its weights in the residual stream's own coordinates, minus the mean of
    the other classes' (for regression, the one weight vector)."""
    weights = probe.weights
    if weights is None:
        raise HeadscopeError("this linear probe result has no weights (made by an earlier headscope); run it again")
    part = weights[weights["layer"] == layer]
    if part.empty:
        raise HeadscopeError(f"the probe has no layer {layer}; it has {sorted(weights['layer'].unique())}")
    rows = {str(c): torch.tensor(w) for c, w in zip(part["class"], part["weight"])}
    label = list(rows)[-1] if label is None else str(label)
    if label not in rows:
        raise HeadscopeError(f"the probe has no class {label!r}; it has {', '.join(rows)}")
    others = [w for c, w in rows.items() if c != label]
    direction = rows[label] - (torch.stack(others).mean(0) if others else 0)
    return from_direction(model, direction, layer, source=f"linear probe for {probe.meta['label']!r} = {label}")
