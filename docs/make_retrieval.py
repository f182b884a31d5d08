"""README figures: retrieval heads of the default model, greedy vs teacher-forced, and the masking curve.

Scores the CLI's default grid (4 lengths up to 2k tokens x 5 depths, one shipped needle each) in both
modes, compares their rankings, masks the top-k greedy heads vs k random non-retrieval heads on the
masking command's default grid, writes ``docs/retrieval/`` (the three results) and
``docs/retrieval.png`` / ``docs/retrieval_masking.png`` (when kaleido can), and prints the figures.
"""

from __future__ import annotations

from pathlib import Path

from headscope.circuits.retrieval.haystack import needle_grid, read_needles
from headscope.circuits.retrieval.scores import agreement, retrieval_heads
from headscope.circuits.retrieval.masking import masking_test
from headscope.probes import load_model
from png import write_png

HERE = Path(__file__).parent


def main() -> None:
    model = load_model("default", device="cpu")
    needles = read_needles()
    grid = needle_grid(model, [256, 512, 1024, 2048], [0, 0.25, 0.5, 0.75, 1], needles)
    greedy = retrieval_heads(model, grid, mode="greedy")
    forced = retrieval_heads(model, grid, mode="teacher-forced")
    greedy.save(HERE / "retrieval" / "greedy", overwrite=True)
    forced.save(HERE / "retrieval" / "teacher_forced", overwrite=True)
    heads = greedy.heads()
    print(f"greedy: {greedy.meta['n_kept']} of {greedy.meta['n_tests']} tests counted, "
          f"{(heads['score'] > 0.1).mean():.1%} of heads above 0.1, {greedy.meta['seconds']} s; "
          f"teacher-forced {forced.meta['seconds']} s")
    print(heads.head(10).round(3).to_string(index=False))
    print("agreement of the modes:", {k: round(v, 3) for k, v in agreement(greedy, forced).items()})
    masking = masking_test(model, needle_grid(model, [512, 1024], [0.1, 0.5, 0.9], needles),
                           dict(zip(greedy.ranking(), heads["score"])), [1, 5, 10, 20])
    masking.save(HERE / "retrieval" / "masking", overwrite=True)
    print(masking.frame.groupby(["mode", "kind", "k"])["accuracy"].agg(["mean", "min", "max"]).round(3).to_string())
    for run in ("greedy", "teacher_forced", "masking"):  # each carries plotly.js (4.6 MB); the PNGs show them
        (HERE / "retrieval" / run / "report.html").unlink()
    write_png(greedy.plot(), HERE / "retrieval.png", 520, 620)
    write_png(masking.plot(), HERE / "retrieval_masking.png", 760, 420)


if __name__ == "__main__":
    main()
