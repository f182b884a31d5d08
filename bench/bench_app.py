"""Dashboard latency through a real browser: submit a ~200-token prompt and time until the attention
view (head grid and the large pattern with every token) is drawn, then switch to the lens tab and
time until its grid shows the new prompt's last tokens. Timed inside the page (from the click to the
animation frame after the new figures are there, so webdriver's polling is not counted), after the model is loaded, in
Debian's headless Chromium;
each prompt is new to the app (nothing memoised). Also the bare forward of the same prompt, for the
ratio.

python bench/bench_app.py [--model default] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from browser import Page, app_server, chrome  # noqa: E402

from headscope.app.views.lens import WINDOW  # noqa: E402

SENTENCES = ["The old mill stands by the river, where the water turns the wheel all day.",
             "The miller sells flour to the village and the bakers make bread before dawn.",
             "In the evening the children walk home along the bank and count the boats.",
             "A heron waits in the reeds while the light fades over the fields."]


def prompt(i: int, tokens: int, model) -> str:
    """A prompt of about ``tokens`` tokens, different for each ``i`` at its start and its end."""
    words, k, end = [f"Story {i}:"], i, f"That was story {i}."
    while len(model.tokenize(" ".join(words + [end]))) < tokens:
        words += SENTENCES[k % len(SENTENCES)].split()
        k += 1
    while len(model.tokenize(" ".join(words + [end]))) > tokens:
        words.pop()
    return " ".join(words + [end])


PATTERN_LABELS = ("const gd = document.querySelector('#attn-pattern .js-plotly-plot');"
                  "return gd && gd._fullData && gd._fullData.length ? gd._fullData[0].x.join('|') : null;")


def clicked_until(driver, element, drawn: str, given: str) -> float:
    """Seconds, on the page's own clock, from clicking ``element`` to the animation frame after the
    JavaScript body ``drawn`` became true (``given``, the value of the JavaScript body ``given``
    just ahead of the click, is in scope): no webdriver round trip is counted. The condition is
    checked when the page's DOM changes (a MutationObserver), not by polling: a timer every few
    milliseconds, reading the figure's labels, took a core of the 2-core machine from the forward
    pass it was timing (and its garbage set off V8's major collections)."""
    return driver.execute_async_script(f"""
        const element = arguments[0], done = arguments[arguments.length - 1];
        const given = (function () {{ {given} }})();
        const drawn = function () {{ try {{ {drawn} }} catch (e) {{ return false; }} }};
        const start = performance.now();
        let finished = false;
        const observer = new MutationObserver(function () {{
            if (finished || !drawn()) return;
            finished = true;
            observer.disconnect();
            requestAnimationFrame(() => done((performance.now() - start) / 1000));
        }});
        observer.observe(document.body, {{childList: true, subtree: true, attributes: true}});
        element.click();
    """, element)


def enter_prompt(driver, text: str) -> None:
    """Put ``text`` in the prompt box as one input event and let the page settle: typing it key by key
    through webdriver left hundreds of keystrokes still being handled when Run was clicked, which a
    person's typing never does."""
    driver.execute_script("""
        const box = document.getElementById('prompt');
        Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, 'value').set.call(box, arguments[0]);
        box.dispatchEvent(new Event('input', {bubbles: true}));""", text)
    time.sleep(1.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from headscope.probes import load_model, run

    model = load_model(args.model, device="cpu")
    texts = [prompt(i, args.tokens, model) for i in range(args.repeats + 1)]
    n = [len(model.tokenize(t)) for t in texts]
    # the lens grid shows the last WINDOW positions, labelled "position: 'token'"
    lens_labels = ["|".join(f"{p}: {s!r}" for p, s in list(enumerate(model.tokenize(t).strings))[-WINDOW:])
                   for t in texts]
    assert len(set(lens_labels)) == len(texts), "each prompt must end differently, or the old lens would count"
    batch = model.batch([texts[0]])
    run(model, batch)
    bare = []
    for _ in range(5):
        start = time.perf_counter()
        run(model, batch)
        bare.append(time.perf_counter() - start)
    bare = statistics.median(bare)
    del model
    runs = Path(tempfile.mkdtemp()) / "runs"
    runs.mkdir()
    attention, lens = [], []
    with app_server(args.model, runs) as base:
        driver = chrome()
        page = Page(driver, base)
        page.open(f"?model={args.model}")
        driver.set_script_timeout(120)
        for i, text in enumerate(texts):
            page.tab("Attention")
            page.wait(lambda: page.figure("attn-pattern"), timeout=120)
            enter_prompt(driver, text)
            # drawn: the large pattern shows the new prompt's tokens, and the grid is there
            attention_s = clicked_until(driver, page.find("prompt-run"), f"""
                const gd = document.querySelector('#attn-pattern .js-plotly-plot');
                return gd && gd._fullData && gd._fullData.length && gd._fullData[0].x.join('|') !== given
                    && gd._fullData[0].z.length && gd._fullData[0].z[0].length === {n[i]}
                    && document.querySelector('#attn-grid .js-plotly-plot')._fullData.length;""",
                                          given=PATTERN_LABELS)
            lens_s = clicked_until(driver, page.d.find_element(
                "xpath", "//div[contains(@class, 'tab') and normalize-space()='Lens']"), """
                const gd = document.querySelector('#lens-grid .js-plotly-plot');
                return gd && gd._fullData && gd._fullData.length && gd._fullData[0].x.join('|') === given;""",
                                   given=f"return {json.dumps(lens_labels[i])};")
            if i:  # the first round warms the browser and the app up
                attention.append(attention_s)
                lens.append(lens_s)
        driver.quit()
    a, b = statistics.median(attention), statistics.median(lens)
    print(f"{args.model}, {statistics.median(n[1:]):.0f}-token prompts, median of {args.repeats}: submit -> attention "
          f"view drawn {a:.2f} s; lens tab -> lens drawn {b:.2f} s; together {a + b:.2f} s "
          f"(goals: attention under 1 s, both under 2 s); bare forward {bare * 1000:.0f} ms, attention view / bare forward = {a / bare:.0f}")


if __name__ == "__main__":
    main()
