"""Retrieval heads (Wu et al., "Retrieval Head Mechanistically Explains Long-Context Factuality").

**Greedy mode, the reference's score** (nightdessert/Retrieval_Head, ``retrieval_head_detection.py``):
decode greedily up to ``max_new_tokens`` tokens; at every step, for every (layer, query head), take
the key position the current query attends to most (``argmax``; on ties the earliest position); if
it lies in the span of ``real_needle`` in the prompt and the token there is the token this step
generates, the head gains ``1 / len(span)``. Decoding stops after a token containing a newline (that
step is scored, as in the reference) or at the end-of-text token (the reference does not stop there;
nothing after it would be an answer). A test counts only if the answer's ROUGE-1 recall of
``real_needle`` (``rouge_score``, Porter stemming, as the reference) is above 0.5; a head's score is
the mean over counted tests, and a retrieval head is one above ``threshold`` (0.1, the paper's). The
mean carries an interval over the counted tests (``stats``: Student-t by default, or a seeded BCa
bootstrap; ``meta["interval"]``), undefined (NaN) with fewer than two.

**Teacher-forced mode** (a different, much cheaper estimate): one forward over the prompt plus
" " + ``real_needle``, reading only the rows of the queries that predict the answer's tokens; a head
gains ``1 / len(span)`` for each answer token it attends to a copy of in the span. The gold answer is
given, so no test is filtered. ``agreement`` compares the two modes.

Attention rows never form a T x T pattern: the prompt runs with SDPA and each step's row is computed
inside the attention call from that query and the cached keys (``probes.attention_control``), then
reduced to its argmax at once. Heads are query heads; with grouped-query attention heads of one
group share keys but have their own queries and rows.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import torch

from ...probes import HeadscopeError, Model, Result, run
from ...probes.engine.attention_control import AttentionControl
from ...probes.engine.generate import generate
from ...probes.progress import tracked

from .haystack import NeedleTest
from ..stats import check_interval, interval_meta, mean_interval, spearman

MODES = ("greedy", "teacher-forced")


def rouge1_recall(reference: str, answer: str) -> float:
    """ROUGE-1 recall of ``reference`` by ``answer`` (rouge_score, stemmed: the reference's scorer)."""
    from rouge_score import rouge_scorer

    return float(rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True).score(reference, answer)["rouge1"].recall)


def _argmax_rows(layer: int, weights: torch.Tensor) -> torch.Tensor:
    return weights.argmax(-1)  # [batch, head, rows]: the most attended key of each query row


def has_newline(text: str) -> bool:
    return "\n" in text


def copy_credit(top: torch.Tensor, ids: torch.Tensor, tokens: torch.Tensor, span: tuple[int, int]) -> torch.Tensor:
    """The reference's credit, ``[layers, heads]``: ``top`` ``[layers, heads, m]`` is the most attended key
    of each of ``m`` queries, ``tokens`` ``[m]`` what those queries produce; a head gains
    ``1 / len(span)`` for each query whose top key lies in ``span`` and holds that same token."""
    start, end = span
    hit = (top >= start) & (top < end) & (ids[top] == tokens)
    return hit.float().sum(-1) / (end - start)


def score_greedy(model: Model, test: NeedleTest, max_new_tokens: int = 50) -> tuple[torch.Tensor, list[int]]:
    """Per-head retrieval score ``[layers, heads]`` of one test, and the generated token ids."""
    control = AttentionControl(rows=1, reduce=_argmax_rows)
    context = list(test.tokens.ids)
    score = torch.zeros(model.n_layers, model.n_heads)

    def credit(rows, tokens, active):
        if bool(active[0]):
            top = torch.stack([control.kept[l][0] for l in range(model.n_layers)]).cpu()  # [L, H, 1]
            score.add_(copy_credit(top, torch.tensor(context), tokens[:1], test.span))
        context.append(int(tokens[0]))

    new = generate(model, [test.tokens], max_new_tokens, stop=has_newline, control=control, observe=credit)[0]
    return score, new


def score_teacher_forced(model: Model, test: NeedleTest) -> torch.Tensor:
    """Per-head retrieval score ``[layers, heads]`` of one test with the gold answer forced."""
    prompt_ids = list(test.tokens.ids)
    full = model.tokenize(test.prompt + " " + test.needle.real_needle).ids
    answer = full[len(prompt_ids):] if full[:len(prompt_ids)] == prompt_ids else \
        model.tokenizer(" " + test.needle.real_needle, add_special_tokens=False)["input_ids"]
    ids = prompt_ids + answer
    if len(ids) > model.n_ctx:
        raise HeadscopeError(f"prompt plus answer is {len(ids)} tokens, over this model's context of {model.n_ctx}")
    control = AttentionControl(rows=len(answer), reduce=_argmax_rows)
    run(model, model.batch_of_ids(torch.tensor([ids[:-1]])), logits_at=torch.tensor([len(ids) - 2]), control=control)
    top = torch.stack([control.kept[l][0] for l in range(model.n_layers)]).cpu()  # [L, H, answer]
    return copy_credit(top, torch.tensor(ids), torch.tensor(answer), test.span)


class RetrievalHeads(Result):
    """Per-test head scores: one row per (test, layer, head); ``tests`` describes each test."""

    kind = "retrieval-heads"
    table = "scores"
    TABLES = ("tests",)
    title = "headscope retrieval heads"

    def heads(self) -> pd.DataFrame:
        """Per head: mean score over the counted tests, its interval (``ci_low``, ``ci_high``; method and
        level from ``meta["interval"]``, Student-t 95% unless the run asked otherwise) and their number."""
        kept = self.frame[self.frame["test"].isin(self.tests.loc[self.tests["kept"], "test"])]
        summary = kept.groupby(["layer", "head"], as_index=False)["score"].mean()
        full = pd.MultiIndex.from_product([range(self.meta["n_layers"]), range(self.meta["n_heads"])],
                                          names=["layer", "head"]).to_frame(index=False)
        out = full.merge(summary, on=["layer", "head"], how="left")
        out["score"] = out["score"].fillna(0.0)
        info = self.meta.get("interval") or {}
        method = "bootstrap" if str(info.get("method", "")).startswith("bootstrap") else "t"
        n = kept["test"].nunique()
        # [head, test] in the order of ``full``: every test scores every head
        values = kept.sort_values(["layer", "head", "test"])["score"].to_numpy(float).reshape(len(full), n)
        low, high = np.full(len(full), np.nan), np.full(len(full), np.nan)
        for start in range(0, len(full) if n else 0, 256):  # the bootstrap resamples a chunk of heads at once
            _, low[start:start + 256], high[start:start + 256] = mean_interval(
                values[start:start + 256], axis=1, method=method, level=info.get("level", 0.95),
                seed=self.meta.get("seed", 0))
        out["ci_low"], out["ci_high"] = low, high
        out["n_tests"] = int(self.tests["kept"].sum())
        return out.sort_values("score", ascending=False, ignore_index=True)

    def reference_json(self) -> dict[str, list[float]]:
        """``{"layer-head": [score of each counted test]}``, the reference's file format."""
        kept = set(self.tests.loc[self.tests["kept"], "test"])
        part = self.frame[self.frame["test"].isin(kept)].sort_values("test")
        lists = {(l, h): g["score"].round(6).tolist() for (l, h), g in part.groupby(["layer", "head"])}
        return {f"{l}-{h}": lists.get((l, h), []) for l in range(self.meta["n_layers"])
                for h in range(self.meta["n_heads"])}

    def ranking(self) -> list[tuple[int, int]]:
        return [(int(l), int(h)) for l, h in self.heads()[["layer", "head"]].itertuples(index=False)]

    def plot(self):
        import plotly.graph_objects as go

        grid = self.heads().pivot(index="layer", columns="head", values="score")
        fig = go.Figure(go.Heatmap(z=grid.values, x=[f"H{h}" for h in grid.columns], y=list(grid.index),
                                   colorscale="Blues", zmin=0,
                                   hovertemplate="L%{y} %{x}: %{z:.3f}<extra></extra>"))
        fig.update_layout(title=f"retrieval score ({self.meta['mode']}, {int(self.tests['kept'].sum())} of "
                                f"{len(self.tests)} tests counted)", yaxis=dict(title="layer", autorange="reversed"),
                          height=max(380, 16 * len(grid) + 120))
        return fig

    def figures(self) -> list:
        """The report's figures: the head map, the score distribution, the accuracy grid."""
        import plotly.express as px

        heads = self.heads()
        threshold = self.meta["threshold"]
        hist = px.histogram(heads, x="score", nbins=40, log_y=True,
                            title=f"head scores: {(heads['score'] > threshold).mean():.1%} of heads above {threshold}")
        grid = self.tests.pivot_table(index="length", columns="depth", values="recall", aggfunc="mean")
        acc = px.imshow(grid, text_auto=".2f", zmin=0, zmax=1, color_continuous_scale="Greens", aspect="auto",
                        title="needle retrieval: mean ROUGE-1 recall by context length and depth")
        return [self.plot(), hist, acc]

    def derived(self) -> dict[str, pd.DataFrame]:
        return {"heads": self.heads()}

    def exports(self) -> dict[str, str]:
        return {"retrieval_heads.json": json.dumps(self.reference_json())}

    def report(self) -> list:
        heads = self.heads()
        top = heads.head(20).assign(head_name=lambda f: [f"L{l}H{h}" for l, h in zip(f["layer"], f["head"])])
        return [f"<h1>Retrieval heads: {self.meta['model']}</h1>",
                f"<p>{self.meta['mode']} scoring of {len(self.tests)} needle tests ({int(self.tests['kept'].sum())} "
                f"counted: ROUGE-1 recall above 0.5); {(heads['score'] > self.meta['threshold']).sum()} of {len(heads)} "
                f"heads score above {self.meta['threshold']}. {self.meta['seconds']} s.</p>",
                *self.figures(), "<h2>Top heads</h2>", top.to_html(index=False, float_format=lambda v: f"{v:.4f}"),
                "<h2>Tests</h2>", self.tests.to_html(index=False, float_format=lambda v: f"{v:.3f}")]


def retrieval_heads(
    model: Model,
    tests: list[NeedleTest],
    *,
    mode: str = "greedy",
    max_new_tokens: int = 50,
    threshold: float = 0.1,
    interval: str = "t",
    level: float = 0.95,
    seed: int = 0,
    progress: bool = True,
) -> RetrievalHeads:
    """Score every head on every test (module docstring); ``tests`` from ``haystack.needle_grid``. Each
    head's mean score gets a ``level`` interval over the counted tests (``interval``: t, or bootstrap
    seeded with ``seed``)."""
    started = time.perf_counter()
    check_scan(mode, interval, level)
    if not tests:
        raise HeadscopeError("no needle tests given")
    frame, records = score_tests(model, tests, range(len(tests)), mode, max_new_tokens, progress)
    return retrieval_result(frame, records, model.spec, model.info(), mode=mode, max_new_tokens=max_new_tokens,
                            threshold=threshold, interval=interval, level=level, seed=seed, started=started)


def check_scan(mode: str, interval: str, level: float) -> None:
    check_interval(interval, level)
    if mode not in MODES:
        raise HeadscopeError(f"unknown mode {mode!r}; use {' or '.join(MODES)}")


def score_tests(model: Model, tests: list[NeedleTest], numbers, mode: str, max_new_tokens: int,
                progress: bool = False) -> tuple[pd.DataFrame, list[dict]]:
    """Every head's score on each test (``test, layer, head, score`` rows, the tests numbered ``numbers``)
    and a record of each test: its needle, the answer and its recall, whether it counts."""
    L, H = model.n_layers, model.n_heads
    rows, records = [], []
    for i, test in zip(numbers, tracked(tests, desc=f"retrieval ({mode})", unit="test", disable=not progress)):
        if mode == "greedy":
            score, new = score_greedy(model, test, max_new_tokens)
            answer = model.tokenizer.decode(new, skip_special_tokens=True).strip()
            recall = rouge1_recall(test.needle.real_needle, answer)
            kept = recall > 0.5
        else:
            score, answer, recall, kept = score_teacher_forced(model, test), None, None, True
        rows.append(score.flatten().numpy())
        records.append({"test": i, "length": test.length, "n_tokens": test.n_tokens, "depth": test.depth,
                        "needle": test.needle.needle, "question": test.needle.question, "answer": answer,
                        "recall": recall, "kept": kept, "span_start": test.span[0], "span_end": test.span[1]})
    frame = pd.DataFrame({"test": np.repeat(np.asarray(list(numbers)), L * H),
                          "layer": np.tile(np.repeat(np.arange(L), H), len(tests)),
                          "head": np.tile(np.arange(H), L * len(tests)), "score": np.concatenate(rows)})
    return frame, records


def retrieval_result(frame: pd.DataFrame, records: list[dict], spec: str, info: dict, *, mode: str,
                     max_new_tokens: int, threshold: float, interval: str, level: float, seed: int,
                     started: float) -> RetrievalHeads:
    """The ``RetrievalHeads`` of scored tests (``score_tests``' rows and records, of one or several workers)."""
    kept = sum(bool(r["kept"]) for r in records)
    meta = {"model": spec, "mode": mode, "max_new_tokens": max_new_tokens, "threshold": threshold,
            "n_layers": info["n_layers"], "n_heads": info["n_heads"], "n_kv_heads": info["n_kv_heads"],
            "heads_are": "query heads", "n_tests": len(records), "n_kept": kept, "seed": seed,
            "interval": interval_meta(interval, level, kept), "seconds": round(time.perf_counter() - started, 2)}
    return RetrievalHeads(frame, meta, {"tests": pd.DataFrame(records)})


def retrieval_scan(model, cells: list, *, chat: bool | None = None, mode: str = "greedy", max_new_tokens: int = 50,
                   threshold: float = 0.1, interval: str = "t", level: float = 0.95, seed: int = 0,
                   chunk: int = 4, cluster=None, shards=None, progress: bool = True) -> RetrievalHeads:
    """``retrieval_heads`` over the tests ``haystack.grid_cells`` describes, cut into units of ``chunk`` tests
    (``probes.engine.units``): here on ``model`` (a ``Model``, or ``load_model`` arguments), or on Ray
    (``cluster``) with one model copy per worker; ``shards`` keeps finished units for a resumed run."""
    from ...probes.engine.units import Unit, run_units

    started = time.perf_counter()
    check_scan(mode, interval, level)
    if not cells:
        raise HeadscopeError("no needle tests given")
    units = [Unit(f"tests-{start}", _scan_unit, {"cells": list(enumerate(cells))[start:start + chunk], "chat": chat,
                                                 "mode": mode, "max_new_tokens": max_new_tokens})
             for start in range(0, len(cells), chunk)]
    done = run_units(units, model=model if isinstance(model, Model) else None,
                     load=None if isinstance(model, Model) else model, cluster=cluster, shards=shards,
                     progress=progress, desc=f"retrieval ({mode})")
    frame = pd.concat([d["rows"] for d in done], ignore_index=True)
    records = pd.concat([d["tests"] for d in done], ignore_index=True).to_dict("records")
    info = json.loads(done[0]["info"]["json"].iloc[0])
    return retrieval_result(frame, records, info["model"], info, mode=mode, max_new_tokens=max_new_tokens,
                            threshold=threshold, interval=interval, level=level, seed=seed, started=started)


def _scan_unit(model: Model, cells: list, chat: bool | None, mode: str, max_new_tokens: int) -> dict[str, pd.DataFrame]:
    """A unit of the scan: build its tests and score them."""
    from .haystack import build_test

    tests = [build_test(model, length, depth, needle, seed=k, chat=chat) for _, (length, depth, needle, k) in cells]
    frame, records = score_tests(model, tests, [i for i, _ in cells], mode, max_new_tokens)
    return {"rows": frame, "tests": pd.DataFrame(records), "info": pd.DataFrame({"json": [json.dumps(model.info())]})}


def agreement(a: RetrievalHeads, b: RetrievalHeads, k: int = 10) -> dict:
    """How two scorings rank the heads: Spearman over all heads and the overlap of their top ``k``."""
    ha, hb = a.heads().set_index(["layer", "head"]), b.heads().set_index(["layer", "head"])
    joined = ha[["score"]].add_suffix("_a").join(hb[["score"]].add_suffix("_b"))
    top_a, top_b = set(a.ranking()[:k]), set(b.ranking()[:k])
    return {"spearman": spearman(joined["score_a"], joined["score_b"]), f"top{k}_overlap": len(top_a & top_b) / k}
