"""Prompt sets for head analyses: JSONL records ``prompt``, ``target``, optional ``foil``, ``corrupted``.

``foil`` is the competing answer of a logit difference; ``corrupted`` is a prompt of the same token
length whose activations a resample ablation takes. ``targets`` / ``foils`` (lists of answers) are
the answer sets of a probability difference (``prob_diff``: the greater-than task's later and earlier
years); without them the sets are ``[target]`` and ``[foil]``. Every line is validated before any model work,
and an error names the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..probes import HeadscopeError, Model, Tokens, read_records
from ..probes.text.prompts import data_file, read_text_file

if TYPE_CHECKING:
    import torch


ANSWER_SETS = ("targets", "foils")


@dataclass
class PromptSet:
    """Validated records and where they came from (``lines[i]`` is record i's line in the file)."""

    records: list[dict]
    name: str = "prompts"
    source: str = "<memory>"
    lines: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def where(self, i: int) -> str:
        return f"{self.source}:{self.lines[i]}" if self.lines else f"prompt {i}"

    def require(self, key: str, why: str) -> None:
        """Fail naming the first record without ``key`` (``why``: what needs it)."""
        for i, record in enumerate(self.records):
            if not isinstance(record.get(key), str) or not record[key].strip():
                raise HeadscopeError(f"{self.where(i)}: field {key!r} missing; {why} needs it")


def read_prompt_set(path: str | Path) -> PromptSet:
    """A prompt set from a JSONL file (or a shipped set by name, ``ioi``); each line needs ``prompt`` and
    ``target`` strings."""
    path = data_file(path)
    records = read_records(path, required=("prompt", "target"))
    lines = [i for i, line in enumerate(read_text_file(path).splitlines(), start=1) if line.strip()]
    for record, line in zip(records, lines):
        for key in ("foil", "corrupted"):
            if key in record and (not isinstance(record[key], str) or not record[key].strip()):
                raise HeadscopeError(f"{path}:{line}: field {key!r} must be a non-empty string")
        for key in ANSWER_SETS:
            value = record.get(key, ["-"])
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
                raise HeadscopeError(f"{path}:{line}: field {key!r} must be a non-empty list of answer strings")
    return PromptSet(records, Path(path).stem, str(path), lines)


def as_prompt_set(prompts) -> PromptSet:
    """A ``PromptSet``, a JSONL path, or a list of records / ``(prompt, target)`` pairs."""
    if isinstance(prompts, PromptSet):
        return prompts
    if isinstance(prompts, (str, Path)):
        return read_prompt_set(prompts)
    records = []
    for i, item in enumerate(prompts):
        record = dict(item) if isinstance(item, dict) else dict(zip(("prompt", "target"), item))
        for key in ("prompt", "target"):
            if not isinstance(record.get(key), str) or not record[key].strip():
                raise HeadscopeError(f"prompt {i}: field {key!r} missing or not a non-empty string")
        records.append(record)
    if not records:
        raise HeadscopeError("the prompt set is empty")
    return PromptSet(records)


@dataclass
class Encoded:
    """A prompt set tokenized for one model: tokens, target and foil ids, corrupted tokens."""

    tokens: list[Tokens]
    target_ids: list[int]
    foil_ids: list[int] | None
    corrupted: list[Tokens] | None
    notes: list[str]
    target_sets: list[list[int]] | None = None  # with ``sets``: each record's answer sets
    foil_sets: list[list[int]] | None = None
    clean_logprobs: torch.Tensor | None = None  # for the KL metric (circuits.edges.prompts): [records, vocab]


def answer_metric(records: list[dict]) -> str:
    """The metric records ask for: ``prob_diff`` when every one gives answer sets, else ``logit_diff``."""
    return "prob_diff" if all("targets" in r for r in records) else "logit_diff"


def keeping_length(model: Model, records: list[dict]) -> list[dict]:
    """The records whose ``corrupted`` prompt has their prompt's token length under ``model``'s tokenizer
    (all of a shipped set for the default model; fewer for a random model's small tokenizer)."""
    return [r for r in records if len(model.tokenize(r["prompt"])) == len(model.tokenize(r["corrupted"]))]


def encode(model: Model, prompts: PromptSet, *, foil: bool = False, corrupted: bool = False,
           sets: bool = False) -> Encoded:
    """Tokenize ``prompts``; ``foil`` / ``corrupted``: those fields are required and checked; ``sets``:
    the answer sets too (``targets`` / ``foils``, or the target and foil alone)."""
    if sets:
        for i, record in enumerate(prompts.records):
            if "foils" not in record and not isinstance(record.get("foil"), str):
                raise HeadscopeError(f"{prompts.where(i)}: field 'foils' (or 'foil') missing; a probability "
                                     "difference needs the answers to compare against")
    if foil:
        prompts.require("foil", "the logit difference")
    if corrupted:
        prompts.require("corrupted", "resample ablation")
    notes: list[str] = []

    def token(text: str, role: str, i: int) -> int:
        token_id, note = model.first_token(text, role)
        if note and len(notes) < 5:
            notes.append(f"{prompts.where(i)}: {note}")
        return token_id

    tokens = [model.tokenize(r["prompt"]) for r in prompts.records]
    targets = [token(r["target"], "target", i) for i, r in enumerate(prompts.records)]
    foils = [token(r["foil"], "foil", i) for i, r in enumerate(prompts.records)] if foil else None
    corr = None
    if corrupted:
        corr = [model.tokenize(r["corrupted"]) for r in prompts.records]
        for i, (a, b) in enumerate(zip(tokens, corr)):
            if len(a) != len(b):
                raise HeadscopeError(f"{prompts.where(i)}: corrupted prompt has {len(b)} tokens, the prompt {len(a)}; "
                                     "a corrupted prompt needs the prompt's token length")
    encoded = Encoded(tokens, targets, foils, corr, notes)
    if sets:
        encoded.target_sets, encoded.foil_sets = (
            [[token(text, role, i) for text in r.get(key, [r.get(role)])] for i, r in enumerate(prompts.records)]
            for key, role in (("targets", "target"), ("foils", "foil")))
    return encoded
