"""Reading prompt files: plain text (one prompt per line) or JSONL records.

Every loader validates each line and names the bad one, so a malformed file fails before any model
work starts. A path that is not a file but names a set the project ships (``ioi``, ``facts``,
``needles``, ``passages``: ``headscope.data``) reads that set, so ``--prompts ioi`` works after a plain
``pip install``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import HeadscopeError


def shipped_sets() -> list[str]:
    """Names of the prompt sets installed with headscope."""
    from ...data import DATA_DIR

    return sorted(p.stem for p in DATA_DIR.glob("*.jsonl"))


def data_file(path: str | Path) -> Path:
    """``path`` itself, or the shipped set it names; a one-line error when it is neither."""
    from ...data import DATA_DIR

    file = Path(path).expanduser()
    if file.is_file():
        return file
    if str(path) in shipped_sets():
        return DATA_DIR / f"{path}.jsonl"
    raise HeadscopeError(f"prompt file not found: {path} (or give a shipped set: {', '.join(shipped_sets())})")


def read_records(path: str | Path, required: tuple[str, ...] = ("prompt",)) -> list[dict]:
    """JSONL records, each an object with string fields ``required`` (blank lines skipped)."""
    file = data_file(path)
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
    file = data_file(path)
    if file.suffix == ".jsonl":
        return [r["prompt"] for r in read_records(file)]
    prompts = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise HeadscopeError(f"prompt file {path} has no prompts")
    return prompts
