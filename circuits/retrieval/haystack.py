"""Needle-in-a-haystack tests: filler text, needles, and prompts with a needle at a chosen depth.

- **Haystack**: the project's own passages (``data/passages.jsonl``, written by the default model),
  shuffled by the seed and joined (cycling through them again, reshuffled, when a context needs more
  text than they hold), cut to the number of tokens needed. The same seed gives the same filler.
- **Needles**: records with ``needle`` (the sentence inserted), ``question`` and ``real_needle`` (the
  part of the needle that answers the question), the shape of Wu et al.'s reference;
  ``data/needles.jsonl`` holds twelve the project wrote.
- **Insertion** follows the reference: at ``depth`` (0..1) of the haystack in token space, backing
  up to just after a sentence end (a token ending in ``.``, ``!`` or ``?``; the reference checks its
  tokenizer's period ids), or to the start; depth 1 appends the needle at the end.
- **Length** is the whole prompt's token count: the haystack is cut to leave room for the needle,
  the question and the template (tokenization at the joins can shift the total by a token or two;
  each test records its actual length).
- **Prompt**: ``{context}`` then our question template (``TEMPLATE``), or the same as one user turn
  of the model's chat template (``chat``; by default when the tokenizer has one: an instruction-tuned
  model asked in the plain template tends to answer with an empty line).
- **The answer's span** (the tokens of ``real_needle`` inside the prompt) is found from character
  offsets, exactly; the reference searches for a window whose token set overlaps the separately
  tokenized ``real_needle`` by more than 90%, because it re-tokenizes decoded text.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ...probes import HeadscopeError, Model, Tokens, read_records
from ...probes.text.corpus import passages

TEMPLATE = "{context}\n\nBased on the text above, answer the question.\nQuestion: {question}\nAnswer:"
CHAT_TEMPLATE = "{context}\n\nBased on the text above, answer the question.\nQuestion: {question}"
SENTENCE_ENDS = (".", "!", "?")
TEMPLATES = ("auto", "chat", "plain")  # prompt formats: the chat template when the model has one, or plain


@dataclass(frozen=True)
class Needle:
    needle: str
    question: str
    real_needle: str


@dataclass
class NeedleTest:
    length: int  # asked for
    depth: float
    needle: Needle
    prompt: str
    tokens: Tokens
    span: tuple[int, int]  # token positions [start, end) of real_needle in the prompt

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)


def read_needles(path: str | Path | None = None) -> list[Needle]:
    """Needles from a JSONL file (default: the shipped ``data/needles.jsonl``)."""
    from ...data import DATA_DIR

    records = read_records(DATA_DIR / "needles.jsonl" if path is None else path,
                           required=("needle", "question", "real_needle"))
    needles = []
    for i, r in enumerate(records, start=1):
        if r["real_needle"] not in r["needle"]:
            raise HeadscopeError(f"needle {i}: real_needle {r['real_needle']!r} is not part of its needle")
        needles.append(Needle(r["needle"], r["question"], r["real_needle"]))
    return needles


def haystack_ids(model: Model, n: int, seed: int) -> list[int]:
    """``n`` token ids of filler: the shipped passages in a seeded order, cycled as needed."""
    texts, rng, ids = passages("all"), random.Random(seed), []
    while len(ids) < n:
        order = texts[:]
        rng.shuffle(order)
        ids += model.tokenizer(" ".join(order) + " ", add_special_tokens=False)["input_ids"]
    return ids[:n]


def build_test(model: Model, length: int, depth: float, needle: Needle, *, seed: int = 0,
               chat: bool | None = None) -> NeedleTest:
    """One test prompt of about ``length`` tokens with ``needle`` at ``depth`` of the haystack;
    ``chat``: use the model's chat template (default: when it has one)."""
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise HeadscopeError(f"context length {length!r} must be a positive number of tokens")
    if length > model.n_ctx:
        raise HeadscopeError(f"context length {length} is over this model's context of {model.n_ctx} tokens")
    if not 0.0 <= depth <= 1.0:
        raise HeadscopeError(f"depth {depth!r} must be between 0 and 1")
    if chat is None:
        chat = bool(getattr(model.tokenizer, "chat_template", None))
    if chat and not getattr(model.tokenizer, "chat_template", None):
        raise HeadscopeError(f"{model.spec} has no chat template; run without chat")
    overhead = len(model.tokenize(_prompt(model, "", needle.question, chat))) + _count(model, " " + needle.needle) + 2
    budget = length - overhead
    if budget < 0:
        raise HeadscopeError(f"context length {length} is too short for the needle, question and template "
                             f"({overhead} tokens)")
    ids = haystack_ids(model, budget, seed)
    cut = len(ids) if depth >= 1.0 else int(len(ids) * depth)
    while 0 < cut < len(ids) and not model.tokenizer.decode(ids[cut - 1:cut]).rstrip().endswith(SENTENCE_ENDS):
        cut -= 1
    before, after = model.tokenizer.decode(ids[:cut]), model.tokenizer.decode(ids[cut:])
    context = (before.rstrip() + " " if before.strip() else "") + needle.needle + (
        " " + after.lstrip() if after.strip() else "")
    prompt = _prompt(model, context, needle.question, chat)
    tokens = model.tokenize(prompt)
    at = prompt.rindex(needle.needle) + needle.needle.index(needle.real_needle)
    positions = tokens.positions_of(at, at + len(needle.real_needle))
    return NeedleTest(length, depth, needle, prompt, tokens, (positions[0], positions[-1] + 1))


def needle_grid(model: Model, lengths: list[int], depths: list[float], needles: list[Needle], *, seed: int = 0,
                chat: bool | None = None, needles_per_cell: int = 1) -> list[NeedleTest]:
    """Every (length, depth) cell with ``needles_per_cell`` needles, taken in a seeded rotation."""
    return [build_test(model, length, depth, needle, seed=k, chat=chat) for length, depth, needle, k
            in grid_cells(lengths, depths, needles, seed=seed, needles_per_cell=needles_per_cell)]


def grid_cells(lengths: list[int], depths: list[float], needles: list[Needle], *, seed: int = 0,
               needles_per_cell: int = 1) -> list[tuple[int, float, Needle, int]]:
    """``needle_grid``'s tests as ``build_test`` arguments ``(length, depth, needle, seed)``, without a model:
    a worker builds the tests of its share alone."""
    if not lengths or not depths or not needles:
        raise HeadscopeError("a test grid needs at least one length, one depth and one needle")
    if not 1 <= needles_per_cell <= len(needles):
        raise HeadscopeError(f"needles per cell {needles_per_cell} must be between 1 and {len(needles)}")
    order = needles[:]
    random.Random(seed).shuffle(order)
    cells = [(length, depth) for length in lengths for depth in depths for _ in range(needles_per_cell)]
    return [(length, depth, order[k % len(order)], seed + k) for k, (length, depth) in enumerate(cells)]


def _prompt(model: Model, context: str, question: str, chat: bool) -> str:
    if not chat:
        return TEMPLATE.format(context=context, question=question)
    return model.tokenizer.apply_chat_template(
        [{"role": "user", "content": CHAT_TEMPLATE.format(context=context, question=question)}],
        tokenize=False, add_generation_prompt=True)


def _count(model: Model, text: str) -> int:
    return len(model.tokenizer(text, add_special_tokens=False)["input_ids"])
