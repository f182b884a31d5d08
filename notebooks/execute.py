"""Run the worked notebooks top to bottom.

``python notebooks/execute.py [NAME ...]`` re-executes them in place with their full settings and
keeps the outputs (the committed notebooks carry such a run); figures are stored as PNG, which needs
``kaleido`` (``pip install -e '.[notebooks]'``). The test suite calls ``execute(path, fast=True)``:
``HEADSCOPE_NOTEBOOK_FAST=1`` makes each notebook use fewer prompts and smaller grids, and figures
are rendered as plain JSON.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FAST = "HEADSCOPE_NOTEBOOK_FAST"


def notebooks() -> list[Path]:
    return sorted(HERE.glob("[0-9][0-9]_*.ipynb"))


def execute(path: Path, *, fast: bool, timeout: int = 3600):
    """The executed notebook (a cell that raises raises ``nbclient.exceptions.CellExecutionError``)."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    settings = {FAST: "1" if fast else "0", "PLOTLY_RENDERER": "json" if fast else "png"}
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)  # the kernel inherits this process's environment
    try:
        NotebookClient(notebook, timeout=timeout, kernel_name="python3", record_timing=False,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return notebook


def main(names: list[str]) -> None:
    import time

    import nbformat

    chosen = [p for p in notebooks() if not names or any(n in p.stem for n in names)]
    if not chosen:
        raise SystemExit(f"no notebook matches {names}; have {[p.stem for p in notebooks()]}")
    for path in chosen:
        start = time.time()
        notebook = execute(path, fast=False)
        tmp = path.with_suffix(".ipynb.tmp")
        nbformat.write(notebook, tmp)
        tmp.replace(path)
        print(f"{path.name}: {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
