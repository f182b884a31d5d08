"""Write headscope's own text corpus: short passages produced by the default model.

Analyses that need ordinary running text (tuned-lens training and its held-out evaluation,
haystack filler for retrieval tests) read ``data/passages.jsonl``; no corpus is copied from
elsewhere. Each passage is SmolLM2-135M-Instruct's sampled answer to one of our requests
(a topic from ``TOPICS`` in one of the ``STYLES``), one JSON object per line with the keys
``topic``, ``style`` and ``text``.

Run ``python data/generators/make_text.py`` to rewrite the file; sampling is seeded, so the same machine and
library versions give the same passages.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).parent.parent / "passages.jsonl"
SEED = 0
MAX_NEW_TOKENS = 220
BATCH = 32

STYLES = [
    "Write a short paragraph about {topic}.",
    "Explain {topic} to a curious twelve-year-old in a few sentences.",
]

TOPICS = [
    # nature and science
    "how bees make honey", "why the sky is blue", "the water cycle", "how volcanoes form", "the life of a frog",
    "why leaves change colour in autumn", "how birds migrate", "the phases of the moon", "what causes thunder",
    "how coral reefs grow", "the seasons of the year", "how plants use sunlight", "the deep ocean",
    "how mountains are made", "the difference between weather and climate", "why we need sleep",
    "how the heart pumps blood", "what bacteria are", "the planets of the solar system", "how rainbows appear",
    "the life of an oak tree", "how magnets work", "why ice floats", "how earthquakes happen", "desert animals",
    "how spiders spin webs", "the Arctic in winter", "what a comet is", "how the human eye sees colour",
    "why salt melts ice",
    # everyday life
    "baking a loaf of bread", "a morning at a busy market", "riding a bicycle to school", "keeping a vegetable garden",
    "cooking rice", "a rainy afternoon at home", "learning to swim", "packing for a camping trip",
    "a visit to the dentist", "taking care of a puppy", "doing laundry", "a birthday party in the park",
    "moving to a new town", "writing a letter to a friend", "a long train journey", "saving money",
    "planning a picnic", "fixing a flat tyre", "a walk in the snow", "cleaning a kitchen",
    # work, places and society
    "what a librarian does", "the work of a firefighter", "how a post office works", "a small fishing village",
    "how a bridge is built", "what farmers do in spring", "a day in the life of a nurse", "how elections work",
    "the job of a city bus driver", "how a newspaper is made", "an old lighthouse", "a mountain hut",
    "a busy airport", "a school science fair", "how a restaurant kitchen is organised", "a public park",
    "how money is printed", "the role of a museum", "why cities have traffic lights", "a harbour at dawn",
    # technology and ideas
    "how a computer stores files", "what the internet is", "how a refrigerator keeps food cold",
    "how airplanes stay in the air", "what a battery does", "how a telephone call travels",
    "the invention of the printing press", "how maps are drawn", "what a recipe is", "how clocks keep time",
    "what electricity is", "how a camera takes a picture", "how solar panels work", "why we recycle plastic",
    "how a lock and key work", "what a spreadsheet is for", "how trains are powered", "what a robot can do",
    "how a submarine dives", "how glass is made",
    # numbers, language and learning
    "why practice helps us learn", "how to add two numbers", "what fractions are", "the history of writing",
    "why people learn other languages", "how to read a map", "what a good story needs", "how to measure time",
    "why counting matters", "how children learn to talk", "the rules of chess", "what makes a poem",
    "how to study for an exam", "the meaning of friendship", "why people keep diaries", "how calendars work",
    "what geometry studies", "how to tell a good joke", "why music makes people happy", "how to give directions",
    # stories and places
    "a dragon who was afraid of the dark", "a lost kitten finding its way home", "an old sailor's last voyage",
    "a robot that wanted to paint", "a girl who found a secret door", "a quiet village before a festival",
    "a forest after a storm", "a castle on a hill", "a detective looking for a missing hat",
    "two friends building a treehouse", "a king who could not sleep", "a baker who made the biggest cake",
    "a boy who talked to birds", "a ship caught in fog", "a garden that grew overnight",
    "a clockmaker and his apprentice", "a fox and a crow", "a journey across the desert",
    "the first day at a new school", "a lighthouse keeper in a storm",
]


def main() -> None:
    from headscope.probes import load_model
    from headscope.probes.engine.generate import generate

    model = load_model("default", device="cpu")
    tok = model.tokenizer
    requests = [(topic, style) for style in range(len(STYLES)) for topic in TOPICS]
    chats = [tok.apply_chat_template([{"role": "user", "content": STYLES[s].format(topic=t)}],
                                     tokenize=False, add_generation_prompt=True) for t, s in requests]
    new = generate(model, chats, MAX_NEW_TOKENS, temperature=0.7, top_p=0.9, seed=SEED, batch_size=BATCH)
    records = []
    for (topic, style), ids in zip(requests, new):
        text = " ".join(tok.decode(ids, skip_special_tokens=True).split())
        if len(text) > 200:
            records.append({"topic": topic, "style": style, "text": text})
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    print(f"wrote {len(records)} passages to {OUT}")


if __name__ == "__main__":
    main()
