"""Data headscope writes itself (facts, prompt suites, fixtures), installed as ``headscope.data``."""

from __future__ import annotations

import json
from pathlib import Path

DATA_DIR = Path(__file__).parent
"""The folder of the shipped ``*.jsonl`` sets (``facts``, ``ioi``, ``needles``, ``passages``)."""


def read_jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA_DIR / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def fact_subjects() -> list[str]:
    """Subjects of the shipped fact set: the default strings for the causal-trace noise scale."""
    return [record["subject"] for record in read_jsonl("facts.jsonl")]
