"""Running text to train and evaluate on: the project's own passages, or a user's file.

``data/passages.jsonl`` holds short passages written by the default model (``data/generators/make_text.py``);
every fifth passage is held out (``split="test"``) so that a lens trained on the rest is evaluated
on text it has not seen. ``token_chunks`` turns passages into equal-length token sequences the way
the tuned-lens reference does: documents joined by the end-of-text token, cut into chunks that each
start with it, the incomplete last chunk dropped.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Sequence

import torch

from ..errors import HeadscopeError
from ..models.model import Model
from .prompts import read_records, read_text_file

SPLITS = ("train", "test", "all")


def passages(split: str = "train") -> list[str]:
    """The shipped passages of one split (every fifth passage is ``test``)."""
    if split not in SPLITS:
        raise HeadscopeError(f"unknown split {split!r}; use {', '.join(SPLITS)}")
    lines = resources.files("headscope.data").joinpath("passages.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines if line.strip()]
    return [t for i, t in enumerate(texts) if split == "all" or (i % 5 == 4) == (split == "test")]


def read_texts(source: str | Path | Sequence[str] | None, split: str = "train") -> list[str]:
    """Texts from ``source``: None (the shipped passages of ``split``), a ``.jsonl`` file (field
    ``text``), a text file (paragraphs separated by blank lines) or a list of strings."""
    if source is None:
        return passages(split)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if str(path).endswith(".jsonl"):
            return [r["text"] for r in read_records(path, required=("text",))]
        if not path.is_file():
            raise HeadscopeError(f"text file not found: {source}")
        texts = [p.strip() for p in read_text_file(path).split("\n\n") if p.strip()]
    else:
        texts = [t for t in source if isinstance(t, str) and t.strip()]
    if not texts:
        raise HeadscopeError(f"no text in {source if isinstance(source, (str, Path)) else 'the given list'}")
    return texts


def token_chunks(model: Model, texts: Sequence[str], seq_len: int) -> torch.Tensor:
    """``[n_chunks, seq_len]`` token ids: texts joined by the end-of-text token, chunks starting with it."""
    if not 2 <= seq_len <= model.n_ctx:
        raise HeadscopeError(f"sequence length {seq_len} must be between 2 and the model's context ({model.n_ctx})")
    tok = model.tokenizer
    sep = tok.eos_token_id if tok.eos_token_id is not None else tok.bos_token_id
    if sep is None:
        raise HeadscopeError("this tokenizer has no end-of-text token to separate documents with")
    stream: list[int] = []
    for ids in tok(list(texts), add_special_tokens=False)["input_ids"]:
        stream += [sep] + list(ids)
    body = seq_len - 1
    n = len(stream) // body
    if n == 0:
        raise HeadscopeError(f"the text is {len(stream)} tokens, less than one sequence of {seq_len}")
    chunks = torch.tensor(stream[: n * body]).view(n, body)
    return torch.cat([torch.full((n, 1), sep), chunks], dim=1)
