"""README figure: per-layer KL of the logit lens and a tuned lens on held-out text, default model.

Trains a tuned lens with the defaults (or reads one with ``--lens FILE``), scores both lenses on the
held-out passages, writes ``docs/lens_kl/`` (the result: lens_kl.parquet + meta.json) and
``docs/lens_kl.png`` (needs ``pip install kaleido`` and a Chrome or Chromium), and prints the table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from headscope.probes import load_model
from headscope.probes.readouts.tuned_lens import lens_kl, load_tuned_lens, train_tuned_lens
from png import write_png

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lens", default=None, help="a trained lens file (default: train one)")
    args = parser.parse_args()
    model = load_model("default", device="cpu")
    lens = load_tuned_lens(model, args.lens) if args.lens else train_tuned_lens(model)
    result = lens_kl(model, lens)
    result.save(HERE / "lens_kl", overwrite=True)
    table = result.frame.pivot(index="layer", columns="lens", values="kl")
    print(table.round(2).to_string())
    write_png(result.plot(), HERE / "lens_kl.png", 900, 420)


if __name__ == "__main__":
    main()
