"""A circuit found from data: edge scores, the circuit chosen from them, its faithfulness curve beside
random circuits, and the exact effects of its edges (issue 18). ``find_circuit`` runs it all;
``Circuit`` is its result."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd

from ...probes import HeadscopeError, Model, Result
from ..prompt_sets import as_prompt_set
from ..stats import interval_meta, mean_interval
from .attribution import EdgeScores, edge_attribution, exact_edge_effects
from .circuit import check_size, prune, top_edges
from .faithfulness import BUILDERS, FRACTIONS, circuit_metrics
from .graph import EdgeGraph
from .prompts import check_metric

METHODS = ("eap", "eap-ig", "exact")


class Circuit(Result):
    """``edges``: every edge's scores with ``in_circuit`` (and ``exact_effect`` / ``exact_low`` /
    ``exact_high`` where exact patching ran); ``faithfulness``: the curve, one row per circuit size,
    with the random circuits' mean and interval. ``meta`` holds CPR, CMD, the clean and corrupted
    metrics and the chosen circuit's size and faithfulness."""

    kind = "circuit"
    table = "edges"
    TABLES = ("faithfulness",)
    title = "headscope circuit"

    @property
    def circuit(self) -> pd.DataFrame:
        """The chosen circuit's edges, largest |effect| first."""
        kept = self.frame[self.frame["in_circuit"]]
        return kept.reindex(kept["effect"].abs().sort_values(ascending=False).index).reset_index(drop=True)

    def heads(self) -> list[str]:
        """The attention heads the circuit passes through, by their summed |effect|."""
        edges = self.circuit
        ends = pd.concat([edges[["upstream", "effect"]].rename(columns={"upstream": "node"}),
                          edges[["downstream", "effect"]].assign(node=edges["downstream"].str.split(".").str[0])
                          [["node", "effect"]]])
        ends = ends[ends["node"].str.match(r"L\d+H\d+$")]
        return list(ends.assign(size=ends["effect"].abs()).groupby("node")["size"].sum()
                    .sort_values(ascending=False).index)

    def shown(self, n: int) -> pd.DataFrame:
        """The ``n`` edges of largest |effect|, pruned to paths from the input to the logits: the circuit
        of that size, as the curve evaluates it."""
        graph = EdgeGraph(self.meta["n_layers"], self.meta["n_heads"], self.meta["n_kv_heads"])
        keep = prune(graph, top_edges(graph, self.frame["effect"].to_numpy(), min(int(n), graph.n_edges)))
        kept = self.frame[keep]
        return kept.reindex(kept["effect"].abs().sort_values(ascending=False).index).reset_index(drop=True)

    def cytoscape(self, edges: pd.DataFrame | None = None) -> dict:
        """Cytoscape.js elements of ``edges`` (default: the chosen circuit): nodes are the writers and the
        readers' components (``input``, ``L{l}H{h}``, ``MLP{l}``, ``logits``) with their layer (and head);
        edges carry the reader and its part (q, k, v; ``in`` for an MLP or the logits) and the effect. A key
        or value input shared by several query heads is drawn into the group's first head."""
        edges = self.circuit if edges is None else edges
        group = self.meta["n_heads"] // self.meta["n_kv_heads"]
        nodes: dict[str, dict] = {}

        def node(name: str, layer: int) -> str:
            head = int(name.split("H")[1]) if name.startswith("L") else None
            nodes.setdefault(name, {"data": {"id": name, "label": name, "layer": int(layer), "head": head}})
            return name

        out = []
        for r in edges.itertuples():
            target, _, part = r.downstream.partition(".")
            if part in ("k", "v"):
                target = f"L{r.downstream_layer}H{int(target.split('H')[1]) * group}"
            out.append({"data": {"id": f"{r.upstream}->{r.downstream}", "source": node(r.upstream, r.upstream_layer),
                                 "target": node(target, r.downstream_layer), "reader": r.downstream,
                                 "part": part or "in", "effect": float(r.effect)}})
        return {"nodes": list(nodes.values()), "edges": out}

    def faithfulness_at(self, n: int) -> float:
        """The curve's faithfulness at ``n`` edges, interpolated linearly in log(edges) between its sizes."""
        curve = self.faithfulness
        return float(np.interp(np.log(max(n, 1)), np.log(curve["n_edges"].to_numpy()),
                               curve["faithfulness"].to_numpy()))

    def exports(self) -> dict[str, str]:
        return {"graph.json": json.dumps(self.cytoscape(), indent=1)}

    def plot(self):
        """The circuit (layers from the input at the bottom to the logits at the top; edges red where
        they carry the clean behaviour, blue where they oppose it, width by |effect|) beside its
        faithfulness curve and the random circuits' band."""
        from plotly.subplots import make_subplots

        fig = make_subplots(1, 2, column_widths=[0.6, 0.4], subplot_titles=(
            f"circuit: {int(self.frame['in_circuit'].sum())} edges", "faithfulness by circuit size"))
        elements = self.cytoscape()
        L, H = self.meta["n_layers"], self.meta["n_heads"]
        pos = {}
        for node in elements["nodes"]:
            name, layer = node["data"]["id"], node["data"]["layer"]
            x = H / 2 if name in ("input", "logits") else H if name.startswith("MLP") else int(name.split("H")[1])
            pos[name] = (x, layer + 1 if name != "logits" else L + 1)
        top = max((abs(e["data"]["effect"]) for e in elements["edges"]), default=1.0) or 1.0
        for e in elements["edges"]:
            (x0, y0), (x1, y1) = pos[e["data"]["source"]], pos[e["data"]["target"]]
            fig.add_scatter(x=[x0, x1], y=[y0, y1], mode="lines", showlegend=False, hoverinfo="skip", row=1, col=1,
                            line=dict(width=0.5 + 4 * abs(e["data"]["effect"]) / top,
                                      color="#c0392b" if e["data"]["effect"] > 0 else "#2c7fb8"))
        fig.add_scatter(x=[p[0] for p in pos.values()], y=[p[1] for p in pos.values()], mode="markers+text",
                        text=list(pos), textposition="middle right", showlegend=False, row=1, col=1,
                        marker=dict(size=9, color="#34495e"))
        curve = self.faithfulness
        fig.add_scatter(x=curve["fraction"], y=curve["random_high"], mode="lines", line=dict(width=0),
                        showlegend=False, row=1, col=2)
        fig.add_scatter(x=curve["fraction"], y=curve["random_low"], mode="lines", line=dict(width=0), fill="tonexty",
                        fillcolor="rgba(127,127,127,0.3)", name="random circuits", row=1, col=2)
        fig.add_scatter(x=curve["fraction"], y=curve["faithfulness"], mode="lines+markers", name="circuit",
                        row=1, col=2)
        fig.update_xaxes(title_text="head (MLP at the right)", row=1, col=1)
        fig.update_yaxes(title_text="layer (input 0, logits top)", row=1, col=1)
        fig.update_xaxes(title_text="fraction of edges", type="log", row=1, col=2)
        fig.update_yaxes(title_text="faithfulness", row=1, col=2)
        fig.update_layout(height=max(600, 22 * L), title=f"{self.meta['model']}: {self.meta['method'].upper()} circuit "
                                                        f"({self.meta['metric']}), CPR {self.meta['cpr']:.3f}, "
                                                        f"CMD {self.meta['cmd']:.3f}")
        return fig

    def report(self) -> list:
        m = self.meta
        return [f"<h1>Circuit: {m['model']} on {m['prompts']}</h1>",
                f"<p>{m['method'].upper()} scores over {m['graph']}; {m['n_prompts']} prompts, metric {m['metric']} "
                f"(clean {m['clean_metric']:.3f}, all edges corrupted {m['corrupted_metric']:.3f}). The circuit: "
                f"{m['circuit_edges']} edges ({m['build']}, pruned to {m['kept_edges']}), faithfulness "
                f"{m['circuit_faithfulness']:.3f}. CPR {m['cpr']:.3f}, CMD {m['cmd']:.3f}. {m['seconds']} s.</p>",
                self.plot(),
                "<h2>Faithfulness by circuit size (random circuits: mean and interval over seeds)</h2>",
                self.faithfulness.to_html(index=False, float_format=lambda v: f"{v:.4g}"),
                "<h2>The circuit's edges</h2>",
                self.circuit.drop(columns=["in_circuit"]).to_html(index=False, float_format=lambda v: f"{v:.4g}")]


def curve_areas(fractions: np.ndarray, faithfulness: np.ndarray) -> tuple[float, float]:
    """MIB's CPR (area under the faithfulness curve) and CMD (area between it and 1), trapezoid rule."""
    x, f = np.asarray(fractions, float), np.asarray(faithfulness, float)
    return float(np.trapezoid(f, x)), float(np.trapezoid(np.abs(1 - f), x))


def find_circuit(model, prompts, *, method: str = "eap", metric: str = "logit_diff", corruption: str = "prompt",
                 steps: int = 5,
                 edges: int = 200, build: str = "top", fractions=FRACTIONS, seeds: int = 3, exact: bool = True,
                 interval: str = "t", level: float = 0.95, seed: int = 0, batch_size: int | None = None,
                 cluster=None, shards=None, progress: bool = True) -> Circuit:
    """Score every edge (``method``: EAP, EAP-IG, or exact patching of every edge; the corrupted values
    from ``corruption``: the corrupted prompts or the writers' means), keep a circuit of
    ``edges`` edges (``build``: top by |effect| or greedy from the logits, then pruned), and evaluate
    circuits at each of ``fractions`` of the edge count beside ``seeds`` random circuits of each size;
    with ``exact``, the chosen circuit's edges are also patched one by one (``exact_effect``).

    The work is units (``probes.engine.units``): the edge scores (one unit for EAP and EAP-IG, which cost a
    few passes; chunks of edges for exact patching), then chunks of the curve's circuits, then chunks of
    the chosen circuit's edges patched exactly; they run here on ``model`` (a ``Model``, or ``load_model``
    arguments) or on Ray (``cluster``, one model copy per worker; ``shards`` keeps finished units)."""
    from ...probes.engine.units import Unit, run_units

    started = time.perf_counter()
    if method not in METHODS:
        raise HeadscopeError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if build not in BUILDERS:
        raise HeadscopeError(f"unknown circuit builder {build!r}; use one of {', '.join(BUILDERS)}")
    check_metric(metric, method)
    prompts = as_prompt_set(prompts)
    fractions = np.asarray(sorted(set(float(f) for f in fractions)))
    if not len(fractions) or fractions[0] <= 0 or fractions[-1] > 1:
        raise HeadscopeError(f"circuit fractions must lie in (0, 1], not {list(fractions)}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
        raise HeadscopeError(f"random circuits need at least 2 seeds for an interval, not {seeds!r}")
    where = dict(model=model if isinstance(model, Model) else None, load=None if isinstance(model, Model) else model,
                 cluster=cluster, shards=shards, progress=progress)
    common = {"prompts": prompts, "metric": metric, "corruption": corruption, "batch_size": batch_size}
    first = run_units([Unit("graph", _graph, {"edges": edges})], desc="edge graph", **where)[0]
    info = json.loads(first["info"]["json"].iloc[0])
    graph = EdgeGraph(info["n_layers"], info["n_heads"], info["n_kv_heads"])
    if method == "exact":
        every = graph.edges()
        parts = run_units([Unit(f"edges-{i}", _exact, {"edges": every[i:i + EDGES_PER_UNIT], "interval": interval,
                                                        "level": level, **common})
                           for i in range(0, len(every), EDGES_PER_UNIT)], desc="exact edge patching", **where)
        frame = pd.concat([p["rows"] for p in parts], ignore_index=True)
        frame = frame.rename(columns={"exact_effect": "effect", "exact_low": "ci_low", "exact_high": "ci_high"})
        scores = EdgeScores(frame, {"method": method, "metric": metric, "corruption": corruption})
        exact = False
    else:
        scored = run_units([Unit("scores", _scores, {"method": method, "steps": steps, "interval": interval,
                                                      "level": level, **common})], desc="edge scores", **where)[0]
        scores = EdgeScores(scored["rows"], json.loads(scored["meta"]["json"].iloc[0]))
    effect = scores.frame["effect"].to_numpy()
    build_fn = BUILDERS[build]
    sizes = np.maximum(1, np.round(fractions * graph.n_edges).astype(int))
    rng = np.random.default_rng(seed)
    masks = [np.ones(graph.n_edges, bool), np.zeros(graph.n_edges, bool), prune(graph, build_fn(graph, effect, edges))]
    masks += [prune(graph, build_fn(graph, effect, n)) for n in sizes]
    masks += [prune(graph, build_fn(graph, rng.standard_normal(graph.n_edges), n)) for n in sizes for _ in range(seeds)]
    parts = run_units([Unit(f"circuits-{i}", _circuits, {"masks": np.stack(masks[i:i + CIRCUITS_PER_UNIT]), **common})
                       for i in range(0, len(masks), CIRCUITS_PER_UNIT)], desc="circuits", **where)
    values = np.concatenate([p["rows"].to_numpy() for p in parts]).mean(axis=1)
    clean, corrupted = values[0], values[1]
    if abs(clean - corrupted) < 1e-9:
        raise HeadscopeError(f"the clean and corrupted prompts give the same {metric} ({clean:.4g}): faithfulness is "
                             "undefined; use corrupted prompts that change the answer")
    faith = (values[2:] - corrupted) / (clean - corrupted)
    chosen, found = faith[0], faith[1:1 + len(sizes)]
    random = faith[1 + len(sizes):].reshape(len(sizes), seeds)
    r_mean, r_low, r_high = mean_interval(random, axis=1, method="t", level=level)
    kept = [int(m.sum()) for m in masks[3:3 + len(sizes)]]
    curve = pd.DataFrame({"n_edges": sizes, "fraction": fractions, "kept_edges": kept, "faithfulness": found,
                          "random_mean": r_mean, "random_low": r_low, "random_high": r_high})
    cpr, cmd = curve_areas(fractions, found)
    frame = scores.frame.assign(in_circuit=masks[2])
    if exact:
        inside = frame[frame["in_circuit"]][["upstream", "downstream"]].reset_index(drop=True)
        parts = run_units([Unit(f"exact-{i}", _exact, {"edges": inside[i:i + EDGES_PER_UNIT], "interval": interval,
                                                        "level": level, **common})
                           for i in range(0, len(inside), EDGES_PER_UNIT)], desc="exact edge patching", **where)
        checked = (pd.concat([p["rows"] for p in parts], ignore_index=True) if parts else
                   inside.assign(exact_effect=np.nan, exact_low=np.nan, exact_high=np.nan))  # an empty circuit
        frame = frame.merge(checked, on=["upstream", "downstream"], how="left")
    meta = {**{k: v for k, v in scores.meta.items() if k not in ("kind", "versions", "created", "seconds")},
            "model": info["model"], "method": method, "metric": metric, "graph": graph.describe(),
            "n_layers": graph.n_layers, "n_heads": graph.n_heads, "n_kv_heads": graph.n_kv_heads,
            "n_edges": graph.n_edges, "build": build, "circuit_edges": edges, "kept_edges": int(masks[2].sum()),
            "circuit_faithfulness": float(chosen), "clean_metric": float(clean), "corrupted_metric": float(corrupted),
            "cpr": cpr, "cmd": cmd, "seeds": seeds, "seed": seed, "prompts": prompts.name, "n_prompts": len(prompts),
            "interval": interval_meta(interval, level, len(prompts)),
            "seconds": round(time.perf_counter() - started, 2)}
    return Circuit(frame, meta, {"faithfulness": curve})


EDGES_PER_UNIT = 256  # edges patched exactly in one unit of work
CIRCUITS_PER_UNIT = 8  # circuits of the faithfulness curve in one unit


# -- the units (``probes.engine.units``) ---------------------------------------------------------------------

def _graph(model: Model, edges: int) -> dict[str, pd.DataFrame]:
    """The model's edge graph (its sizes), with the circuit size checked against it."""
    graph = EdgeGraph.of(model)
    check_size(graph, edges)
    return {"info": pd.DataFrame({"json": [json.dumps({"model": model.spec, "n_layers": graph.n_layers,
                                                       "n_heads": graph.n_heads, "n_kv_heads": graph.n_kv_heads})]})}


def _scores(model: Model, prompts, method, metric, corruption, steps, interval, level, batch_size) -> dict:
    scores = edge_attribution(model, prompts, method=method, metric=metric, steps=steps, interval=interval,
                              level=level, corruption=corruption, batch_size=batch_size, progress=False)
    meta = {k: v for k, v in scores.meta.items() if k not in ("versions",)}
    return {"rows": scores.frame, "meta": pd.DataFrame({"json": [json.dumps(meta, default=str)]})}


def _exact(model: Model, prompts, edges, metric, corruption, interval, level, batch_size) -> pd.DataFrame:
    return exact_edge_effects(model, prompts, edges, metric=metric, interval=interval, level=level,
                              corruption=corruption, batch_size=batch_size, progress=False)


def _circuits(model: Model, prompts, masks, metric, corruption, batch_size) -> pd.DataFrame:
    values = circuit_metrics(model, prompts, masks, metric=metric, corruption=corruption, batch_size=batch_size,
                             progress=False)
    return pd.DataFrame(values, columns=[f"prompt_{i}" for i in range(values.shape[1])])
