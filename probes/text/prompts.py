"""Reading prompt files: plain text (one prompt per line) or JSONL records.

Every loader validates each line and names the bad one, so a malformed file fails before any model
work starts.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import HeadscopeError


def read_records(path: str | Path, required: tuple[str, ...] = ("prompt",)) -> list[dict]:
    """JSONL records, each an object with string fields ``required`` (blank lines skipped)."""
    file = Path(path)
    if not file.is_file():
        raise HeadscopeError(f"prompt file not found: {path}")
    records = []
    for lineno, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise HeadscopeError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise HeadscopeError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        for key in required:
            value = record.get(key)
            if not isinstance(value, str) or not value.strip():
                raise HeadscopeError(f"{path}:{lineno}: field {key!r} missing or not a non-empty string")
        records.append(record)
    if not records:
        raise HeadscopeError(f"prompt file {path} has no prompts")
    return records


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a ``.jsonl`` file (field ``prompt``) or a text file (one per non-blank line)."""
    if str(path).endswith(".jsonl"):
        return [r["prompt"] for r in read_records(path)]
    file = Path(path)
    if not file.is_file():
        raise HeadscopeError(f"prompt file not found: {path}")
    prompts = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise HeadscopeError(f"prompt file {path} has no prompts")
    return prompts
