"""Batch head-importance reports: every head of one or more models on one or more prompt sets.

``head_report`` writes into ``out``:

- ``heads.parquet``: per (model, prompt set, layer, head): ``effect, ci_low, ci_high`` of the
  single-head ablation, its ``direct_effect`` (the head's output ablated on the direct path alone,
  ``direct``) and ``self_repair = direct_effect - effect`` (what the rest of the network makes up for),
  the detector scores (induction, previous-token, duplicate-token,
  attention sink) and, when asked, the gradient importance;
- ``heads_by_prompt.parquet``: per (model, prompt set, prompt, layer, head): ``clean, ablated, effect,
  direct_effect, self_repair``;
- ``heads.json``: ``{"layer-head": [effect per prompt]}`` (the retrieval-head reference's format);
  with several models or prompt sets, one such object per ``"model | prompt set"`` key;
- ``pruning.parquet`` (with ``pruning=True``): the pruning curves, by importance and random orders;
- ``report.html``: one self-contained page (plotly inlined, opens offline); its pruning curve
  removes heads by the size of their single-head effect, smallest first, as Michel et al. prune by
  the magnitude of importance;
- ``meta.json``: parameters, model and prompt-set descriptions, rank correlations, timings.

The work is units (``probes.engine.units``): each model's detector scores, each prompt set's attention
sink and gradient importance, each chunk of prompts' ablations, then each set's pruning curve; they run
here, or on a Ray cluster with one model copy per worker. Each unit's rows are saved under
``.<out>.shards`` next to ``out``; a run interrupted and started again with the same parameters reuses
the finished units (chunks are fixed by prompt index, so the result equals an uninterrupted run's, and
a Ray run's equals a single-process run's). ``out`` appears only when complete.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import time
from pathlib import Path

import pandas as pd

from ...probes import HeadscopeError, Model, Result, load_model
from ...probes.engine.units import Cluster, Unit, check_cluster, on_cluster, run_units, shard_dir, start_shards
from ...probes.models.loading import check_model_spec, resolve_device, resolve_dtype
from ...probes.results.outputs import check_output_dir

from .ablation import LOWER_IS_BETTER, check_options, prepare
from .direct import head_direct_effects
from .single_heads import HeadAblation, single_heads
from .detectors import attention_sink, detector_scores
from .importance import PruningCurve, gradient_importance, pruning_curve
from ..prompt_sets import read_prompt_set
from ..stats import spearman


class HeadReport(Result):
    """The batch head report: ``heads`` (per model, prompt set, layer, head), ``heads_by_prompt``,
    optional ``pruning``; ``heads.json`` and ``report.html`` are written from them."""

    kind = "head-report"
    table = "heads"
    TABLES = ("heads_by_prompt", "pruning")
    title = "headscope head report"

    def combinations(self):
        """``(key, info, heads, ablation)`` per (model, prompt set): its row of meta, its head table and
        its single-head ablations as a ``HeadAblation``."""
        for info in self.meta["combinations"]:
            pick = lambda f: f[(f["model"] == info["model"]) & (f["prompt_set"] == info["prompt_set"])]  # noqa: E731
            frame = pick(self.heads_by_prompt).drop(columns=["model", "prompt_set"]).reset_index(drop=True)
            yield (f"{info['model']} | {info['prompt_set']}", info, pick(self.frame),
                   HeadAblation(frame, {"model": info["model"], **info}))

    def plot(self):
        """The first combination's ablation heatmap."""
        return next(self.combinations())[3].plot()

    def exports(self) -> dict[str, str]:
        exports = {key: ablation.effects_by_head() for key, _, _, ablation in self.combinations()}
        return {"heads.json": json.dumps(next(iter(exports.values())) if len(exports) == 1 else exports)}

    def pruning_plot(self, info: dict):
        part = self.pruning[(self.pruning["model"] == info["model"]) & (self.pruning["prompt_set"] == info["prompt_set"])]
        return PruningCurve(part, {**info["pruning"], "metric": info["metric"]}).plot()

    def report(self) -> list:
        params = self.meta["params"]
        lower = params["metric"] in LOWER_IS_BETTER
        parts = [
            "<h1>Head importance report</h1>",
            f"<p>{params['mode']} ablation of each head, metric {params['metric']} "
            f"(effect = {'ablated - clean' if lower else 'clean - ablated'}; positive: the head supports the behaviour), "
            f"positions {params['positions']}, seed {params['seed']}. Written {self.meta['created']} in "
            f"{self.meta['seconds']} s.</p>",
        ]
        combos = list(self.combinations())
        if len(combos) > 1:
            top = {key: table.nlargest(10, "effect").apply(lambda r: f"L{r['layer']}H{r['head']} ({r['effect']:.3g})",
                                                            axis=1).tolist() for key, _, table, _ in combos}
            parts += ["<h2>Comparison: top 10 heads</h2>", pd.DataFrame(top).to_html(index=False)]
        for key, info, table, ablation in combos:
            mi = info["model_info"]
            parts += [f"<h2>{html.escape(key)}</h2>",
                      f"<p>Model {html.escape(info['model'])}: {mi.get('n_layers')} layers x {mi.get('n_heads')} "
                      f"{html.escape(info['heads_are'])}, {mi.get('architecture')}, {mi.get('dtype')}, "
                      f"{mi.get('device')}. Prompt set {html.escape(info['prompt_set'])} ({info['n_prompts']} prompts, "
                      f"{html.escape(info['prompt_source'])}).</p>"]
            for note in info.get("notes", []):
                parts.append(f"<p><i>{html.escape(note)}</i></p>")
            if "spearman_gradient_importance_vs_effect" in info:
                parts.append(f"<p>Gradient importance vs exact effect: Spearman "
                             f"{info['spearman_gradient_importance_vs_effect']:.3f} (vs |effect| "
                             f"{info['spearman_gradient_importance_vs_abs_effect']:.3f}); first-order estimate vs "
                             f"effect {info['spearman_gradient_estimate_vs_effect']:.3f}.</p>")
            parts.append(ablation.plot())
            if "pruning" in info:
                p = info["pruning"]
                parts += [f"<p>Pruning by {p['importance']} (computed once, not recomputed): knee at "
                          f"{p['knee_fraction']:.0%} of heads removed ({p['knee_removed']} heads).</p>",
                          self.pruning_plot(info)]
            parts += ["<h3>Top heads</h3>", table.nlargest(20, "effect").drop(columns=["model", "prompt_set"])
                      .to_html(index=False, float_format=lambda v: f"{v:.4g}")]
        return parts


def head_report(
    models: list[str | Model],
    prompt_files: list[str | Path],
    out: str | Path,
    *,
    mode: str = "zero",
    metric: str = "logprob",
    positions: str = "all",
    gradient: bool = False,
    pruning: bool = False,
    seed: int = 0,
    device: str = "auto",
    dtype: str = "float32",
    batch_size: int | None = None,
    chunk_size: int = 16,
    overwrite: bool = False,
    progress: bool = True,
    placement: dict | None = None,
    cluster: Cluster | None = None,
) -> Path:
    """Run the head analyses for every model x prompt set and write the report (module docstring).

    ``out`` must be a new directory, or an earlier result replaced with ``overwrite`` (``outputs``);
    ``placement``: ``load_model``'s ``device_map``, ``max_memory`` and ``offload_folder``; ``cluster``: run the
    units on Ray (``probes.engine.units``), each worker holding one copy of the model."""
    started = time.perf_counter()
    out = check_output_dir(out, overwrite)
    check_options(mode, metric, positions)
    check_cluster(cluster)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise HeadscopeError(f"chunk_size {chunk_size!r} must be at least 1")
    if not models or not prompt_files:
        raise HeadscopeError("give at least one model and one prompt file")
    sets = [read_prompt_set(p) for p in prompt_files]
    for ps in sets:
        if metric == "logit_diff":
            ps.require("foil", "the logit difference")
        if mode == "resample":
            ps.require("corrupted", "resample ablation")
    specs = [m.spec if isinstance(m, Model) else str(m) for m in models]
    for spec in models:  # every model named must exist before the first one is analysed
        if not isinstance(spec, Model):
            check_model_spec(str(spec))
    resolve_device(device), resolve_dtype(dtype)
    params = {"models": specs, "prompt_files": [str(Path(ps.source).resolve()) for ps in sets],
              "prompt_files_mtime": [os.path.getmtime(ps.source) for ps in sets], "mode": mode, "metric": metric,
              "positions": positions, "gradient": gradient, "pruning": pruning, "seed": seed, "dtype": dtype,
              "chunk_size": chunk_size, "columns": ["clean", "ablated", "effect", "direct_effect", "self_repair"]}
    shards = shard_dir(out, params)
    options = {"mode": mode, "metric": metric, "positions": positions, "batch_size": batch_size}

    with on_cluster(cluster):
        heads_rows, by_prompt, pruning_rows, combos = _report(models, specs, sets, cluster, shards, params, options,
                                                              gradient, pruning, device, dtype, seed, placement,
                                                              chunk_size, progress)
    meta = {"params": {k: v for k, v in params.items() if k != "prompt_files_mtime"}, "combinations": combos,
            "seconds": round(time.perf_counter() - started, 3), "ray": None if cluster is None else
            {"address": cluster.address, "workers": cluster.workers}}
    tables = {"heads_by_prompt": pd.concat(by_prompt, ignore_index=True),
              "pruning": pd.concat(pruning_rows, ignore_index=True) if pruning_rows else None}
    HeadReport(pd.concat(heads_rows, ignore_index=True), meta, tables).save(out, overwrite)
    shutil.rmtree(shards, ignore_errors=True)
    return out


def _report(models, specs, sets, cluster, shards, params, options, gradient, pruning, device, dtype, seed, placement,
            chunk_size, progress):
    """Every model x prompt set's tables, from the report's units (run here or on Ray)."""
    heads_rows, by_prompt, pruning_rows, combos = [], [], [], []
    for mi, spec in enumerate(models):
        load = {"spec": specs[mi], "device": device, "dtype": dtype if not isinstance(spec, Model) else spec.dtype,
                "seed": seed, **(placement or {})}
        model = spec if isinstance(spec, Model) else None
        if model is None and cluster is None:
            model = load_model(**load)
        units = [Unit(f"m{mi}-detectors", _detectors, {"seed": seed})]
        for si, ps in enumerate(sets):
            units.append(Unit(f"m{mi}-s{si}-set", _prompt_set, {"prompts": ps, **options}))
            if gradient:
                units.append(Unit(f"m{mi}-s{si}-gradient", _gradient, {"prompts": ps, **options}))
            units += [Unit(f"m{mi}-s{si}-c{c}", _ablations,
                           {"prompts": ps, "indices": list(range(start, min(start + chunk_size, len(ps)))), **options})
                      for c, start in enumerate(range(0, len(ps), chunk_size))]
        start_shards(shards, params)  # only now: a run that fails in its checks leaves nothing behind
        name = specs[mi]
        done = dict(zip((u.key for u in units), run_units(units, model=model, load=load, cluster=cluster,
                                                          shards=shards, progress=progress, desc=name)))
        second = []
        for si, ps in enumerate(sets):
            info = json.loads(done[f"m{mi}-s{si}-set"]["info"]["json"].iloc[0])
            chunks = [done[u.key]["rows"] for u in units if u.key.startswith(f"m{mi}-s{si}-c")]
            ablation = HeadAblation(pd.concat(chunks, ignore_index=True), {"model": name, **info["described"]})
            table = ablation.summary().merge(done[f"m{mi}-detectors"]["rows"], on=["layer", "head"])
            table = table.merge(done[f"m{mi}-s{si}-set"]["rows"], on=["layer", "head"])
            info = {"model": name, "prompt_set": ps.name, "prompt_source": ps.source, "n_prompts": len(ps),
                    "model_info": info["model_info"],
                    **{k: v for k, v in info["described"].items() if k not in ("prompt_set",)}}
            if gradient:
                importance = done[f"m{mi}-s{si}-gradient"]["rows"]
                table = table.merge(importance.rename(columns={"importance": "gradient_importance",
                                                               "gradient": "gradient_estimate"}), on=["layer", "head"])
                info["spearman_gradient_importance_vs_effect"] = spearman(table["gradient_importance"], table["effect"])
                info["spearman_gradient_importance_vs_abs_effect"] = spearman(table["gradient_importance"],
                                                                              table["effect"].abs())
                info["spearman_gradient_estimate_vs_effect"] = spearman(table["gradient_estimate"], table["effect"])
            if pruning:
                size = [[int(l), int(h), abs(float(e))]  # least important: the smallest single-head effect
                        for l, h, e in table[["layer", "head", "effect"]].itertuples(index=False)]
                second.append(Unit(f"m{mi}-s{si}-pruning", _pruning, {"prompts": ps, "sizes": size, **options}))
            table.insert(0, "prompt_set", ps.name)
            table.insert(0, "model", name)
            frame = ablation.frame.copy()
            frame.insert(0, "prompt_set", ps.name)
            frame.insert(0, "model", name)
            heads_rows.append(table)
            by_prompt.append(frame)
            combos.append(info)
        if second:
            curves = run_units(second, model=model, load=load, cluster=cluster, shards=shards, progress=progress,
                               desc=f"{name}: pruning")
            for unit, curve in zip(second, curves):
                info = combos[len(combos) - len(sets) + int(unit.key.split("-s")[1].split("-")[0])]
                info["pruning"] = json.loads(curve["info"]["json"].iloc[0])
                pruning_rows.append(curve["rows"].assign(model=name, prompt_set=info["prompt_set"]))
        del model
    return heads_rows, by_prompt, pruning_rows, combos


# -- the report's units (``probes.engine.units``): each runs on a model, here or on a Ray worker ---------------

def _json(value) -> pd.DataFrame:
    return pd.DataFrame({"json": [json.dumps(value, default=str)]})


def _detectors(model: Model, seed: int) -> pd.DataFrame:
    return detector_scores(model, seed=seed)


def _prompt_set(model: Model, prompts, **options) -> dict[str, pd.DataFrame]:
    """The set's attention sink per head, and what the ablation setup says of itself and of the model."""
    setup = prepare(model, prompts, **options)
    return {"rows": attention_sink(model, setup.encoded.tokens),
            "info": _json({"described": setup.describe(), "model_info": model.info()})}


def _gradient(model: Model, prompts, batch_size=None, **options) -> pd.DataFrame:
    return gradient_importance(prepare(model, prompts, batch_size=batch_size, **options), batch_size=batch_size).frame


def _ablations(model: Model, prompts, indices: list[int], batch_size=None, **options) -> pd.DataFrame:
    """One chunk's single-head ablations, with each head's direct effect and self-repair."""
    setup = prepare(model, prompts, batch_size=batch_size, **options)
    frame = single_heads(setup, indices=indices, batch_size=batch_size).frame
    heads = list(frame[["layer", "head"]].drop_duplicates().itertuples(index=False, name=None))
    frame = frame.merge(head_direct_effects(setup, heads, indices, batch_size), on=["prompt", "layer", "head"])
    frame["self_repair"] = frame["direct_effect"] - frame["effect"]
    return frame


def _pruning(model: Model, prompts, sizes: list, batch_size=None, **options) -> dict[str, pd.DataFrame]:
    setup = prepare(model, prompts, batch_size=batch_size, **options)
    curve = pruning_curve(setup, {(l, h): v for l, h, v in sizes}, importance_name="|single-head ablation effect|",
                          batch_size=batch_size)
    return {"rows": curve.frame, "info": _json({k: curve.meta[k] for k in ("importance", "recomputed", "step", "seeds",
                                                                        "knee_fraction", "knee_removed")})}
