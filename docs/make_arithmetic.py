"""README figures: arithmetic heads and neurons of the default model, four operations, 1-digit operands.

Runs the analysis with the CLI's defaults (few-shot template, 40 prompts per operation, zero and mean
ablation, control k = 1, 2, 4, 8, neuron analysis on 8 solved prompts per operation with CNA against
each operation's top head), writes ``docs/arithmetic/`` (the result without its HTML report) and
``docs/arithmetic.png`` (when kaleido can), and prints the figures the README quotes.
"""

from __future__ import annotations

from pathlib import Path

from headscope.circuits.arithmetic.heads import arithmetic_heads
from headscope.probes import load_model
from png import write_png

HERE = Path(__file__).parent


def main() -> None:
    model = load_model("default", device="cpu")
    result = arithmetic_heads(model)
    result.save(HERE / "arithmetic", overwrite=True)
    (HERE / "arithmetic" / "report.html").unlink()  # it carries plotly.js (4.6 MB); the PNG shows the heads
    neurons = result.neurons.groupby("op", group_keys=False)  # every neuron is 6 MB: keep each op's top 50
    top = neurons.apply(lambda g: g.nlargest(50, "score")), neurons.apply(lambda g: g.nlargest(50, "cna_score"))
    import pandas as pd

    pd.concat(top).drop_duplicates(subset=["op", "layer", "neuron"]).to_parquet(
        HERE / "arithmetic" / "neurons.parquet", index=False)
    print(result.accuracy.round(3).to_string(index=False))
    print(f"{result.meta['seconds']} s")
    zero = result.frame[result.frame["mode"] == "zero"]
    for op, part in zero.groupby("op", sort=False):
        top = part.nlargest(5, "effect")
        print(f"{op} ({int(part['n_prompts'].iloc[0])} solved): " + ", ".join(
            f"L{r.layer}H{r.head} {r.effect:.2f} (operands {r.operand_attention:.2f}, operator "
            f"{r.operator_attention:.2f})" for r in top.itertuples()))
    print(result.specialisation().round(2).to_string(index=False))
    control = result.control.groupby(["op", "control", "k"])["accuracy"].mean().unstack("k")
    print(control.round(2).to_string())
    layers = result.layers.pivot_table(index="layer", columns=["op", "kind"], values="score")
    print(layers.round(2).to_string())
    for op, part in result.neurons.groupby("op", sort=False):
        for by in ("score", "cna_score"):
            top = part.nlargest(5, by)
            print(f"{op} top by {by}: " + "; ".join(
                f"L{r.layer}N{r.neuron} {getattr(r, by):.3f} {list(r.top_tokens)[:5]}" for r in top.itertuples()))
    import plotly.subplots as sp

    ops = list(result.frame["op"].unique())
    fig = sp.make_subplots(rows=1, cols=len(ops), subplot_titles=ops, shared_yaxes=True)
    for i, op in enumerate(ops, start=1):
        for trace in result.plot(op).data:
            trace.update(coloraxis="coloraxis")
            fig.add_trace(trace, row=1, col=i)
    fig.update_layout(coloraxis=dict(colorscale="RdBu", cmid=0), yaxis=dict(autorange="reversed", title="layer"),
                      title="zero-ablation effect on log p(answer), per operation")
    write_png(fig, HERE / "arithmetic.png", 1100, 520)


if __name__ == "__main__":
    main()
