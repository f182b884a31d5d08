"""Steering sweeps: what a vector does to a behaviour, and what it costs, over strengths x layers.

Every setting (``apply.Setting``: layer, strength, control) is run beside its controls, a random
direction of the same norm and the zero vector (which is the clean run), and measured by

- ``behaviour``: the logit difference target - foil at the last position of each record of a prompt set
  (``{"prompt", "target", "foil"}``), averaged with a Student-t interval; or, given ``keywords``, the
  fraction of greedy generations (``max_new_tokens`` long) that contain one of them (case-insensitive);
- ``cost``: the mean next-token loss on the project's held-out passages (``probes.text.passages("test")``,
  each cut to ``cost_tokens``) with the vector added at every position, so a vector that breaks the
  model shows;
- ``text``: the greedy continuations of the first ``n_generate`` prompts.

Each setting is a row (per prompt, per passage) of batched forwards that start at the first layer the
setting changes, from the clean residual stream cached there; settings that add nothing (strength 0,
the zero control) are the clean run, computed once. Generation runs every setting as rows of one
batched decode with a KV cache.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ...probes import HeadscopeError, Model, Result
from ...probes.engine.generate import generate
from ...probes.engine.batching import Halving, row_chunks
from ...probes.engine.run import run
from ...probes.models import hooks
from ...probes.models.model import Batch, Tokens
from ...probes.progress import tracked
from ...probes.text.corpus import passages

from ..metrics import pick, target_metric
from ..prompt_sets import PromptSet, as_prompt_set, encode
from ..stats import interval_meta, mean_interval
from .apply import ALL, CONTROLS, PLACES, Setting, Steering
from .vectors import SteeringVector


class SteeringSweep(Result):
    """``sweep``: one row per (layer, strength, control) with ``behaviour`` (and its interval), ``cost`` and
    the first prompts' generations ``text``; ``vector``: the steering vector swept (``vector.safetensors``)."""

    kind = "steering-sweep"
    table = "sweep"
    TABLES = ("vector",)
    title = "headscope steering sweep"

    def __init__(self, frame: pd.DataFrame, meta: dict, tables=None, vector: SteeringVector | None = None,
                 directory: Path | None = None):
        super().__init__(frame, meta, tables)
        self._vector, self._directory = vector, directory

    @property
    def steering_vector(self) -> SteeringVector:
        if self._vector is None:
            self._vector = SteeringVector(self.tables["vector"], self.meta["vector"], directory=self._directory)
        return self._vector

    def _write_files(self, directory: Path) -> None:
        self.steering_vector._write_files(directory)

    @classmethod
    def _load(cls, directory: Path, meta: dict) -> "SteeringSweep":
        from ...probes.results.result import read_table

        if not (directory / "vector.safetensors").is_file():
            raise HeadscopeError(f"{directory} has no vector.safetensors; run headscope steer again to make it")
        tables = {name: read_table(directory / f"{name}.parquet") for name in meta.get("tables", [cls.table])}
        return cls(tables.pop(cls.table), meta, tables, directory=directory)

    def plot(self):
        """Behaviour against cost over strengths, a line per layer; the random-direction control dotted."""
        import plotly.graph_objects as go

        fig = go.Figure()
        frame = self.frame.sort_values("strength")
        for (layer, control), part in frame[frame["control"] != "zero"].groupby(["layer", "control"], sort=True):
            name = ("every layer" if layer == ALL else f"layer {layer}") + ("" if control == "vector" else f" ({control})")
            fig.add_trace(go.Scatter(x=part["cost"], y=part["behaviour"], mode="lines+markers", name=name,
                                     text=[f"strength {s:g}" for s in part["strength"]],
                                     line={"dash": "dot" if control == "random" else "solid"},
                                     hovertemplate="%{text}<br>cost %{x:.3f}<br>behaviour %{y:.3f}<extra></extra>"))
        clean = frame[frame["control"] == "zero"].iloc[:1]
        if len(clean):
            fig.add_trace(go.Scatter(x=clean["cost"], y=clean["behaviour"], mode="markers", name="clean (zero vector)",
                                     marker={"symbol": "x", "size": 12, "color": "black"}))
        m = self.meta
        fig.update_layout(title=f"{m['vector']['method']} vector: {m['behaviour']} vs cost over strengths",
                          xaxis_title="cost: next-token loss on held-out passages", yaxis_title=m["behaviour"],
                          height=480)
        return fig

    def report(self) -> list:
        m = self.meta
        table = self.frame.drop(columns=["text"]).to_html(index=False, float_format=lambda v: f"{v:.4g}")
        return [f"<h1>Steering sweep</h1><p>{m['vector']['method']} vector from {m['model']}, added at "
                f"{m['places']} positions; behaviour: {m['behaviour']}; cost: {m['cost']}.</p>", self.plot(),
                "<h2>Settings</h2>", table]


def settings_grid(vector: SteeringVector, layers, strengths) -> list[Setting]:
    """Every (layer, strength, control): the vector and its two controls at each."""
    icv = vector.meta["method"] == "icv"
    layers = [ALL] if layers is None and icv else (vector.layers if layers is None else list(layers))
    try:
        strengths = [float(s) for s in strengths]
    except (TypeError, ValueError):
        raise HeadscopeError(f"strengths {list(strengths)!r} must be numbers") from None
    if not strengths:
        raise HeadscopeError("no strength given")
    for layer in layers:
        if layer != ALL:
            vector.at(layer)
    return [Setting(layer, s, control) for layer in layers for s in strengths for control in CONTROLS]


def steer_sweep(
    model,
    vector: SteeringVector,
    prompts,
    *,
    layers=None,
    strengths=(0.0, 1.0, 2.0, 4.0, 8.0),
    places: str = "all",
    keywords: list[str] | None = None,
    n_generate: int = 2,
    max_new_tokens: int = 24,
    cost_texts: list[str] | None = None,
    cost_tokens: int = 64,
    seed: int = 0,
    batch_size: int | None = None,
    cluster=None,
    shards=None,
    progress: bool = True,
) -> SteeringSweep:
    """Sweep ``vector`` over ``layers`` (default: each of its layers; every layer at once for an in-context
    vector) x ``strengths`` on ``prompts`` (module docstring). Each layer's settings are a unit
    (``probes.engine.units``), run here on ``model`` (a ``Model``, or ``load_model`` arguments) or on Ray
    (``cluster``, one model copy per worker; ``shards`` keeps finished units)."""
    from ...probes.engine.units import Unit, run_units

    started = time.perf_counter()
    if places not in PLACES:
        raise HeadscopeError(f"unknown places {places!r}; use one of {', '.join(PLACES)}")
    if isinstance(model, Model):  # here, before any work (a Ray worker checks its own copy)
        vector.check_model(model)
    settings = settings_grid(vector, layers, strengths)
    if keywords is not None:
        keywords = [k.strip() for k in keywords if isinstance(k, str) and k.strip()]
        if not keywords:
            raise HeadscopeError("the keyword list is empty; give at least one keyword to look for in the generations")
        prompt_set = _prompt_records(prompts)
    else:
        prompt_set = as_prompt_set(prompts)
    if isinstance(n_generate, bool) or not isinstance(n_generate, int) or n_generate < 0:
        raise HeadscopeError(f"n_generate {n_generate!r} must be a whole number >= 0")
    if isinstance(cost_tokens, bool) or not isinstance(cost_tokens, int) or cost_tokens < 2:
        raise HeadscopeError(f"cost_tokens {cost_tokens!r} must be a whole number of at least 2")
    texts = cost_texts if cost_texts is not None else passages("test")[:8]
    clean = Setting(ALL, 0.0, "zero")
    groups: dict[object, list[Setting]] = {"clean": [clean]}
    for s in dict.fromkeys(s for s in settings if not s.inert):  # each distinct steered setting once, by layer
        groups.setdefault(s.layer, []).append(s)
    n_text = len(prompt_set) if keywords is not None else min(n_generate, len(prompt_set))
    common = {"vector": vector, "prompts": prompt_set, "behaviour": keywords is None, "n_text": n_text,
              "max_new_tokens": max_new_tokens, "texts": texts, "cost_tokens": cost_tokens, "places": places,
              "seed": seed, "batch_size": batch_size}
    units = [Unit(f"settings-{key}", _settings, {"settings": group, **common}) for key, group in groups.items()]
    done = run_units(units, model=model if isinstance(model, Model) else None,
                     load=None if isinstance(model, Model) else model, cluster=cluster, shards=shards,
                     progress=progress, desc="steering")
    measured = {}
    for group, frames in zip(groups.values(), done):
        for i, s in enumerate(group):
            text = frames["text"][frames["text"]["setting"] == i].sort_values("prompt")["text"].tolist()
            if keywords is None:
                values = frames["behaviour"][frames["behaviour"]["setting"] == i].sort_values("prompt")["value"]
                values = values.to_numpy(float)
            else:
                lowered = [k.lower() for k in keywords]
                values = np.array([any(k in t.lower() for k in lowered) for t in text], float)
            measured[s] = (values, float(frames["cost"]["cost"].iloc[i]), text)
    rows = []
    for s in settings:
        values, cost, text = measured[clean if s.inert else s]
        mean, low, high = mean_interval(values)
        rows.append({"layer": s.layer, "strength": s.strength, "control": s.control, "behaviour": float(mean),
                     "behaviour_low": float(low), "behaviour_high": float(high), "cost": cost,
                     "text": list(text[:n_generate])})
    frame = pd.DataFrame(rows)
    behaviour_name = ("logit difference target - foil at the last position" if keywords is None
                      else f"fraction of generations containing any of {keywords}")
    meta = {"model": vector.meta["model"],
            "vector": {k: v for k, v in vector.saved_meta().items() if k not in ("tables", "files")},
            "places": places, "behaviour": behaviour_name, "keywords": keywords, "prompt_set": prompt_set.name,
            "prompt_source": prompt_set.source, "n_prompts": len(prompt_set),
            "cost": f"mean next-token loss over {len(texts)} held-out passages of at most {cost_tokens} tokens, "
                    "the vector added at every position",
            "interval": interval_meta("t", 0.95, len(prompt_set)), "seed": seed,
            "layer_all": ALL, "max_new_tokens": max_new_tokens, "generated_for": n_text,
            "seconds": round(time.perf_counter() - started, 3)}
    return SteeringSweep(frame, meta, {"vector": vector.frame}, vector=vector)


def _settings(model: Model, settings: list[Setting], vector: SteeringVector, prompts: PromptSet, behaviour: bool,
              n_text: int, max_new_tokens: int, texts: list[str], cost_tokens: int, places: str, seed: int,
              batch_size) -> dict[str, pd.DataFrame]:
    """One unit of a sweep: its settings' behaviour on each prompt, cost, and generations."""
    steering = Steering(model, vector, places, seed)
    out = {}
    if behaviour:
        values = _behaviour(model, steering, settings, encode(model, prompts, foil=True), batch_size, False)
        out["behaviour"] = pd.DataFrame([(i, j, float(v)) for i, row in enumerate(values) for j, v in enumerate(row)],
                                        columns=["setting", "prompt", "value"])
    generations = (_generations(model, steering, settings, [r["prompt"] for r in prompts.records[:n_text]],
                                max_new_tokens, False) if n_text else [[] for _ in settings])
    out["text"] = pd.DataFrame([(i, j, t) for i, row in enumerate(generations) for j, t in enumerate(row)],
                               columns=["setting", "prompt", "text"])
    out["cost"] = pd.DataFrame({"cost": _cost(model, steering, settings, texts, cost_tokens, batch_size, False)})
    return out


def _prompt_records(prompts) -> PromptSet:
    """Prompts alone (records with ``prompt``), for a keyword behaviour."""
    from ...probes.text.prompts import read_prompts

    if isinstance(prompts, PromptSet):
        return prompts
    if isinstance(prompts, (str, Path)):
        texts = read_prompts(prompts)
        return PromptSet([{"prompt": t} for t in texts], Path(prompts).stem, str(prompts))
    texts = [p["prompt"] if isinstance(p, dict) else p for p in prompts]
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise HeadscopeError("give prompts as non-empty strings")
    return PromptSet([{"prompt": t} for t in texts])


def _rows(model: Model, steering: Steering, unique: list[Setting], batch: Batch, score, batch_size,
          progress: bool, desc: str, logits_at_last: bool) -> torch.Tensor:
    """``score(logits, text_rows)`` for every (setting, text) row, ``[U, texts, ...]``: the clean setting from
    one forward, each layer's steered settings as rows of forwards starting at that layer."""
    n_texts, width = len(batch), batch.input_ids.shape[1]
    starts = sorted({steering.first_layer([s]) for s in unique if not s.inert})
    clean = run(model, batch, record=[hooks.resid_pre(l) for l in starts], logits_at=batch.last if logits_at_last else None)
    clean_scores = score(clean.logits, torch.arange(n_texts))
    out = torch.empty(len(unique), *clean_scores.shape)
    for u, s in enumerate(unique):
        if s.inert:
            out[u] = clean_scores.cpu()
    jobs = [(start, [u for u, s in enumerate(unique) if not s.inert and steering.first_layer([s]) == start])
            for start in starts]
    chunks = [(start, group[sl]) for start, group in jobs
              for sl in row_chunks(model, len(group), width, batch_size, per_row=n_texts)]
    def forward(start: int, group: list[int]) -> None:
        text_rows = torch.arange(n_texts).repeat(len(group))
        ids = batch.input_ids[text_rows.to(batch.input_ids.device)]
        rows = Batch(ids, batch.lengths[text_rows.to(batch.lengths.device)])
        row_settings = [unique[u] for u in group for _ in range(n_texts)]
        result = run(model, rows, steering.interventions(row_settings, True, rows.last, rows.lengths.cpu()),
                     start_layer=start, resid=_rows_of(clean.cache[hooks.resid_pre(start)], text_rows),
                     logits_at=rows.last if logits_at_last else None)
        out[group] = score(result.logits, text_rows).cpu().unflatten(0, (len(group), n_texts))

    halving = Halving("settings")
    for start, group in tracked(chunks, desc=desc, unit="batch", disable=not progress):
        halving(group, lambda part, start=start: forward(start, part))
    return out


def _rows_of(cached: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``cached[rows]``, indexed on the cached tensor's own device (a device map spreads the layers)."""
    return cached[rows.to(cached.device)]


def _behaviour(model, steering, unique, enc, batch_size, progress) -> np.ndarray:
    batch = model.batch(enc.tokens)
    targets = torch.tensor(enc.target_ids, device=model.device)
    foils = torch.tensor(enc.foil_ids, device=model.device)

    def score(logits, text_rows):
        rows = text_rows.to(model.device)
        return target_metric(logits, "logit_diff", targets[rows], foils[rows])

    return _rows(model, steering, unique, batch, score, batch_size, progress, "steering: behaviour", True).numpy()


def _cost(model, steering, unique, texts, cost_tokens, batch_size, progress) -> np.ndarray:
    """Mean next-token loss over the passages' real positions, per setting."""
    toks = [model.tokenize(t) for t in texts]
    toks = [Tokens(t.text, t.ids[:cost_tokens], t.strings[:cost_tokens], t.spans[:cost_tokens]) for t in toks]
    batch = model.batch(toks)
    ids, mask = batch.input_ids, batch.attention_mask.float()

    def score(logits, text_rows):
        rows = text_rows.to(ids.device)
        ce = -pick(torch.log_softmax(logits[:, :-1].float(), -1), ids[rows, 1:])
        m = mask[rows, 1:]
        return (ce * m).sum(-1) / m.sum(-1)

    per_text = _rows(model, steering, unique, batch, score, batch_size, progress, "steering: cost", False)
    return per_text.mean(-1).numpy()


def _generations(model, steering, unique, prompts, max_new_tokens, progress) -> list[list[str]]:
    """Greedy continuations of each prompt under each setting, all settings as rows of one decode."""
    toks = [model.tokenize(p) for p in prompts]
    row_prompts = [t for _ in unique for t in toks]
    row_settings = [s for s in unique for _ in toks]

    def interventions(group, prompt):
        lengths = torch.tensor([len(row_prompts[i]) for i in group])
        return steering.interventions([row_settings[i] for i in group], prompt, lengths - 1, lengths)

    new = generate(model, row_prompts, max_new_tokens, stop_at_eos=True, batch_size=len(row_prompts),
                   interventions=interventions)
    texts = model.tokenizer.batch_decode(new)
    return [texts[u * len(toks):(u + 1) * len(toks)] for u in range(len(unique))]
