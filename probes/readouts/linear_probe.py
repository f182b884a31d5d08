"""Linear probes: decode a label from each layer's residual stream, with a control task.

For every layer (0 = the embeddings, ``l`` = after block ``l - 1``, as in the lenses) the residual
stream at one position of each prompt (``"last"``, or a token index) is captured by the engine, the
prompts are split once into a training and a held-out part (seeded), and a linear model is fitted
on the standardised training activations: multinomial logistic regression (L2-penalised, L-BFGS)
for a categorical label, ridge regression (closed form) for a numeric one. The score is held-out
accuracy (R^2 for regression).

Control task (Hewitt & Liang, "Designing and Interpreting Probes with Control Tasks"): the same
probe on labels that carry no information beyond what a probe could memorise. ``control="token"``
(their construction) gives each distinct token at the probed position a random label drawn from
the label distribution, fixed per token; ``control="shuffle"`` permutes the labels over prompts
(and stands in for ``token`` when every prompt has the same token there, where per-token labels
would be one constant).
Selectivity is accuracy minus control accuracy: high accuracy with high selectivity means the
label is decodable and not just memorisable from the token's identity.

The ``weights`` table keeps each layer's fitted probe in the residual stream's own coordinates (one
row per class, or one ``value`` row for regression; the standardisation divided out), so a probe's
direction can be added back to the stream (``circuits.steering.from_probe``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from ..models import hooks
from ..engine.capture import capture
from ..errors import HeadscopeError
from ..models.model import Model
from ..text.prompts import read_records
from ..results.result import Result

TASKS = ("auto", "classify", "regress")
CONTROLS = ("token", "shuffle")


class LinearProbe(Result):
    """One row per layer: held-out accuracy (or R^2), control accuracy, selectivity, chance; ``weights``:
    each layer's probe per class (``weight``: ``d_model`` numbers)."""

    kind = "linear-probe"
    table = "probe"
    TABLES = ("weights",)

    def plot(self):
        import plotly.graph_objects as go

        fig = go.Figure()
        for column, name, dash in (("accuracy", "probe", None), ("control_accuracy", "control task", "dot"),
                                   ("selectivity", "selectivity", "dash"), ("chance", "chance", "dashdot")):
            fig.add_trace(go.Scatter(x=self.frame["layer"], y=self.frame[column], name=name, line=dict(dash=dash)))
        metric = "R^2" if self.meta["task"] == "regress" else "accuracy"
        fig.update_layout(title=f"linear probe for {self.meta['label']!r} at position {self.meta['position']!r}",
                          xaxis_title="layer (0 = embeddings)", yaxis_title=f"held-out {metric}")
        return fig


def linear_probe(
    model: Model,
    prompts: str | Path | Sequence[dict],
    label: str,
    *,
    position: str | int = "last",
    task: str = "auto",
    control: str = "token",
    test_fraction: float = 0.25,
    l2: float = 1e-3,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = True,
) -> LinearProbe:
    """Probe every layer for ``label`` (a field of each prompt record); module docstring."""
    started = time.perf_counter()
    records = read_records(prompts) if isinstance(prompts, (str, Path)) else list(prompts)
    if task not in TASKS:
        raise HeadscopeError(f"unknown task {task!r}; use {', '.join(TASKS)}")
    if control not in CONTROLS:
        raise HeadscopeError(f"unknown control {control!r}; use {', '.join(CONTROLS)}")
    if not 0 < test_fraction < 1:
        raise HeadscopeError(f"test_fraction {test_fraction!r} must be between 0 and 1")
    values = []
    for i, record in enumerate(records):
        if not isinstance(record, dict) or "prompt" not in record:
            raise HeadscopeError(f"prompt record {i} has no 'prompt' field")
        if record.get(label) is None:
            raise HeadscopeError(f"prompt record {i} has no label field {label!r}")
        values.append(record[label])
    task = _task(values) if task == "auto" else task
    if task == "regress":
        try:
            y_all = torch.tensor([float(v) for v in values])
        except (TypeError, ValueError):
            raise HeadscopeError(f"label {label!r} has non-numeric values; use task='classify'") from None
        classes = None
    else:
        classes = sorted({str(v) for v in values})
        if len(classes) < 2:
            raise HeadscopeError(f"label {label!r} has a single value ({classes[0]!r}); nothing to probe")
        y_all = torch.tensor([classes.index(str(v)) for v in values])
    n = len(records)
    n_test = int(round(n * test_fraction))
    if n_test < 1 or n - n_test < 2:
        raise HeadscopeError(f"{n} prompts are too few to hold out {test_fraction:.0%} and train on the rest")

    acts = capture(model, [r["prompt"] for r in records], _hooks(model), positions=_positions(model, records, position),
                   batch_size=batch_size, device="model", progress=progress)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    test, train = order[:n_test], order[n_test:]
    notes = []
    tokens = list(acts.frame["token"])
    if control == "token" and len(set(tokens)) < 2:
        control = "shuffle"  # one token type: per-type labels would be one constant label, trivially decoded
        notes.append(f"every prompt has the token {tokens[0]!r} at the probed position; the control task "
                     "shuffles the labels instead of assigning them per token")
    y_control = _control_labels(control, y_all, tokens, train, generator)
    rows, weights = [], []
    for layer, hook in enumerate(acts.meta["hooks"]):
        x = acts[hook].float()
        acc, w = _fit_score(x, y_all, train, test, classes, l2)
        ctl, _ = _fit_score(x, y_control, train, test, classes, l2)
        rows.append({"layer": layer, "accuracy": acc, "control_accuracy": ctl, "selectivity": acc - ctl})
        weights += [{"layer": layer, "class": name, "weight": column.tolist()}
                    for name, column in zip(classes or ["value"], w.T.cpu())]
    frame = pd.DataFrame(rows)
    frame["chance"] = 0.0 if classes is None else float(
        (y_all[test] == torch.bincount(y_all[train], minlength=len(classes)).argmax()).float().mean())
    frame["metric"] = "r2" if classes is None else "accuracy"
    meta = {"model": model.spec, "label": label, "task": task, "position": position, "control": control,
            "classes": classes, "n_prompts": n, "n_test": n_test, "test_fraction": test_fraction, "l2": l2,
            "seed": seed, "layers": "0 = embeddings, l = after block l-1",
            "chance": "held-out rate of the training set's majority class (0 for R^2)", "notes": notes,
            "seconds": round(time.perf_counter() - started, 3)}
    return LinearProbe(frame, meta, {"weights": pd.DataFrame(weights)})


def _task(values: list) -> str:
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    return "regress" if numeric and any(isinstance(v, float) and not float(v).is_integer() for v in values) else "classify"


def _hooks(model: Model) -> list[str]:
    return [hooks.resid_pre(0)] + [hooks.resid_post(l) for l in range(model.n_layers)]


def _positions(model: Model, records: Sequence[dict], position) -> str | tuple[int, int]:
    if position == "last":
        return "last"
    if isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise HeadscopeError(f"position {position!r} must be 'last' or a token index from 0")
    shortest = min(len(model.tokenize(r["prompt"])) for r in records)
    if position >= shortest:
        raise HeadscopeError(f"position {position} is past the end of the shortest prompt ({shortest} tokens)")
    return (position, position + 1)


def _control_labels(control: str, y: torch.Tensor, tokens: list[str], train: torch.Tensor,
                    generator: torch.Generator) -> torch.Tensor:
    """Control labels: per token type, a random draw from the training labels; or a permutation."""
    if control == "shuffle":
        return y[torch.randperm(len(y), generator=generator)]
    types = sorted(set(tokens))
    draws = y[train][torch.randint(len(train), (len(types),), generator=generator)]
    label_of = dict(zip(types, draws))
    return torch.stack([label_of[t] for t in tokens])


def _fit_score(x: torch.Tensor, y: torch.Tensor, train: torch.Tensor, test: torch.Tensor,
               classes: list[str] | None, l2: float) -> tuple[float, torch.Tensor]:
    """Fit on ``train`` rows of standardised ``x``, score on ``test`` rows; and the fitted weights in ``x``'s
    own coordinates, ``[d, classes]`` (``[d, 1]`` for regression)."""
    dev = x.device
    train, test, y = train.to(dev), test.to(dev), y.to(dev)
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-6)
    xs = torch.cat([(x - mean) / std, torch.ones(len(x), 1, device=dev)], dim=1)
    a, b = xs[train], xs[test]
    if classes is None:  # ridge regression, closed form (the intercept is not penalised)
        penalty = l2 * len(train) * torch.eye(a.shape[1], device=dev)
        penalty[-1, -1] = 0
        w = torch.linalg.solve(a.T @ a + penalty, a.T @ y[train].float())
        residual = ((b @ w - y[test].float()) ** 2).sum()
        total = ((y[test].float() - y[train].float().mean()) ** 2).sum().clamp_min(1e-12)
        return float(1 - residual / total), (w[:-1] / std)[:, None]
    w = torch.zeros(a.shape[1], len(classes), device=dev, requires_grad=True)
    optimizer = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")
    target = y[train]

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(a @ w, target) + l2 * w[:-1].pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    w = w.detach()
    return float(((b @ w).argmax(-1) == y[test]).float().mean()), w[:-1] / std[:, None]
