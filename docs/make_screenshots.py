"""README screenshots of the dashboard on the default model: attention, lens, causal trace, heads.

Starts ``headscope app`` on the default model, drives it in headless Chromium (as the tests do) and
writes ``docs/dashboard-<view>.png``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))

from browser import Page, app_server, chrome  # noqa: E402


def main() -> None:
    runs = Path(tempfile.mkdtemp()) / "runs"
    runs.mkdir()
    with app_server("default", runs) as base:
        driver = chrome()
        page = Page(driver, base)
        page.open("?model=default&prompt=When+Mary+and+John+went+to+the+store,+John+gave+a+drink+to"
                  "&layer=23&head=3&tab=attention")
        page.wait(lambda: (f := page.figure("attn-pattern")) and "L23H3" in f[0]["title"], what="L23H3")
        save(page, "attention")
        page.tab("Lens")
        page.type("lens-target", " Mary", submit=True)
        page.wait(lambda: (f := page.figure("lens-grid")) and f[0]["rows"] == 31, what="the lens")
        save(page, "lens")
        page.open("?model=default&tab=trace")
        page.type("trace-subject", "The Eiffel Tower")
        page.click("trace-run")
        page.wait(lambda: (f := page.figure("trace-graph")) and len(f) == 3, timeout=600, what="the trace")
        save(page, "trace")
        page.tab("Heads")
        page.choose("heads-score", "previous_token")
        page.wait(lambda: "previous_token" in (page.figure("heads-map") or [{}])[0].get("title", ""), timeout=300)
        save(page, "heads")
        driver.quit()


def save(page: Page, name: str) -> None:
    target = HERE / f"dashboard-{name}.png"
    shutil.copy(page.shot(f"docs-{name}"), target)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
