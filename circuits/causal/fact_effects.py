"""Average indirect effects of causal tracing over a fact set (ROME, Figure 2).

Facts are JSONL records with ``subject``, ``prompt`` (or ``template`` with ``{}`` for the subject)
and ``target``. Only facts the model gets right (clean top-1 next token = the target's first token)
are traced; how many were dropped is recorded. The noise scale is the multiple of the embedding std
over the facts' subjects, as the reference computes it over its known facts.

Positions are bucketed as in the reference's averaging (notebooks/average_causal_effects): first,
middle and last subject token, first subsequent token, further tokens, last token. As there, the
middle and further buckets count every position separately, and a position can be both the first
subsequent and the last token. Reported per (kind, bucket, layer): the mean indirect effect
(restored score minus the fact's corrupted score) with a Student-t 95% interval over the facts (the
reference plots a normal one; with 40 facts the t interval is 3% wider), and the count.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import random

import pandas as pd

from ...probes import HeadscopeError, Model, Result, read_records, run
from ...probes.engine.batching import row_chunks

from ..stats import check_interval, interval_meta, mean_interval
from .tracing import KINDS, default_window, noise_scale, trace

BUCKETS = ("first subject token", "middle subject tokens", "last subject token", "first subsequent token",
           "further tokens", "last token")


def read_facts(path: str | Path) -> list[dict]:
    """Fact records with ``prompt`` filled in from ``template`` where needed; bad lines are named."""
    records = read_records(path, required=("subject", "target"))
    for lineno, record in enumerate(records, start=1):
        if "prompt" not in record:
            template = record.get("template")
            if not isinstance(template, str) or "{}" not in template:
                raise HeadscopeError(f"{path}: fact {lineno} has neither 'prompt' nor a 'template' with {{}}")
            record["prompt"] = template.replace("{}", record["subject"])
        if record["subject"] not in record["prompt"]:
            raise HeadscopeError(f"{path}: fact {lineno}: subject {record['subject']!r} not in its prompt")
    return records


def known_facts(model: Model, facts: list[dict], batch_size: int | None = None) -> list[dict]:
    """The facts whose target's first token is the model's greedy next token."""
    kept = []
    for sl in row_chunks(model, len(facts), 64, batch_size):
        part = facts[sl]
        batch = model.batch([f["prompt"] for f in part])
        predicted = run(model, batch, logits_at=batch.last).logits.argmax(-1).tolist()
        kept += [f for f, p in zip(part, predicted) if p == model.first_token(f["target"], "target")[0]]
    return kept


def position_buckets(subject: list[int], n: int) -> list[tuple[int, str]]:
    """(position, bucket) pairs for a prompt of ``n`` tokens with the given subject positions."""
    first, last_subject, last = min(subject), max(subject), n - 1
    pairs = [(first, BUCKETS[0])]
    pairs += [(p, BUCKETS[1]) for p in range(first + 1, last_subject)]
    pairs.append((last_subject, BUCKETS[2]))  # a one-token subject is its first and last, as in the reference
    if last_subject + 1 <= last:
        pairs.append((last_subject + 1, BUCKETS[3]))
        pairs += [(p, BUCKETS[4]) for p in range(last_subject + 2, last)]
    pairs.append((last, BUCKETS[5]))
    return pairs


class AverageTrace(Result):
    """Mean indirect effect per (kind, bucket, layer) over the facts the model knows."""

    kind = "average-trace"
    table = "effects"

    def plot(self):
        """One heatmap per kind: bucket x layer, coloured by the mean indirect effect."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        kinds = [k for k in KINDS if k in set(self.frame["kind"])]
        fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=kinds, shared_yaxes=True, horizontal_spacing=0.04)
        colours = {"resid": "Purples", "mlp": "Greens", "attn": "Reds"}
        for col, kind in enumerate(kinds, start=1):
            grid = (self.frame[self.frame["kind"] == kind].pivot(index="bucket", columns="layer", values="effect")
                    .reindex(list(BUCKETS)))
            fig.add_trace(go.Heatmap(z=grid.values, x=list(grid.columns), y=list(grid.index), colorscale=colours[kind],
                                     showscale=col == len(kinds),
                                     hovertemplate="layer %{x}<br>%{y}<br>AIE %{z:.4f}<extra></extra>"), row=1, col=col)
        fig.update_yaxes(autorange="reversed")
        fig.update_layout(title=f"Average indirect effect over {self.meta['n_facts']} known facts, {self.meta['model']}",
                          height=380)
        return fig


def average_indirect_effects(
    model,
    facts: list[dict] | str | Path,
    *,
    kinds: tuple[str, ...] = KINDS,
    samples: int = 10,
    noise: str | float = "3sd",
    window: int | None = None,
    max_facts: int | None = None,
    seed: int = 0,
    interval: str = "t",
    level: float = 0.95,
    batch_size: int | None = None,
    chunk: int = 4,
    cluster=None,
    shards: Path | None = None,
    progress: bool = True,
) -> AverageTrace:
    """Trace every known fact (or a seeded sample of ``max_facts``) and average the indirect effects by
    bucket, with ``level`` intervals over the facts (``interval``: Student-t, or a seeded BCa bootstrap).

    The work is units (``probes.engine.units``): one finds the known facts and the noise scale, then each
    ``chunk`` of facts is traced; they run here on ``model`` (a ``Model``, or ``load_model`` arguments), or
    on Ray (``cluster``) with one model copy per worker, ``shards`` keeping finished units."""
    from ...probes.engine.units import Unit, run_units

    check_interval(interval, level)
    started = time.perf_counter()
    if not isinstance(facts, list):
        facts = read_facts(facts)
    if max_facts is not None and max_facts < 1:
        raise HeadscopeError(f"max_facts {max_facts} must be at least 1")
    local = model if isinstance(model, Model) else None
    where = dict(model=local, load=None if local is not None else model, cluster=cluster, shards=shards,
                 progress=progress)
    first = run_units([Unit("known", _known, {"facts": facts, "noise": noise, "window": window,
                                              "batch_size": batch_size})], desc="known facts", **where)[0]
    info = json.loads(first["info"]["json"].iloc[0])
    known = first["rows"]["fact"].tolist()
    if not known:
        raise HeadscopeError(f"the model gets none of the {len(facts)} facts right; nothing to trace")
    used = known
    if max_facts is not None and max_facts < len(known):  # a seeded sample, across relations
        picked = set(random.Random(seed).sample(range(len(known)), max_facts))
        used = [f for i, f in enumerate(known) if i in picked]
    options = {"kinds": list(kinds), "samples": samples, "noise": info["noise_scale"], "window": info["window"],
               "seed": seed, "batch_size": batch_size}
    units = [Unit(f"facts-{start}", _traced, {"facts": [(i, facts[i]) for i in used[start:start + chunk]], **options})
             for start in range(0, len(used), chunk)]
    traced = pd.concat([d["rows"] for d in run_units(units, desc="facts", **where)], ignore_index=True)
    rows = []
    for (kind, bucket, layer), part in traced.groupby(["kind", "bucket", "layer"], sort=False):
        mean, low, high = mean_interval(part["effect"].to_numpy(), method=interval, level=level, seed=seed)
        rows.append({"kind": kind, "bucket": bucket, "layer": layer, "effect": float(mean),
                     "ci_low": float(low), "ci_high": float(high), "n": len(part)})
    frame = pd.DataFrame(rows).sort_values(["kind", "bucket", "layer"], ignore_index=True)
    scores = traced.drop_duplicates("fact")
    meta = {"model": info["model"], "n_facts_given": len(facts), "n_known": len(known),
            "n_dropped": len(facts) - len(known), "n_facts": len(used), "kinds": list(kinds), "samples": samples,
            "noise": noise, "noise_scale": info["noise_scale"], "window": info["window"], "seed": seed,
            "mean_high_score": float(scores["high_score"].mean()), "mean_low_score": float(scores["low_score"].mean()),
            "interval": interval_meta(interval, level, len(used)), "seconds": round(time.perf_counter() - started, 3)}
    return AverageTrace(frame, meta)


# -- the units (``probes.engine.units``) ---------------------------------------------------------------------

def _known(model: Model, facts: list[dict], noise, window, batch_size) -> dict[str, pd.DataFrame]:
    """Which facts the model knows (their indices), and the noise scale and window the traces use."""
    kept = {id(f) for f in known_facts(model, facts, batch_size)}
    info = {"model": model.spec, "noise_scale": noise_scale(model, noise, [f["subject"] for f in facts]),
            "window": default_window(model) if window is None else window}
    return {"rows": pd.DataFrame({"fact": [i for i, f in enumerate(facts) if id(f) in kept]}, dtype="int64"),
            "info": pd.DataFrame({"json": [json.dumps(info)]})}


def _traced(model: Model, facts: list[tuple[int, dict]], kinds, samples, noise, window, seed,
            batch_size) -> pd.DataFrame:
    """Each fact's indirect effects by (kind, bucket, layer), and its clean and corrupted scores."""
    rows = []
    for i, fact in facts:
        result = trace(model, fact["prompt"], fact["subject"], fact["target"], kinds=tuple(kinds), samples=samples,
                       noise=noise, window=window, seed=seed, batch_size=batch_size, progress=False)
        effect = result.frame.set_index(["kind", "layer", "position"])["indirect_effect"]
        for position, bucket in position_buckets(result.meta["subject_positions"], result.meta["last_position"] + 1):
            for kind in kinds:
                for layer in range(model.n_layers):
                    rows.append((i, kind, bucket, layer, float(effect[(kind, layer, position)]),
                                 result.meta["high_score"], result.meta["low_score"]))
    return pd.DataFrame(rows, columns=["fact", "kind", "bucket", "layer", "effect", "high_score", "low_score"])
