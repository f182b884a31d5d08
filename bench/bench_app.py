"""Dashboard latency through a real browser: submit a ~200-token prompt and time until the attention
view (head grid and the large pattern with every token) is drawn, then switch to the lens tab and
time until its grid is drawn. Measured after the model is loaded, in Debian's headless Chromium;
each prompt is new to the app (nothing memoised). Also the bare forward of the same prompt, for the
ratio.

python bench/bench_app.py [--model default] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from browser import Page, app_server, chrome  # noqa: E402

SENTENCES = ["The old mill stands by the river, where the water turns the wheel all day.",
             "The miller sells flour to the village and the bakers make bread before dawn.",
             "In the evening the children walk home along the bank and count the boats.",
             "A heron waits in the reeds while the light fades over the fields."]


def prompt(i: int, tokens: int, model) -> str:
    """A prompt of ``tokens`` tokens, different for each ``i``."""
    words, k = [f"Story {i}:"], i
    while len(model.tokenize(" ".join(words))) < tokens:
        words += SENTENCES[k % len(SENTENCES)].split()
        k += 1
    while len(model.tokenize(" ".join(words))) > tokens:
        words.pop()
    return " ".join(words)


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
    batch = model.batch([texts[0]])
    run(model, batch)
    start = time.perf_counter()
    run(model, batch)
    bare = time.perf_counter() - start
    del model
    runs = Path(tempfile.mkdtemp()) / "runs"
    runs.mkdir()
    attention, lens = [], []
    with app_server(args.model, runs) as base:
        driver = chrome()
        page = Page(driver, base)
        page.open(f"?model={args.model}")
        def labels(graph: str) -> str:
            return str(driver.execute_script(
                "const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');"
                "return gd && gd._fullData && gd._fullData.length ? gd._fullData[0].x : null", graph))

        for i, text in enumerate(texts):
            page.tab("Attention")
            page.wait(lambda: page.figure("attn-pattern"), timeout=120)
            before = labels("attn-pattern"), labels("lens-grid")
            page.type("prompt", text)
            start = time.perf_counter()
            page.click("prompt-run")
            # drawn: the large pattern shows the new prompt's tokens (the grid is drawn by then too)
            page.wait(lambda: labels("attn-pattern") != before[0] and page.figure("attn-pattern")[0]["cols"] == n[i]
                      and page.figure("attn-grid"), timeout=120)
            middle = time.perf_counter()
            page.tab("Lens")
            page.wait(lambda: labels("lens-grid") not in (before[1], "None"), timeout=120)
            end = time.perf_counter()
            if i:  # the first round warms the browser and the app up
                attention.append(middle - start)
                lens.append(end - middle)
        driver.quit()
    a, b = statistics.median(attention), statistics.median(lens)
    print(f"{args.model}, {statistics.median(n[1:]):.0f}-token prompts, median of {args.repeats}: submit -> attention "
          f"view drawn {a:.2f} s; lens tab -> lens drawn {b:.2f} s; together {a + b:.2f} s "
          f"(goal: under 2 s); bare forward {bare * 1000:.0f} ms, attention view / bare forward = {a / bare:.0f}")


if __name__ == "__main__":
    main()
