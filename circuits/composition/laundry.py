"""A list-recall task in the spirit of Merullo et al.'s Laundry List, in the project's own wording.

A prompt lists ``length`` items, says all but one of them have been dealt with (in a shuffled order),
and asks for the one left: ``"My laundry list: socks, shirts, towels.\\nI have already washed towels
and socks.\\nThe only thing left to wash is the"`` -> ``" shirts"``. Recalling it means finding the
item that is not repeated, which gets harder as the list grows. ``position``: where the answer sits
in the list (an index, or ``"random"``). The target is the answer's first token; items whose first
token another item shares are left out for the model at hand (for SmolLM2 every item is one token).

Scored per prompt: ``correct`` (the greedy next token is the answer) and ``among_items`` (the answer
has the highest logit among the listed items). An intervention scales a subspace of a writer head's
output (``channel_test.projection``) in every prompt, one variant per scale, batched.
"""

from __future__ import annotations

import random
import time

import pandas as pd
import torch

from ...probes import HeadscopeError, Model, Result, run
from ...probes.engine.batching import row_chunks

from .channel_effects import check_writer, projection, run_variants

ITEMS = ("socks", "shirts", "towels", "jeans", "sheets", "hats", "gloves", "scarves", "shorts", "dresses",
         "coats", "skirts", "sweaters", "pillows", "blankets", "jackets", "napkins", "aprons", "uniforms", "boots")


def first_id(model: Model, item: str) -> int:
    return model.tokenizer(" " + item, add_special_tokens=False)["input_ids"][0]


def usable_items(model: Model) -> list[str]:
    """The items whose first token (after a space) no other item shares, for this model's tokenizer."""
    firsts = [first_id(model, w) for w in ITEMS]
    return [w for w, f in zip(ITEMS, firsts) if firsts.count(f) == 1]


def laundry_prompts(model: Model, length: int, n: int, *, position: int | str = "random", seed: int = 0) -> list[dict]:
    """``n`` records (``prompt``, ``target``, ``items``, ``position``) with ``length`` items."""
    items = usable_items(model)
    if isinstance(length, bool) or not isinstance(length, int) or not 2 <= length <= len(items):
        raise HeadscopeError(f"list length {length!r} must be between 2 and {len(items)} "
                             f"(the items with distinct first tokens for this model)")
    if position != "random" and (isinstance(position, bool) or not isinstance(position, int)
                                 or not 0 <= position < length):
        raise HeadscopeError(f"answer position {position!r} must be 'random' or between 0 and {length - 1}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise HeadscopeError(f"n {n!r} must be a positive number of prompts")
    rng = random.Random(f"{seed}-{length}")
    out = []
    for _ in range(n):
        chosen = rng.sample(items, length)
        where = rng.randrange(length) if position == "random" else position
        done = [w for i, w in enumerate(chosen) if i != where]
        rng.shuffle(done)
        washed = done[0] if len(done) == 1 else ", ".join(done[:-1]) + " and " + done[-1]
        prompt = (f"My laundry list: {', '.join(chosen)}.\nI have already washed {washed}.\n"
                  f"The only thing left to wash is the")
        out.append({"prompt": prompt, "target": " " + chosen[where], "items": chosen, "position": where})
    return out


class Laundry(Result):
    """One row per (scale, length, prompt): ``correct`` and ``among_items``."""

    kind = "laundry-list"
    table = "laundry"

    def accuracy(self) -> pd.DataFrame:
        return self.frame.groupby(["scale", "length"], as_index=False)[["correct", "among_items"]].mean()

    def plot(self):
        import plotly.express as px

        acc = self.accuracy()
        acc["scale"] = acc["scale"].astype(str)
        return px.line(acc, x="length", y="among_items", color="scale", markers=True,
                       title="list recall: answer ranked first among the listed items, by list length",
                       labels={"among_items": "accuracy among items", "scale": "subspace scale"})


def laundry_task(model: Model, lengths=(2, 3, 4, 5, 6, 8), *, n: int = 40, position: int | str = "random",
                 seed: int = 0, writer: tuple[int, int] | None = None, components: list[int] = (),
                 scales=(1.0,), fold_norm: bool = True,
                 batch_size: int | None = None) -> Laundry:
    """Accuracy by list length; with ``writer`` and ``components``, each ``scale`` of that subspace
    (1.0 = unchanged) as a variant."""
    started = time.perf_counter()
    scales = [float(s) for s in scales]
    if writer is not None:
        if not components:
            raise HeadscopeError("an intervention needs components of the writer head to scale")
        check_writer(model, tuple(writer), [list(components)])
        removed = torch.eye(model.d_head) - projection(model, tuple(writer), [list(components)], 0.0,
                                                       fold_norm=fold_norm)[0]  # the subspace's part of z
        mats = torch.stack([torch.eye(model.d_head) - (1.0 - s) * removed for s in scales])
    else:
        scales, mats = [1.0], None
    rows = []
    for length in lengths:
        records = laundry_prompts(model, length, n, position=position, seed=seed)
        toks = [model.tokenize(r["prompt"]) for r in records]
        item_ids = [[first_id(model, w) for w in r["items"]] for r in records]
        for sl in row_chunks(model, len(toks), max(len(t) for t in toks), batch_size, per_row=len(scales)):
            part = toks[sl]
            batch = model.batch(part * len(scales))
            if writer is None:
                with torch.no_grad():
                    logits = run(model, batch, logits_at=batch.last).logits
            else:
                logits = run_variants(model, batch, tuple(writer), mats).logits
            logits = logits.float().cpu().reshape(len(scales), len(part), -1)
            for j, record in enumerate(records[sl]):
                ids = item_ids[sl.start + j]
                answer = ids[record["position"]]
                for k, scale in enumerate(scales):
                    row = logits[k, j]
                    rows.append({"scale": scale, "length": length, "prompt": sl.start + j,
                                 "position": record["position"], "correct": int(row.argmax()) == answer,
                                 "among_items": int(torch.tensor(ids)[row[ids].argmax()]) == answer})
    meta = {"model": model.spec, "lengths": list(lengths), "n": n, "position": position, "seed": seed,
            "writer": list(writer) if writer else None, "components": list(components), "scales": scales,
            "items": usable_items(model), "seconds": round(time.perf_counter() - started, 2)}
    return Laundry(pd.DataFrame(rows), meta)
