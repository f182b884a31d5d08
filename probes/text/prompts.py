"""Reading prompt files: plain text (one prompt per line) or JSONL records.

Every loader validates each line and names the bad one, so a malformed file fails before any model
work starts. A path that is not a file but names a set the project ships (``ioi``, ``facts``,
``needles``, ``passages``: ``headscope.data``) reads that set, so ``--prompts ioi`` works after a plain
``pip install``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import HeadscopeError, HeadscopeFailure


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


def read_text_file(path: str | Path) -> str:
    """A text file's contents: a file that is not UTF-8 text is a mistake (``HeadscopeError``), one that
    cannot be read a failure (``HeadscopeFailure``); either way one line naming it."""
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise HeadscopeError(f"{path} is not UTF-8 text (byte {err.start}: {err.reason}); give a text or JSONL "
                             "file") from None
    except OSError as err:
        raise HeadscopeFailure(f"cannot read {path}: {err.strerror or err}") from None


def read_records(path: str | Path, required: tuple[str, ...] = ("prompt",), what: str = "prompt") -> list[dict]:
    """JSONL records, each an object with string fields ``required`` (blank lines skipped); ``what`` the
    records are, for the message when there are none."""
    file = data_file(path)
    records = []
    for lineno, line in enumerate(read_text_file(file).splitlines(), start=1):
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
        raise HeadscopeError(f"{what} file {path} has no {what}s")
    return records


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a ``.jsonl`` file (field ``prompt``) or a text file (one per non-blank line)."""
    file = data_file(path)
    if file.suffix == ".jsonl":
        return [r["prompt"] for r in read_records(file)]
    prompts = [line for line in read_text_file(file).splitlines() if line.strip()]
    if not prompts:
        raise HeadscopeError(f"prompt file {path} has no prompts")
    return prompts
