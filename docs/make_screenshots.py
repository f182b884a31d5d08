"""README screenshots of the dashboard on the default model: attention, lens, causal trace, heads, circuit.

Starts ``headscope app`` on the default model, drives it in headless Chromium (as the tests do) and
writes ``docs/dashboard-<view>.png``. The circuit's nodes are sized by the addition effects of the
arithmetic run in ``docs/arithmetic``. ``python docs/make_screenshots.py circuit-data RUN`` shoots only
the circuit from data, of a ``headscope circuit`` run directory (a few MB, so not kept in the repository).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))

from browser import Page, app_server, chrome  # noqa: E402


def circuit_data(run: Path) -> None:
    runs = Path(tempfile.mkdtemp()) / "runs"
    shutil.copytree(run, runs / run.name)
    with app_server("default", runs) as base:
        driver = chrome()
        page = Page(driver, base)
        page.open(f"?model=default&tab=circuit&source=data&circuit_run={run.name}&shown=60&layer=23&head=3")
        page.wait(lambda: "of the top 60 edges" in page.text("circuit-summary"), timeout=300, what="the circuit")
        time.sleep(2)  # the layout settles
        save(page, "circuit-data")
        driver.quit()


def main() -> None:
    runs = Path(tempfile.mkdtemp()) / "runs"
    runs.mkdir()
    shutil.copytree(HERE / "arithmetic", runs / "arithmetic")
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
        page.open("?model=default&tab=circuit&layer=20&head=8")
        page.type("circuit-min-z", "100", submit=True)
        page.click("circuit-run")
        page.wait(lambda: "edges between" in page.text("circuit-summary"), timeout=300, what="the graph")
        page.choose("circuit-importance", "run arithmetic: effect (op=add, mode=zero)")
        page.wait(lambda: page.d.execute_script(
            "return document.getElementById('circuit-graph')._cyreg.cy.nodes().some(n => n.data('importance') !== null)"),
            what="node sizes")
        time.sleep(1)  # the layout settles
        save(page, "circuit")
        driver.quit()


def save(page: Page, name: str) -> None:
    target = HERE / f"dashboard-{name}.png"
    shutil.copy(page.shot(f"docs-{name}"), target)
    print(f"wrote {target}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["circuit-data"]:
        circuit_data(Path(sys.argv[2]).resolve())
    else:
        main()
