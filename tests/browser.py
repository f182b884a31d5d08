"""Driving the dashboard in Debian's headless Chromium (selenium, with the system chromedriver: nothing
is downloaded), and starting ``headscope app`` on a free port for a test."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1600"]
SCREENSHOTS = Path(os.environ.get("HEADSCOPE_SCREENSHOTS", "/tmp/headscope-screenshots"))


def chrome():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={Path(os.environ.get('TMPDIR', '/tmp')) / f'hs-chrome-{os.getpid()}'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(base: str) -> dict:
    with urllib.request.urlopen(base + "/status", timeout=5) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def app_server(model: str, runs: Path, timeout: float = 300):
    """``headscope app`` in a subprocess; yields its base URL once the model is loaded."""
    port = free_port()
    log = open(runs.parent / f"app-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "headscope.app.cli", "app", "--model", model, "--runs", str(runs),
                             "--port", str(port), "--device", os.environ.get("HEADSCOPE_TEST_DEVICE", "cpu")],
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the app exited: {(runs.parent / f'app-{port}.log').read_text()[-2000:]}")
            try:
                if status(base)["state"] == "ready":
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise AssertionError(f"the app did not load {model} in {timeout} s")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


class Page:
    """A browser on the dashboard, with waits on what the page shows."""

    def __init__(self, driver, base: str):
        self.d, self.base = driver, base

    def open(self, query: str = "") -> None:
        self.d.get(self.base + "/" + query)
        # the first render is done when the URL has been read back into the page and the strip drawn
        self.wait(lambda: "prompt=" in self.d.current_url and self.text("tokens"), what="the page's first render")

    def wait(self, condition, timeout: float = 90, what: str = ""):
        deadline = time.time() + timeout
        while True:
            try:
                value = condition()
            except Exception:  # the element is not there yet, or is being replaced
                value = None
            if value:
                return value
            if time.time() > deadline:
                self.shot("timeout")
                raise AssertionError(f"timed out waiting for {what or condition}")
            time.sleep(0.2)

    def find(self, element_id: str):
        from selenium.webdriver.common.by import By

        return self.d.find_element(By.ID, element_id)

    def text(self, element_id: str) -> str:
        return self.find(element_id).text

    def type(self, element_id: str, value: str, submit: bool = False) -> None:
        from selenium.webdriver.common.keys import Keys

        box = self.find(element_id)
        box.send_keys(Keys.CONTROL, "a")  # then type over the selection (Dash's inputs restore an emptied value)
        box.send_keys(value + (Keys.ENTER if submit else ""))

    def click(self, element_id: str) -> None:
        self.find(element_id).click()

    def choose(self, dropdown_id: str, text: str) -> None:
        """Open a dropdown and click the option whose label contains ``text``."""
        self.click(dropdown_id)
        option = self.wait(lambda: next(o for o in self.d.find_elements("css selector", "[role=option]")
                                        if text in o.text), what=f"the option {text!r}")
        # a long list opens scrolled to the chosen option: one above it can sit under the list's search box
        self.d.execute_script("arguments[0].scrollIntoView({block: 'center'})", option)
        option.click()

    def tab(self, label: str) -> None:
        from selenium.webdriver.common.by import By

        self.d.find_element(By.XPATH, f"//div[contains(@class, 'tab') and normalize-space()='{label}']").click()

    def figure(self, graph_id: str) -> list[dict] | None:
        """The traces of a graph: type, z shape, x length, title."""
        return self.d.execute_script("""
            const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
            if (!gd || !gd._fullData || !gd._fullData.length) return null;
            return gd._fullData.map(t => ({type: t.type, rows: t.z ? t.z.length : null,
                                      cols: t.z && t.z[0] ? t.z[0].length : null,
                                      x: t.x ? t.x.length : null,
                                      title: gd.layout.title ? (gd.layout.title.text || gd.layout.title) : ''}));
        """, graph_id)

    def click_plot(self, graph_id: str, x, y) -> None:
        """A real mouse click at data coordinates (x, y) of a graph's first axes."""
        from selenium.webdriver.common.action_chains import ActionChains

        drag, dx, dy = self.d.execute_script("""
            const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
            const fl = gd._fullLayout, drag = gd.querySelector('.nsewdrag');
            return [drag, fl.xaxis.d2p(arguments[1]) - fl._size.w / 2, fl.yaxis.d2p(arguments[2]) - fl._size.h / 2];
        """, graph_id, x, y)
        # plotly clicks what it hovers: move near the point first, then onto it, then click
        ActionChains(self.d).move_to_element_with_offset(drag, dx + 3, dy + 3).pause(0.3) \
            .move_to_element_with_offset(drag, dx, dy).pause(0.3).click().perform()

    def errors(self) -> list[str]:
        from selenium.webdriver.common.by import By

        return [e.text for e in self.d.find_elements(By.CLASS_NAME, "error") if e.text]

    def console_errors(self) -> list[str]:
        return [entry["message"] for entry in self.d.get_log("browser") if entry["level"] == "SEVERE"]

    def shot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.d.save_screenshot(str(path))
        return path
