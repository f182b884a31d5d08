"""Regenerate the README's figure: causal-tracing indirect effects averaged over the shipped facts.

    python docs/make_average_trace.py --max-facts 60            # traces (CPU: about 10 s a fact)
    python docs/make_average_trace.py --from docs/average_trace  # redraw from the saved result

Writes ``docs/average_trace/`` (the result: effects.parquet + meta.json), ``docs/average_trace.png``
(needs ``pip install kaleido`` and a Chrome or Chromium) and prints the peak of each curve.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from png import write_png

HERE = Path(__file__).parent


def peaks(result) -> str:
    """For each kind, at the last subject token and the last token: the layer of the largest mean effect."""
    lines = []
    frame = result.frame
    for kind in ("resid", "mlp", "attn"):
        for bucket in ("last subject token", "last token"):
            part = frame[(frame["kind"] == kind) & (frame["bucket"] == bucket)]
            best = part.loc[part["effect"].idxmax()]
            lines.append(f"{kind:5s} {bucket:18s}: peak {best['effect']:.3f} at layer {int(best['layer'])} "
                         f"[{best['ci_low']:.3f}, {best['ci_high']:.3f}]")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--max-facts", type=int, default=60)
    parser.add_argument("--from", dest="source", default=None, help="a saved average-trace result to redraw")
    args = parser.parse_args()
    from headscope.probes import load_model, load_result

    if args.source:
        result = load_result(args.source)
    else:
        from headscope.circuits.causal.fact_effects import average_indirect_effects
        from headscope.data import DATA_DIR

        model = load_model(args.model)
        result = average_indirect_effects(model, DATA_DIR / "facts.jsonl", max_facts=args.max_facts)
        result.save(HERE / "average_trace", overwrite=True)
    meta = result.meta
    print(f"{meta['model']}: {meta['n_facts']} of {meta['n_known']} known facts ({meta['n_facts_given']} given); "
          f"mean clean p {meta['mean_high_score']:.3f}, corrupted p {meta['mean_low_score']:.3f}")
    print(peaks(result))
    write_png(result.plot(), HERE / "average_trace.png", 1200, 420)


if __name__ == "__main__":
    main()
