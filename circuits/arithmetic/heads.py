"""Arithmetic heads per operation, with their neurons (Yu & Ananiadou, EMNLP 2024; Zhang et al. 2024).

On the prompts of each operation that the model solves (``arithmetic_prompts``):

- **Effect** of each head: the head-ablation sweep (``circuits.ablation``) with the log-probability
  of the answer's first token, in ``zero`` and ``mean`` mode (mean over the operation's prompts, with
  its interval over them: ``stats``, Student-t by default), the head's ``z`` replaced at every
  position. The reference ablates one head of one prompt ("3+5=") per deep copy of the model, zeroing
  its ``o_proj`` columns, which is the zero mode here.
- **Attention** of each head from the last position to the question's operand tokens and to its
  operator token (summed weights, mean over prompts): Zhang et al.'s criterion.
- **Specialisation**: a head is specialised to an operation when its zero-ablation effect there is at
  least ``0.1`` nats and at least three times its largest effect on any other operation.
- **Control**: the top-k heads of an operation (by zero-ablation effect) masked together vs k random
  other heads (several seeds): accuracy (greedy first token) and mean log-probability; the random
  curve's error bars are the interval over the seeds (undefined with one).
- **Neurons**: layer and neuron scores of the answer at the last position (``circuits.neurons``), and
  comparative neuron analysis against the operation's top head(s) zero-ablated.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import torch

from ...probes.models import hooks
from ...probes import HeadscopeError, Model, Record, Result, run
from ...probes.engine.batching import row_chunks

from ..heads.ablation import Head, prepare
from ..heads.single_heads import head_ablation
from .prompts import TEMPLATES, ArithmeticPrompt, accuracy_table, arithmetic_prompts, check_ops, score_prompts
from ..heads.importance import ranking, top_vs_random
from ..stats import check_interval, interval_meta, mean_interval
from .neurons import neuron_attribution

SPECIALIST_MIN, SPECIALIST_RATIO = 0.1, 3.0


MODES = ("zero", "mean")  # the ablation modes this analysis runs

class Unsolved(HeadscopeError):
    """The model solves none of the prompts; ``accuracy`` holds the table that says so."""

    def __init__(self, message: str, accuracy: pd.DataFrame):
        super().__init__(message)
        self.accuracy = accuracy


def operand_attention(model: Model, prompts: list[ArithmeticPrompt], *, batch_size: int | None = None) -> np.ndarray:
    """``[P, L, H, 2]``: each head's attention from the last position to the question's operand
    tokens and to its operator token."""
    toks = [model.tokenize(p.prompt) for p in prompts]
    out = np.zeros((len(toks), model.n_layers, model.n_heads, 2))
    names = [hooks.pattern(l) for l in range(model.n_layers)]
    for sl in row_chunks(model, len(toks), max(len(t) for t in toks), batch_size):
        batch = model.batch(toks[sl])
        rows, last = torch.arange(len(batch)), batch.last

        def keep(name, act):  # [B, H, dst, src] -> the last row of each prompt
            return act[rows.to(act.device), :, last.to(act.device)].float()

        with torch.no_grad():
            cache = run(model, batch, record=Record(names, keep=keep), logits_at=torch.zeros(len(batch), dtype=torch.long)).cache
        rows_ = torch.stack([cache[n] for n in names], 1).cpu()  # [B, L, H, src]
        for i, (t, p) in enumerate(zip(toks[sl], prompts[sl])):
            operands = t.positions_of(*p.spans["a"]) + t.positions_of(*p.spans["b"])
            operator = t.positions_of(*p.spans["op"])
            out[sl.start + i, ..., 0] = rows_[i][..., operands].sum(-1).numpy()
            out[sl.start + i, ..., 1] = rows_[i][..., operator].sum(-1).numpy()
    return out


class Arithmetic(Result):
    """Head effects per operation and mode (``frame``: ``heads.parquet``), with the prompt ``accuracy``
    table, the scored ``prompts``, ``neurons``, ``layers`` (attention / MLP scores) and ``control``."""

    kind = "arithmetic-heads"
    table = "heads"
    TABLES = ("accuracy", "prompts", "neurons", "layers", "control")
    title = "headscope arithmetic heads"

    def effects(self, mode: str = "zero") -> pd.DataFrame:
        """Head x operation table of effects in ``mode``."""
        part = self.frame[self.frame["mode"] == mode]
        return part.pivot_table(index=["layer", "head"], columns="op", values="effect", sort=False)

    def specialisation(self, top: int = 5) -> pd.DataFrame:
        """The heads in the top ``top`` of any operation: effect per operation (zero ablation) and the
        operation each is specialised to, if any (module docstring)."""
        table = self.effects("zero")
        chosen = sorted({hd for op in table.columns for hd in table[op].nlargest(top).index})
        table = table.loc[chosen].copy()
        ops = list(table.columns)

        def special(row) -> str:
            for op in ops:
                others = row.drop(op).clip(lower=0)
                if row[op] >= SPECIALIST_MIN and (others.empty or row[op] >= SPECIALIST_RATIO * others.max()):
                    return op
            return ""

        table["specialised_to"] = table.apply(special, axis=1)
        return table.reset_index()

    def plot(self, op: str | None = None, mode: str = "zero"):
        import plotly.graph_objects as go

        op = op or self.frame["op"].iloc[0]
        part = self.frame[(self.frame["op"] == op) & (self.frame["mode"] == mode)]
        grid = part.pivot(index="layer", columns="head", values="effect")
        fig = go.Figure(go.Heatmap(z=grid.values, x=[f"H{h}" for h in grid.columns], y=list(grid.index),
                                   colorscale="RdBu", zmid=0, hovertemplate="L%{y} %{x}: %{z:.3f}<extra></extra>"))
        fig.update_layout(title=f"{op}: {mode}-ablation effect on log p(answer)",
                          yaxis=dict(title="layer", autorange="reversed"), height=max(380, 16 * len(grid) + 120))
        return fig

    def control_plot(self):
        """Accuracy against k, top-k vs random heads; error bars: the interval over the seeds' head sets."""
        import plotly.express as px

        info = self.meta.get("interval") or {}
        method = "bootstrap" if str(info.get("method", "")).startswith("bootstrap") else "t"
        level = info.get("level", 0.95)
        rows = []
        for (op, control, k), part in self.control.groupby(["op", "control", "k"], sort=False):
            mean, low, high = mean_interval(part["accuracy"].to_numpy(), method=method, level=level,
                                            seed=self.meta.get("seed", 0))
            rows.append({"op": op, "control": control, "k": k, "accuracy": float(mean), "plus": float(high - mean),
                         "minus": float(mean - low), "n": len(part)})
        c = pd.DataFrame(rows)
        name = "Student-t" if method == "t" else "BCa bootstrap"
        return px.line(c, x="k", y="accuracy", color="op", line_dash="control", markers=True, error_y="plus",
                       error_y_minus="minus", hover_data=["n"],
                       title="accuracy with the top-k heads of each operation masked vs k random heads"
                             f"<br><sub>error bars: {level:.0%} {name} intervals over the random head sets</sub>")

    def report(self) -> list:
        import plotly.express as px

        parts = [f"<h1>Arithmetic heads: {self.meta['model']}</h1>",
                 f"<p>{self.meta['digits']}-digit operands, template {self.meta['template']}; "
                 f"{self.meta['seconds']} s.</p><h2>Accuracy before filtering</h2>",
                 self.accuracy.to_html(index=False, float_format=lambda v: f"{v:.3f}")]
        for op in self.frame["op"].unique():
            parts.append(self.plot(op))
        parts += ["<h2>Specialisation (zero ablation, nats)</h2>",
                  self.specialisation().to_html(index=False, float_format=lambda v: f"{v:.3f}")]
        if self.control is not None and not self.control.empty:
            parts.append(self.control_plot())
        if self.layers is not None:
            parts.append(px.bar(self.layers, x="layer", y="score", color="kind", facet_row="op", barmode="group",
                                height=260 * self.layers["op"].nunique(),
                                title="log-probability increase of the answer from each layer's output"))
        if self.neurons is not None:
            for op, part in self.neurons.groupby("op", sort=False):
                parts.append(f"<h2>Top neurons: {op}</h2>")
                for by in ("score", "cna_score"):
                    top = part.nlargest(10, by)[["layer", "neuron", "score", "cna_score", "activation", "top_tokens"]]
                    top = top.assign(top_tokens=top["top_tokens"].map(lambda t: " ".join(repr(x) for x in list(t)[:8])))
                    parts += [f"<h3>by {by}</h3>", top.to_html(index=False, float_format=lambda v: f"{v:.4f}")]
        return parts


def arithmetic_heads(
    model,
    ops=("add", "sub", "mul", "div"),
    *,
    digits: int = 1,
    template: str = "fewshot",
    n: int = 40,
    seed: int = 0,
    modes: tuple[str, ...] = MODES,
    ks: tuple[int, ...] = (1, 2, 4, 8),
    seeds: int = 3,
    neuron_prompts: int = 8,
    neuron_layers: list[int] | None = None,
    cna_heads: list[Head] | int = 1,
    interval: str = "t",
    level: float = 0.95,
    batch_size: int | None = None,
    cluster=None,
    shards=None,
    progress: bool = True,
) -> Arithmetic:
    """The whole analysis (module docstring). ``cna_heads``: the heads ablated for comparative neuron
    analysis, or a number k (each operation's top k heads); ``neuron_prompts``: solved prompts per
    operation the neuron scores average over (0: no neuron analysis); ``neuron_layers``: the layers
    whose neurons are scored (default all). Each head's mean effect gets a ``level`` interval over the
    operation's solved prompts (``interval``: t, or a BCa bootstrap seeded with ``seed``).

    The work is units (``probes.engine.units``): the prompts' scoring, then each operation's heads, then the
    neurons; they run here on ``model`` (a ``Model``, or ``load_model`` arguments) or on Ray (``cluster``,
    one model copy per worker; ``shards`` keeps finished units)."""
    from ...probes.engine.units import Unit, run_units

    started = time.perf_counter()
    check_interval(interval, level)
    ops = check_ops(ops)
    for mode in modes:
        if mode not in MODES:
            raise HeadscopeError(f"unknown ablation mode {mode!r} for arithmetic heads; use zero and/or mean")
    if isinstance(neuron_prompts, bool) or not isinstance(neuron_prompts, int) or neuron_prompts < 0:
        raise HeadscopeError(f"neuron_prompts {neuron_prompts!r} must be 0 or a positive number of prompts")
    for k in ks:  # k over half the heads is skipped below (k random heads must fit outside the top k)
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise HeadscopeError(f"k={k!r} (heads masked in the control) must be a non-negative integer")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise HeadscopeError(f"control seeds {seeds!r} must be at least 1")
    where = dict(model=model if isinstance(model, Model) else None, load=None if isinstance(model, Model) else model,
                 cluster=cluster, shards=shards, progress=progress)
    prompting = {"ops": ops, "digits": digits, "template": template, "n": n, "seed": seed}
    checks = {"neuron_layers": neuron_layers, "cna_heads": cna_heads}
    first = run_units([Unit("prompts", _prompts, {**prompting, **checks, "batch_size": batch_size})],
                      desc="arithmetic prompts", **where)[0]
    info = json.loads(first["info"]["json"].iloc[0])
    scored, accuracy = first["rows"], first["accuracy"]
    solved = [int(i) for i in first["solved"]["prompt"]]
    if not solved:
        raise Unsolved(f"{info['model']} answers none of the {info['n_prompts']} {info['template']} prompts "
                       f"correctly ({', '.join(ops)}, {digits}-digit); nothing to analyse", accuracy)
    op_of = {int(i): op for i, op in json.loads(first["solved_ops"]["json"].iloc[0]).items()}  # of each solved prompt
    notes = [f"{op}: no prompt solved, skipped" for op in ops if op not in op_of.values()]
    analysed = [op for op in ops if op in op_of.values()]
    options = {"modes": list(modes), "ks": list(ks), "seeds": seeds, "interval": interval, "level": level,
               "seed": seed, "batch_size": batch_size, "cna_heads": cna_heads}
    units = [Unit(f"op-{op}", _operation, {**prompting, "op": op, "solved": [i for i in solved if op_of[i] == op],
                                           **options}) for op in analysed]
    per_op = dict(zip(analysed, run_units(units, desc="arithmetic heads", **where)))
    heads = [per_op[op]["rows"] for op in analysed]
    controls = [per_op[op]["control"] for op in analysed if "control" in per_op[op]]
    neurons = layers = None
    if neuron_prompts:  # one unit for every operation: the unembedded weights are formed once per layer
        chosen = {op: [i for i in solved if op_of[i] == op][:neuron_prompts] for op in analysed}
        cna = {op: [tuple(h) for h in json.loads(per_op[op]["cna"]["json"].iloc[0])] for op in analysed}
        result = run_units([Unit("neurons", _neurons, {**prompting, "chosen": chosen, "cna": cna,
                                                         "layers": neuron_layers, "batch_size": batch_size})],
                           desc="arithmetic neurons", **where)[0]
        neurons, layers = result["rows"], result["layers"]
    frame = pd.concat(heads, ignore_index=True)[["layer", "head", "op", "mode", "effect", "ci_low", "ci_high",
                                                 "operand_attention", "operator_attention", "clean", "ablated",
                                                 "n_prompts"]]
    n_solved = {op: sum(op_of[i] == op for i in solved) for op in ops}
    counted = {op: k for op, k in n_solved.items() if k}  # solved is not empty
    meta = {"model": info["model"], "ops": ops, "digits": digits, "template": info["template"], "n_per_op": n,
            "seed": seed, "modes": list(modes), "metric": "log p(answer's first token), clean - ablated",
            "n_solved": n_solved, "notes": notes,
            # n: the fewest prompts an operation's intervals are over (each row's own n is n_prompts)
            "interval": {**interval_meta(interval, level, min(counted.values())), "n_by_op": counted},
            "specialist_rule": f"effect >= {SPECIALIST_MIN} and >= {SPECIALIST_RATIO}x any other operation's",
            "neuron_prompts": neuron_prompts, "neuron_layers": neuron_layers,
            "seconds": round(time.perf_counter() - started, 2)}
    control = pd.concat(controls, ignore_index=True) if controls else None
    return Arithmetic(frame, meta, {"accuracy": accuracy, "prompts": scored, "neurons": neurons, "layers": layers,
                                    "control": control})


# -- the units (``probes.engine.units``) ---------------------------------------------------------------------

def _prompts(model: Model, ops, digits, template, n, seed, neuron_layers, cna_heads, batch_size) -> dict[str, pd.DataFrame]:
    """Every template's prompts scored; which of the chosen template's the model solves."""
    for layer in neuron_layers or []:
        model.check_layer(layer)
    if isinstance(cna_heads, int) and not 1 <= cna_heads <= model.n_layers * model.n_heads:
        raise HeadscopeError(f"cna_heads {cna_heads} must be between 1 and the number of heads")
    prompts = arithmetic_prompts(model, ops, digits=digits, template=template, n=n, seed=seed)
    others = [t for t in TEMPLATES if t != prompts[0].template]
    every = prompts + [p for t in others for p in arithmetic_prompts(model, ops, digits=digits, template=t, n=n, seed=seed)]
    scored = score_prompts(model, every, batch_size=batch_size or 32)
    solved = [i for i, ok in enumerate(scored["correct"][:len(prompts)]) if ok]
    return {"rows": scored, "accuracy": accuracy_table(scored), "solved": pd.DataFrame({"prompt": solved}, dtype="int64"),
            "solved_ops": pd.DataFrame({"json": [json.dumps({str(i): prompts[i].op for i in solved})]}),
            "info": pd.DataFrame({"json": [json.dumps({"model": model.spec, "template": prompts[0].template,
                                                       "n_prompts": len(prompts)})]})}


def _operation(model: Model, ops, digits, template, n, seed, op, solved, modes, ks, seeds, interval, level,
               batch_size, cna_heads) -> dict[str, pd.DataFrame]:
    """One operation's heads: operand attention, ablation effects per mode, the top-k vs random control, and
    the heads comparative neuron analysis ablates."""
    prompts = arithmetic_prompts(model, ops, digits=digits, template=template, n=n, seed=seed)
    mine = [prompts[i] for i in solved]
    records = [p.record() for p in mine]
    attention = operand_attention(model, mine, batch_size=batch_size).mean(0)  # [L, H, 2]
    heads, zero_effect = [], None
    for mode in modes:
        ablation = head_ablation(model, records, mode=mode, metric="logprob", interval=interval, level=level,
                                 batch_size=batch_size, progress=False)
        ablation.meta["seed"] = seed
        summary = ablation.summary()
        summary["operand_attention"] = attention[summary["layer"], summary["head"], 0]
        summary["operator_attention"] = attention[summary["layer"], summary["head"], 1]
        heads.append(summary.assign(op=op, mode=mode, n_prompts=len(mine)))
        if mode == "zero" or zero_effect is None:
            zero_effect = {(int(l), int(h)): e for l, h, e in summary[["layer", "head", "effect"]].itertuples(index=False)}
    ranked = ranking(zero_effect)
    out = {"rows": pd.concat(heads, ignore_index=True)}
    usable = [k for k in ks if k <= model.n_layers * model.n_heads // 2]
    if usable:
        setup = prepare(model, records, mode="zero", metric="logprob", batch_size=batch_size)
        curve = top_vs_random(setup, ranked, usable, seeds=tuple(range(seeds)), batch_size=batch_size)
        out["control"] = curve.frame.assign(op=op, clean_accuracy=curve.meta["clean_accuracy"])
    cna = ranked[:cna_heads] if isinstance(cna_heads, int) else list(cna_heads)
    out["cna"] = pd.DataFrame({"json": [json.dumps([list(h) for h in cna])]})
    return out


def _neurons(model: Model, ops, digits, template, n, seed, chosen, cna, layers, batch_size) -> dict[str, pd.DataFrame]:
    """Every operation's neuron and layer scores, with comparative neuron analysis against its heads."""
    prompts = arithmetic_prompts(model, ops, digits=digits, template=template, n=n, seed=seed)
    picked = [(op, prompts[i]) for op, indices in chosen.items() for i in indices]
    result = neuron_attribution(model, [p.prompt for _, p in picked], [p.answer_ids[0] for _, p in picked],
                                groups=[op for op, _ in picked], ablate=cna, layers=layers, batch_size=batch_size)
    heads_text = {op: ";".join(f"{l}-{h}" for l, h in hs) for op, hs in cna.items()}
    neurons = result.frame.rename(columns={"group": "op"})
    neurons["cna_heads"] = neurons["op"].map(heads_text)
    return {"rows": neurons, "layers": result.layers.rename(columns={"group": "op"})}
