"""Build headscope's greater-than prompt set (``data/greater-than.jsonl``), after Hanna et al. 2023
("How does GPT-2 compute greater-than?"): "The war lasted from the year 1729 to the year 17".

The default model (SmolLM2) writes numbers one digit per token, so the prompt's answer is the tens
digit of the end year. Start years end in 9 (``YY = X9``, X from 0 to 8): then the years after the
start within the century are exactly those whose tens digit is above X, and the task's metric, the
probability of later years minus that of earlier ones or the same, is read exactly at that one
token: ``targets`` are the digits above X, ``foils`` the digits up to X (metric ``prob_diff``);
``target`` / ``foil`` are X + 1 and X for a logit difference. ``corrupted`` starts in the century's
year 01 (the reference's corruption), the same token length.

Run ``python data/generators/make_greater_than.py``; the output is deterministic (seeded).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).parent.parent / "greater-than.jsonl"
NOUNS = ["war", "contract", "dynasty", "expedition", "drought", "reign", "truce", "pilgrimage", "project", "voyage"]
TEMPLATE = "The {noun} lasted from the year {century}{start} to the year {century}"


def records(n: int = 48, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        noun, century, tens = rng.choice(NOUNS), rng.randint(11, 17), rng.randint(0, 8)
        fill = {"noun": noun, "century": century}
        out.append({"prompt": TEMPLATE.format(start=f"{tens}9", **fill), "target": str(tens + 1), "foil": str(tens),
                    "targets": [str(d) for d in range(tens + 1, 10)], "foils": [str(d) for d in range(tens + 1)],
                    "corrupted": TEMPLATE.format(start="01", **fill)})
    return out


if __name__ == "__main__":
    OUT.write_text("".join(json.dumps(r) + "\n" for r in records()), encoding="utf-8")
    print(f"wrote {OUT}")
