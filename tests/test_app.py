"""The dashboard, end to end in headless Chromium: prompt and token strip, attention grid and pattern,
lens, causal trace (progress and cancel), heads, saved runs, shared URLs, bad input, and no console
errors. One app on a tiny random model and one on the default model."""

import json
import shutil
import time
import urllib.error
import urllib.request

import pandas as pd
import pytest

from headscope import head_report
from headscope.probes import load_model
from headscope.probes.readouts.lens import logit_lens

from browser import Page, app_server, chrome

PROMPT = "the river runs past the old mill and the river runs on"


def arith_effect(layer, head, op, mode):
    return (10 * layer + head) * (1 if op == "add" else -1) + (0.5 if mode == "mean" else 0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("app") / "runs"
    model = load_model("random:llama")
    logit_lens(model, PROMPT).save(root / "lenses" / "river")
    (root / "broken").mkdir()
    (root / "broken" / "meta.json").write_text("{not json")
    # an arithmetic run's head table: one effect per (operation, mode), which the heads view must not mix
    arith = root / "arith"
    arith.mkdir()
    rows = [{"layer": l, "head": h, "op": op, "mode": mode, "effect": arith_effect(l, h, op, mode)}
            for l in range(4) for h in range(4) for op in ("add", "mul") for mode in ("zero", "mean")]
    pd.DataFrame(rows).to_parquet(arith / "heads.parquet", index=False)
    (arith / "meta.json").write_text(json.dumps({"kind": "arithmetic-heads", "model": "random:llama"}))
    prompts = root.parent / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p, "target": " mill"}) + "\n" for p in (PROMPT, "the old mill")))
    head_report([model], [prompts], root / "report", chunk_size=1, progress=False)
    return root


@pytest.fixture(scope="module")
def tiny_app(runs):
    with app_server("random:llama", runs) as base:
        yield base


@pytest.fixture(scope="module")
def driver():
    d = chrome()
    yield d
    d.quit()


@pytest.fixture
def page(driver, tiny_app):
    page = Page(driver, tiny_app)
    yield page
    errors = page.console_errors()
    assert errors == [], errors


def token_count(page) -> int:
    return len(page.d.find_elements("css selector", "#tokens .token"))


def test_prompt_attention_and_shared_url(page):
    page.open("?model=random:llama")
    page.type("prompt", PROMPT)
    page.click("prompt-run")
    n = len(load_model("random:llama").tokenize(PROMPT))
    page.wait(lambda: token_count(page) == n, what=f"{n} tokens in the strip")
    grid = page.wait(lambda: page.figure("attn-grid"), what="the head grid")
    assert grid[0]["type"] == "heatmap"
    # click head L2H1 in the grid: the large pattern follows, with every token on both axes
    page.click_plot("attn-grid", 1.4, 2.4)  # head h's tile spans x in [h, h + 1), layer l's y in [l, l + 1)
    pattern = page.wait(lambda: (f := page.figure("attn-pattern")) and "L2H1" in f[0]["title"] and f,
                        what="L2H1's pattern")
    assert pattern[0]["rows"] == n and pattern[0]["cols"] == n
    assert "layer=2" in page.d.current_url and "head=1" in page.d.current_url
    # a token of the strip picks the destination of the per-token view
    page.d.find_elements("css selector", "#tokens .token")[4].click()
    page.wait(lambda: "dest=4" in page.d.current_url, what="dest in the URL")
    token_view = page.wait(lambda: (f := page.figure("attn-token")) and "4:" in f[0]["title"] and f,
                           what="the per-token view")
    assert token_view[0]["x"] == n
    page.shot("attention")
    # the lens tab, then reload the shared URL: the same prompt, head and tab come back
    page.tab("Lens")
    lens = page.wait(lambda: page.figure("lens-grid"), what="the lens grid")
    assert lens[0]["rows"] == 4 + 1  # embeddings and every block of random:llama
    assert page.figure("lens-trajectory")
    page.shot("lens")
    url = page.d.current_url
    assert "tab=lens" in url
    page.d.get("about:blank")
    page.d.get(url)
    page.wait(lambda: token_count(page) == n and page.figure("lens-grid"), what="the reopened lens view")
    assert page.find("prompt").get_attribute("value") == PROMPT
    page.tab("Attention")
    pattern = page.wait(lambda: (f := page.figure("attn-pattern")) and "L2H1" in f[0]["title"] and f)
    assert pattern[0]["cols"] == n


def test_causal_trace_and_heads(page):
    page.open("?model=random:llama&prompt=The+Eiffel+Tower+is+located+in+the+city+of&tab=trace")
    page.type("trace-subject", "Eiffel Tower")
    page.click("trace-run")
    trace = page.wait(lambda: (f := page.figure("trace-graph")) and len(f) == 3 and f, what="three trace heatmaps")
    assert {t["type"] for t in trace} == {"heatmap"}
    assert "clean p" in page.text("trace-error")
    page.shot("trace")
    page.tab("Heads")
    heads = page.wait(lambda: page.figure("heads-map"), what="the head map")
    assert heads[0]["rows"] == 4 and heads[0]["cols"] == 4
    page.click_plot("heads-map", "H3", 1)
    page.wait(lambda: "L1H3" in page.text("heads-detail"), what="the head's detail")
    assert "direct logit attribution" in page.text("heads-detail") and "zero-ablated" in page.text("heads-detail")
    page.click("heads-run")
    page.wait(lambda: not page.find("heads-run").get_attribute("disabled") and page.text("heads-label"))
    page.choose("heads-score", "ablation effect")
    page.wait(lambda: "ablation effect" in page.figure("heads-map")[0]["title"], what="the ablation map")
    page.shot("heads")


def test_circuit_graph_selects_heads(page):
    from selenium.webdriver.common.action_chains import ActionChains

    page.open("?model=random:llama&tab=circuit&layer=0&head=0")
    page.wait(lambda: "press 'Compute composition'" in page.text("circuit-summary"), what="the circuit prompt")
    page.type("circuit-min-z", "0", submit=True)
    page.click("circuit-run")
    summary = page.wait(lambda: "edges between" in page.text("circuit-summary") and page.text("circuit-summary"),
                        what="the composition graph")
    assert summary.startswith("80 edges")  # the max-edges default; every pair of a random model passes z >= 0
    positions = ("const cy = document.getElementById('circuit-graph')._cyreg.cy;"
                 "return cy.nodes().map(n => [n.id(), n.renderedPosition('x'), n.renderedPosition('y')]);")

    def settled():  # the graph fits the viewport after its elements arrive: wait until nodes stop moving
        first = page.d.execute_script(positions)
        time.sleep(0.5)
        return first if first and first == page.d.execute_script(positions) else None

    box = page.find("circuit-graph")
    for attempt in range(3):
        name, x, y = next(n for n in page.wait(settled, what="nodes drawn") if n[0] != "L0H0")
        ActionChains(page.d).move_to_element_with_offset(box, x - box.size["width"] / 2,
                                                         y - box.size["height"] / 2).click().perform()
        layer, head = name[1:].split("H")
        try:
            page.wait(lambda: f"layer={layer}&head={head}" in page.d.current_url, timeout=10,
                      what=f"{name} selected in the URL")
            break
        except AssertionError:
            if attempt == 2:
                raise
    # nodes sized by a saved run's score, one operation and mode of it
    page.choose("circuit-importance", "run arith: effect (op=add, mode=zero)")
    sizes = ("const cy = document.getElementById('circuit-graph')._cyreg.cy;"
             "return cy.nodes().map(n => [n.data('layer'), n.data('head'), n.data('importance')]);")
    nodes = page.wait(lambda: (n := page.d.execute_script(sizes)) and all(v is not None for *_, v in n) and n,
                      what="node sizes from the saved run")
    assert all(v == arith_effect(l, h, "add", "zero") for l, h, v in nodes)
    page.shot("circuit")
    page.type("circuit-min-z", "1000", submit=True)
    page.wait(lambda: page.text("circuit-summary").startswith("0 edges"), what="no edge above z 1000")


def test_heads_map_of_a_saved_run_per_operation_and_mode(page):
    page.open("?model=random:llama&tab=heads")
    page.choose("heads-score", "run arith: effect (op=mul, mode=mean)")
    page.wait(lambda: "op=mul, mode=mean" in page.figure("heads-map")[0]["title"], what="the mul / mean map")
    z = page.d.execute_script("const gd = document.querySelector('#heads-map .js-plotly-plot');"
                              "return Array.from(gd._fullData[0].z, row => Array.from(row));")
    assert [[z[l][h] for h in range(4)] for l in range(4)] == [[arith_effect(l, h, "mul", "mean") for h in range(4)]
                                                                for l in range(4)]


def test_saved_runs(page, runs):
    page.open("?model=random:llama&tab=runs")
    page.wait(lambda: "4 runs" in page.text("runs-root"), what="the runs listed")
    page.choose("runs-list", "lenses/river")
    figure = page.wait(lambda: page.figure("runs-graph"), what="the saved lens drawn")
    assert figure[0]["type"] == "heatmap"
    link = page.d.find_element("link text", "lens.parquet").get_attribute("href")
    with urllib.request.urlopen(link) as response:
        assert response.read(4) == b"PAR1"
    page.shot("runs")
    page.choose("runs-list", "report")  # a head report is a result like any other
    figure = page.wait(lambda: (f := page.figure("runs-graph")) and "ablation" in str(f[0]["title"]) and f,
                       what="the head report drawn")
    saved = pd.read_parquet(runs / "report" / "heads.parquet")
    assert figure[0]["type"] == "heatmap" and (figure[0]["rows"], figure[0]["cols"]) == (
        saved["layer"].nunique(), saved["head"].nunique())
    page.choose("runs-list", "broken")
    page.wait(lambda: any("corrupt" in e or "not valid JSON" in e for e in page.errors()), what="a corrupt-run message")
    # a run deleted after the listing was drawn
    shutil.copytree(runs / "lenses" / "river", runs / "gone")
    page.click("runs-refresh")
    page.wait(lambda: "5 runs" in page.text("runs-root"), what="the new run listed")
    shutil.rmtree(runs / "gone")
    page.choose("runs-list", "gone")
    page.wait(lambda: any("'gone' is not under the runs directory" in e for e in page.errors()),
              what="a missing-run message")
    for bad in ("/runs-file/lenses/river/../../../etc/passwd", "/runs-file/lenses/river/meta.json/../x",
                "/runs-file/..%2F..%2Fetc/passwd", "/runs-file/lenses/river/.hidden.json"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(page.base + bad)
        assert err.value.code == 404


def test_bad_input_shows_messages_and_the_app_keeps_working(page):
    page.open("?model=random:llama")
    page.type("prompt", "   ")
    page.click("prompt-run")
    page.wait(lambda: any("empty prompt" in e for e in page.errors()), what="the empty-prompt message")
    page.type("prompt", "word " * 600)
    page.click("prompt-run")
    page.wait(lambda: any("over this model's context" in e for e in page.errors()), what="the context message")
    page.tab("Causal trace")
    page.type("prompt", "A small cat walks to the market")
    page.click("prompt-run")
    page.type("trace-subject", "dog")
    page.click("trace-run")
    page.wait(lambda: any("subject 'dog' not found" in e for e in page.errors()), what="the subject message")
    page.type("model-spec", "no-such-model", submit=True)
    page.wait(lambda: "could not load 'no-such-model'" in page.text("model-status"), what="the model message")
    assert "still using random:llama" in page.text("model-status")
    page.tab("Attention")
    page.wait(lambda: page.figure("attn-pattern") and token_count(page) == 7, what="the app still working")
    page.shot("bad-input")


def test_default_model_in_the_browser(driver, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    with app_server("default", runs) as base:
        page = Page(driver, base)
        page.open("")
        page.wait(lambda: "L" in (page.figure("attn-pattern") or [{}])[0].get("title", ""), what="the pattern")
        n = token_count(page)
        assert page.figure("attn-pattern")[0]["cols"] == n == 10
        page.tab("Lens")
        page.type("lens-target", " Paris", submit=True)
        page.wait(lambda: (f := page.figure("lens-grid")) and f[0]["rows"] == 31, what="31 lens layers")
        page.shot("default-lens")
        # a long trace can be cancelled: the button comes back and no figure appears
        page.tab("Causal trace")
        page.type("trace-subject", "The Eiffel Tower")
        page.type("trace-samples", "50")
        page.click("trace-run")
        page.wait(lambda: not page.find("trace-cancel").get_attribute("disabled"), what="the cancel button")
        page.wait(lambda: page.find("trace-progress").get_attribute("value") not in (None, "0"), what="progress")
        page.click("trace-cancel")
        page.wait(lambda: not page.find("trace-run").get_attribute("disabled"), what="the run button back")
        assert not page.figure("trace-graph")
        errors = page.console_errors()
    assert errors == [], errors
