"""Build headscope's indirect-object prompt set for head analyses (``data/ioi.jsonl``).

Each record is a sentence in which two people are introduced and one of them (the subject) gives
something to the other (the indirect object); the prompt stops before the indirect object's name:

* ``target`` is the indirect object's name, ``foil`` the subject's (for a logit difference);
* ``corrupted`` is the same sentence with three other names in the three name slots, so no name
  in it points to the answer (for resample ablation); it has the same words, and with one-token
  names the same token length.

Run ``python data/generators/make_ioi.py``; the output is deterministic (a seeded shuffle of name pairs).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).parent.parent / "ioi.jsonl"
NAMES = ["Mary", "John", "Anna", "James", "Sarah", "Tom", "Lucy", "Paul", "Emma", "David", "Kate", "Mark"]
TEMPLATES = [
    "When {a} and {b} went to the {place}, {b} gave a {thing} to",
    "After {a} and {b} arrived at the {place}, {b} handed a {thing} to",
    "While {a} and {b} were at the {place}, {b} passed a {thing} to",
    "Then {a} and {b} walked into the {place}, and {b} offered a {thing} to",
]
PLACES = ["store", "park", "school", "station", "office", "market"]
THINGS = ["drink", "book", "letter", "ball", "ticket", "flower"]


def records(n: int = 48, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b, c, d, e = rng.sample(NAMES, 5)
        fill = {"place": rng.choice(PLACES), "thing": rng.choice(THINGS)}
        template = TEMPLATES[i % len(TEMPLATES)]
        out.append({"prompt": template.format(a=a, b=b, **fill), "target": f" {a}", "foil": f" {b}",
                    "corrupted": template.format(a=c, b=d, **fill).replace(f", {d} ", f", {e} ", 1)
                    .replace(f"and {d} offered", f"and {e} offered")})
    return out


if __name__ == "__main__":
    OUT.write_text("".join(json.dumps(r) + "\n" for r in records()), encoding="utf-8")
    print(f"wrote {OUT}")
