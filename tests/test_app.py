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
from headscope.app.views.circuit import found_circuit
from headscope.app.views.runs import find_runs
from headscope.circuits.edges import find_circuit
from headscope.circuits.steering import hydra
from headscope.probes import load_model, load_result
from headscope.probes.readouts.lens import logit_lens

from browser import Page, app_server, chrome, status
from test_ablation import records

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
    (arith / "meta.json").write_text(json.dumps({"kind": "arithmetic-heads", "model": "random:llama",
                                                 "interval": {"method": "student-t", "level": 0.95, "n": 8}}))
    prompts = root.parent / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p, "target": " mill"}) + "\n" for p in (PROMPT, "the old mill")))
    head_report([model], [prompts], root / "report", chunk_size=1, progress=False)
    hydra(model, records(model), components=("head",), progress=False).save(root / "hydra")
    find_circuit(model, records(model), edges=30, seeds=2).save(root / "circuit")
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
    marked = page.d.find_elements("css selector", "#tokens .token.selected")
    assert [m.get_attribute("data-index") for m in marked] == ["4"]
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
    # a prompt run while another tab is open reaches the attention view when its tab opens again
    page.tab("Lens")
    other = "the old mill"
    m = len(load_model("random:llama").tokenize(other))
    page.type("prompt", other)
    page.click("prompt-run")
    page.wait(lambda: token_count(page) == m and page.figure("lens-grid"), what="the new prompt's lens")
    page.tab("Attention")
    page.wait(lambda: (f := page.figure("attn-pattern")) and f[0]["cols"] == m, what="the new prompt's pattern")


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
    page.choose("heads-score", "self-repair on this prompt")
    page.wait(lambda: "self-repair" in page.figure("heads-map")[0]["title"], what="the self-repair map")


def test_heads_map_of_a_hydra_run(page, runs):
    page.open("?model=random:llama&tab=heads")
    page.choose("heads-score", "run hydra: self_repair")
    page.wait(lambda: "self_repair" in page.figure("heads-map")[0]["title"], what="the saved self-repair map")
    z = page.d.execute_script("const gd = document.querySelector('#heads-map .js-plotly-plot');"
                              "return Array.from(gd._fullData[0].z, row => Array.from(row));")
    saved = pd.read_parquet(runs / "hydra" / "heads.parquet").set_index(["layer", "head"])["self_repair"]
    assert [z[l][h] for l in range(4) for h in range(4)] == pytest.approx(
        [saved[(l, h)] for l in range(4) for h in range(4)], abs=1e-6)


def test_steer_shows_steered_and_unsteered_as_they_are_made(page, runs):
    page.open("?model=random:llama&tab=steer&prompt=the+river+runs+past+the&steer_tokens=120&strength=8")
    page.click("steer-run")
    partial = []

    def done():  # while the job runs, the texts so far are in the page
        running = page.find("steer-cancel").get_attribute("disabled") is None
        steered = page.text("steer-steered")
        if running and steered:
            partial.append(len(steered))
        return not running and "unsteered" in page.text("steer-score") and steered

    page.wait(done, what="the steered generation", timeout=120)
    assert partial, "no text appeared before the generation ended"
    steered, clean = page.text("steer-steered"), page.text("steer-clean")
    assert steered != clean and len(steered) > partial[0]
    assert "logit difference ' great' - ' terrible'" in page.text("steer-score")
    assert "strength=8" in page.d.current_url and "tab=steer" in page.d.current_url
    page.shot("steer")
    # the vector saves as a run, and steers again from there
    page.type("steer-run-name", "sentiment-vector")
    page.click("steer-save")
    page.wait(lambda: (runs / "sentiment-vector" / "vector.safetensors").is_file(), what="the saved vector")
    page.d.refresh()
    page.wait(lambda: page.find("steer-run"), what="the page again")
    page.choose("steer-source", "saved run sentiment-vector")
    page.click("steer-run")
    page.wait(lambda: page.find("steer-cancel").get_attribute("disabled") and page.text("steer-steered") == steered,
              what="the same steered text from the saved vector")
    # a pair line with one side missing is one message in the page
    page.choose("steer-source", "the pairs below")
    page.type("steer-pairs", "good | bad\nonly one side")
    page.click("steer-run")
    page.wait(lambda: "pair line 2" in " ".join(page.errors()), what="the pair line's message")


def click_a_head(page) -> None:
    """Click a head of the circuit graph (not L0H0, the selected one) and wait for it in the URL."""
    from selenium.webdriver.common.action_chains import ActionChains

    positions = ("const cy = document.getElementById('circuit-graph')._cyreg.cy;"
                 "return cy.nodes().map(n => [n.id(), n.renderedPosition('x'), n.renderedPosition('y')]);")

    def settled():  # the graph fits the viewport after its elements arrive: wait until nodes stop moving
        first = page.d.execute_script(positions)
        time.sleep(0.5)
        return first if first and first == page.d.execute_script(positions) else None

    box = page.find("circuit-graph")
    for attempt in range(3):  # a redraw (the composition a link to the tab computes) can swallow a click
        name, x, y = next(n for n in page.wait(settled, what="nodes drawn") if n[0].startswith("L") and n[0] != "L0H0")
        ActionChains(page.d).move_to_element_with_offset(box, x - box.size["width"] / 2,
                                                         y - box.size["height"] / 2).click().perform()
        layer, head = name[1:].split("H")
        try:
            page.wait(lambda: f"layer={layer}&head={head}" in page.d.current_url, timeout=10,
                      what=f"{name} selected in the URL")
            return
        except AssertionError:
            if attempt == 2:
                raise


def test_circuit_graph_selects_heads(page):
    page.open("?model=random:llama&layer=0&head=0")
    page.tab("Circuit")
    page.wait(lambda: "press 'Compute composition'" in page.text("circuit-summary"), what="the circuit prompt")
    page.type("circuit-min-z", "0", submit=True)
    page.wait(lambda: "min_z=0" in page.d.current_url, what="the threshold in the URL")
    page.click("circuit-run")
    summary = page.wait(lambda: "edges between" in page.text("circuit-summary") and page.text("circuit-summary"),
                        what="the composition graph")
    assert summary.startswith("80 edges")  # the max-edges default; every pair of a random model passes z >= 0
    click_a_head(page)
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
    # the link to this view computes the graph again, with the same threshold and node sizes
    url = page.d.current_url
    page.d.get("about:blank")
    page.d.get(url.replace("min_z=1000", "min_z=0"))
    page.wait(lambda: page.text("circuit-summary").startswith("80 edges"), what="the linked graph computed")
    nodes = page.wait(lambda: (n := page.d.execute_script(sizes)) and all(v is not None for *_, v in n) and n,
                      what="node sizes from the link")
    assert all(v == arith_effect(l, h, "add", "zero") for l, h, v in nodes)


def test_a_saved_circuit_is_drawn_from_its_table(page, runs):
    """A circuit from data: the drawn edges are the saved table's top edges by |effect| on paths from the
    input to the logits, coloured by sign; layers run upward from the input to the logits; the summary
    reads the curve's faithfulness at that size; a head clicked is selected; the composition overlay
    states its overlap."""
    saved = load_result(runs / "circuit")
    page.open("?model=random:llama&tab=circuit&source=data&circuit_run=circuit&shown=25")
    drawn = ("const cy = document.getElementById('circuit-graph')._cyreg.cy;"
             "return [cy.edges().map(e => [e.data('source'), e.data('reader'), e.data('effect'), e.data('color'),"
             " e.hasClass('overlay')]), cy.nodes().map(n => [n.id(), n.position('y')]), cy.zoom()];")
    def settled():  # the graph fits the viewport after its elements arrive: wait until nodes stop moving
        first = page.d.execute_script(drawn)
        time.sleep(0.5)
        return first if first[0] and first == page.d.execute_script(drawn) else None

    edges, nodes, zoom = page.wait(settled, what="the circuit drawn")
    want = saved.shown(25)
    assert sorted((s, r) for s, r, *_ in edges) == sorted(zip(want["upstream"], want["downstream"]))
    effect = dict(zip(want["upstream"] + want["downstream"], want["effect"]))
    assert all(e == pytest.approx(effect[s + r]) and c == ("#c0392b" if e > 0 else "#2c7fb8")
               for s, r, e, c, _ in edges)
    y = {name: value for name, value, *_ in nodes}
    assert y["logits"] < min(v for n, v in y.items() if n != "logits")  # the logits on top, the input below all
    assert "input" not in y or y["input"] == max(y.values())
    assert 14 * zoom >= 10, zoom  # node labels (14 px) stay legible at the default zoom
    summary = page.text("circuit-summary")
    assert f"faithfulness at 25 edges {saved.faithfulness_at(25):.2f}" in summary and f"of {saved.meta['n_edges']}" \
        in summary
    click_a_head(page)
    page.shot("circuit-data")
    # fewer edges from a link that lays the composition graph over them (a link to the tab computes it)
    page.open("?model=random:llama&tab=circuit&source=data&circuit_run=circuit&shown=15&overlay=composition&min_z=0")
    page.wait(lambda: "Composition overlay (dashed): 80 edges" in page.text("circuit-summary"), what="the overlay")
    edges, *_ = page.wait(settled, what="the circuit with its overlay")
    assert 0 < len([e for e in edges if not e[4]]) == len(saved.shown(15)) and len([e for e in edges if e[4]]) == 80
    # no saved circuit chosen: find one for a shipped set in the background, the same as found_circuit here
    # (greater-than: the random model's tokenizer splits IOI's names, so their logit difference is 0)
    page.open("?model=random:llama&tab=circuit&source=data&find_set=greater-than&shown=30")
    page.wait(lambda: "press 'Find a circuit'" in page.text("circuit-summary"), what="the request to find one")
    page.click("circuit-find-run")
    page.wait(lambda: "found in the background for greater-than" in page.text("circuit-summary"),
              what="the found circuit")
    found = found_circuit(load_model("random:llama"), "greater-than").shown(30)
    edges, *_ = page.wait(settled, what="the found circuit drawn")
    assert sorted((s, r) for s, r, *_ in edges) == sorted(zip(found["upstream"], found["downstream"]))


def test_heads_map_of_a_saved_run_per_operation_and_mode(page):
    page.open("?model=random:llama&tab=heads")
    page.choose("heads-score", "run arith: effect (op=mul, mode=mean)")
    page.wait(lambda: "op=mul, mode=mean" in page.figure("heads-map")[0]["title"], what="the mul / mean map")
    assert "[intervals: 95% student-t, n = 8]" in page.figure("heads-map")[0]["title"]  # as the run's meta.json says
    z = page.d.execute_script("const gd = document.querySelector('#heads-map .js-plotly-plot');"
                              "return Array.from(gd._fullData[0].z, row => Array.from(row));")
    assert [[z[l][h] for h in range(4)] for l in range(4)] == [[arith_effect(l, h, "mul", "mean") for h in range(4)]
                                                                for l in range(4)]


def test_saved_runs(page, runs):
    page.open("?model=random:llama&tab=runs")
    n = len(find_runs(runs))  # the fixture's, and what earlier tests saved
    page.wait(lambda: f"{n} runs" in page.text("runs-root"), what="the runs listed")
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
    page.wait(lambda: f"{n + 1} runs" in page.text("runs-root"), what="the new run listed")
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


CONTROLS = {"Attention": {"attn-compare": "text"}, "Lens": {"lens-target": "box", "lens-kind": "checked",
                                                             "lens-color": "checked"},
            "Causal trace": {"trace-subject": "box", "trace-target": "box", "trace-samples": "box"},
            "Heads": {"heads-target": "box", "heads-score": "text"},
            "Circuit": {"circuit-source": "checked", "circuit-overlay": "checked", "circuit-kinds": "checked",
                        "circuit-min-z": "box", "circuit-max-edges": "box", "circuit-importance": "text"},
            "Steer": {"steer-source": "text", "steer-method": "text", "steer-layer": "box", "steer-strength": "box",
                      "steer-target": "box", "steer-foil": "box", "steer-tokens": "box", "steer-pairs": "box"}}


def control_values(page) -> dict:
    """What every view's controls show (a tab's controls are in the page only while it is open)."""
    out = {}
    for tab, controls in CONTROLS.items():
        page.tab(tab)
        page.wait(lambda: all(page.d.execute_script("return !!document.getElementById(arguments[0])", c)
                              for c in controls), what=f"the {tab} controls")
        time.sleep(0.3)
        out.update(page.d.execute_script("""
            const out = {};
            for (const [id, how] of Object.entries(arguments[0])) {
                const el = document.getElementById(id);
                out[id] = how === 'box' ? el.value : how === 'text' ? el.innerText.trim()
                    : Array.from(el.querySelectorAll('input:checked'), i => i.value);
            }
            return out;""", controls))
    return out


def test_a_shared_link_restores_every_control(page):
    from selenium.webdriver.common.by import By

    page.open("?model=random:llama")
    page.choose("attn-compare", "H2")
    page.tab("Lens")
    page.type("lens-target", " mill", submit=True)
    page.d.find_element(By.XPATH, "//*[@id='lens-color']//label[contains(., 'target probability')]").click()
    page.tab("Causal trace")
    page.type("trace-subject", "Eiffel")
    page.type("trace-target", " Paris", submit=True)
    page.type("trace-samples", "3")
    page.tab("Circuit")
    page.d.find_element(By.XPATH, "//*[@id='circuit-kinds']//label[contains(., 'v')]").click()
    page.type("circuit-max-edges", "7", submit=True)
    page.choose("circuit-importance", "run arith: effect (op=mul, mode=zero)")
    page.tab("Steer")
    page.choose("steer-method", "icv")
    page.type("steer-strength", "2.5")
    page.type("steer-layer", "1")
    page.type("steer-target", " good", submit=True)
    page.type("steer-pairs", "fine | awful")
    page.tab("Heads")
    page.type("heads-target", " old", submit=True)
    page.choose("heads-score", "detector: previous_token")
    page.wait(lambda: "score=previous_token" in page.d.current_url, what="the last control in the URL")
    url = page.d.current_url
    shown = control_values(page)
    for part in ("compare=2", "lens_target=+mill", "lens_color=target_prob", "subject=Eiffel", "trace_target=+Paris",
                 "samples=3", "kinds=q%2Ck", "max_edges=7", "node_size=", "heads_target=+old", "tab=heads",
                 "method=icv", "strength=2.5", "steer_layer=1", "steer_target=+good", "pairs=fine+%7C+awful"):
        assert part in url, (part, url)
    page.d.get("about:blank")
    page.d.get(url)
    page.wait(lambda: page.figure("heads-map") and "previous_token" in page.figure("heads-map")[0]["title"],
              what="the linked head map")
    assert control_values(page) == shown
    assert page.d.current_url.replace("tab=steer", "tab=heads") == url  # visiting the tabs changed nothing else
    assert shown["trace-subject"] == "Eiffel" and shown["circuit-kinds"] == ["q", "k"]
    assert "op=mul, mode=zero" in shown["circuit-importance"] and shown["attn-compare"] == "H2"
    assert shown["steer-method"] == "icv" and shown["steer-pairs"] == "fine | awful"


def test_a_link_to_choices_that_do_not_exist_drops_them(page):
    # a deleted run and a head the model lacks: the real options replace the stand-ins and the link's
    # other choices stay
    from urllib.parse import quote

    gone = quote(json.dumps({"run": "gone", "column": "effect", "where": {}}))
    page.open(f"?model=random:llama&tab=circuit&compare=2,9&node_size={gone}&max_edges=7")
    page.wait(lambda: page.find("circuit-max-edges").get_attribute("value") == "7", what="the linked view")
    page.wait(lambda: "node_size" not in page.d.current_url, what=f"the missing run dropped: {page.d.current_url}")
    page.tab("Attention")  # a tab's controls are in the page only while it is open
    page.wait(lambda: "compare=2&" in page.d.current_url + "&", what=f"head 9 dropped: {page.d.current_url}")
    assert "max_edges=7" in page.d.current_url and page.text("attn-compare") == "H2"


def test_a_link_to_a_trace_computes_it(page):
    page.open("?model=random:llama&prompt=The+Eiffel+Tower+is+located+in+the+city+of&tab=trace&subject=Eiffel+Tower"
              "&samples=2")
    trace = page.wait(lambda: (f := page.figure("trace-graph")) and len(f) == 3 and f, what="the linked trace")
    assert {t["type"] for t in trace} == {"heatmap"} and page.find("trace-subject").get_attribute("value") == \
        "Eiffel Tower"


def test_enter_runs_the_prompt_and_shift_enter_breaks_the_line(page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    page.open("?model=random:llama")
    box = page.find("prompt")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("A small cat" + Keys.ENTER)
    n = len(load_model("random:llama").tokenize("A small cat"))
    page.wait(lambda: "prompt=A+small+cat&" in page.d.current_url and token_count(page) == n, what="the prompt run")
    assert box.get_attribute("value") == "A small cat"  # no line break was added
    ActionChains(page.d).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).send_keys("sat").perform()
    assert box.get_attribute("value") == "A small cat\nsat"
    time.sleep(1)
    assert "prompt=A+small+cat&" in page.d.current_url  # a line break runs nothing
    box.send_keys(Keys.ENTER)
    page.wait(lambda: "prompt=A+small+cat%0Asat&" in page.d.current_url, what="the two-line prompt run")


def test_save_and_download_what_a_view_shows(page, runs, tmp_path):
    import hashlib

    from headscope.probes import load_result

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    page.d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    page.open("?model=random:llama&tab=lens&lens_target=+mill")
    page.wait(lambda: page.figure("lens-grid"), what="the lens grid")
    page.type("lens-run-name", "my-lens")
    page.click("lens-save")
    page.wait(lambda: "saved as run 'my-lens'" in page.text("lens-saved"), what="the run saved")
    saved = load_result(runs / "my-lens")
    assert saved.meta["target"] == " mill" and saved.meta["prompt"] == page.find("prompt").get_attribute("value")
    files = {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in (runs / "my-lens").iterdir()}
    page.click("lens-save")  # the same name again: refused, the saved run untouched
    page.wait(lambda: any("my-lens" in e and "exists" in e for e in page.errors()), what="the refusal")
    assert {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in (runs / "my-lens").iterdir()} == files
    for kind in ("parquet", "json", "html", "svg", "png"):
        page.click(f"lens-download-{kind}")
        page.wait(lambda: [f for f in downloads.iterdir() if f.suffix == f".{kind}"], what=f"the {kind} download")
    time.sleep(0.5)  # let the last one finish writing
    got = {f.suffix: f for f in downloads.iterdir()}
    pd.testing.assert_frame_equal(pd.read_parquet(got[".parquet"]), saved.frame)
    as_json = json.loads(got[".json"].read_text())
    assert as_json["meta"]["target"] == " mill" and len(as_json["tables"]["lens"]) == len(saved.frame)
    assert "Plotly.newPlot" in got[".html"].read_text() and got[".svg"].read_text().startswith("<svg")
    assert got[".png"].read_bytes()[:4] == b"\x89PNG"
    # the saved run opens in the Runs tab
    page.tab("Runs")
    page.choose("runs-list", "my-lens")
    page.wait(lambda: page.figure("runs-graph"), what="the saved run drawn")
    assert "run=my-lens" in page.d.current_url


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
        done, total, desc = status(base)["progress"]  # the load was heard step by step
        assert desc == "Loading weights" and done == total > 100
    assert errors == [], errors
