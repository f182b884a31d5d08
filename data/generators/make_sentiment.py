"""Build headscope's sentiment steering sets: contrast pairs and an evaluation prompt set.

* ``data/sentiment-pairs.jsonl``: ``{"positive", "negative"}`` sentences about an everyday thing that
  differ only in their judgement words (the vectors' contrast pairs, and the in-context vector's
  demonstrations: negative input, positive output);
* ``data/sentiment.jsonl``: ``{"prompt", "target", "foil"}``: a neutral sentence about another thing
  followed by a verdict to complete, target ``" great"`` and foil ``" terrible"`` (the steering
  behaviour: the logit difference, positive when the model leans positive). The things of the two
  files do not overlap, so a vector is evaluated on topics it was not made from.

Run ``python data/generators/make_sentiment.py``; the output is deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).parent.parent
JUDGEMENTS = [  # (positive, negative) wordings of one sentence frame
    ("I loved the {thing}. It was wonderful and I was very happy.",
     "I hated the {thing}. It was awful and I was very unhappy."),
    ("The {thing} was excellent, and everyone enjoyed it.",
     "The {thing} was dreadful, and everyone disliked it."),
    ("What a delightful {thing}; it made my day better.",
     "What a miserable {thing}; it made my day worse."),
]
PAIR_THINGS = ["film", "meal", "hotel", "concert", "book", "holiday", "game", "lesson"]
EVAL_THINGS = ["restaurant", "museum", "train journey", "party", "phone", "garden", "play", "course"]
EVAL_FRAMES = ["Yesterday I went to see the {thing} with a friend. Overall, it was",
               "We tried the new {thing} last week. My honest verdict: it was"]


def main() -> None:
    pairs = [{"positive": pos.format(thing=thing), "negative": neg.format(thing=thing)}
             for thing in PAIR_THINGS for pos, neg in JUDGEMENTS]
    prompts = [{"prompt": frame.format(thing=thing), "target": " great", "foil": " terrible"}
               for thing in EVAL_THINGS for frame in EVAL_FRAMES]
    for name, records in (("sentiment-pairs.jsonl", pairs), ("sentiment.jsonl", prompts)):
        (OUT / name).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        print(f"{len(records)} records -> {OUT / name}")


if __name__ == "__main__":
    main()
