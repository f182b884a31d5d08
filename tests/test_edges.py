"""The edge graph of circuit discovery: its nodes, its edges, and their count against the reference's formula."""

import pytest

from headscope.circuits.edges import EdgeGraph
from headscope.probes import HeadscopeError, load_model


def reference_count(L, H):
    """hannamw/EAP-IG's count (one k and v input per query head): (3H+1)[L + (H+1)L(L-1)/2] + LH + 1 + L(H+1)."""
    return (3 * H + 1) * (L + (H + 1) * L * (L - 1) // 2) + L * H + 1 + L * (H + 1)


@pytest.mark.parametrize("L, H", [(12, 12), (30, 9), (4, 4)])
def test_without_grouped_heads_the_count_is_the_references(L, H):
    graph = EdgeGraph(L, H, H)
    assert graph.n_edges == len(graph.edges()) == reference_count(L, H)
    assert EdgeGraph(12, 12, 12).n_edges == 32491  # GPT-2 small, as the reference states


def test_grouped_keys_and_values_are_one_reader_per_key_value_head():
    graph, ungrouped = EdgeGraph(30, 9, 3), EdgeGraph(30, 9, 9)  # SmolLM2-135M
    assert graph.n_edges == 70651 and ungrouped.n_edges == 123211
    readers = {name for name, _ in graph.readers()}
    assert {"L0H2.k", "L0H2.v", "L29H8.q"} <= readers and "L0H3.k" not in readers
    assert "70,651 edges" in graph.describe() and "each shared by 3 query heads" in graph.describe()


def test_every_edge_runs_forward_and_each_reader_hears_everything_before_it():
    graph = EdgeGraph(3, 2, 1)
    edges = graph.edges()
    assert not edges.duplicated(["upstream", "downstream"]).any()
    assert (edges["upstream_layer"] < edges["downstream_layer"]).sum() + \
        ((edges["upstream_layer"] == edges["downstream_layer"]) & edges["downstream"].str.startswith("MLP")).sum() \
        == len(edges)
    heard = edges.groupby("downstream")["upstream"].apply(set)
    assert heard["L1H0.q"] == {"input", "L0H0", "L0H1", "MLP0"}
    assert heard["MLP1"] == heard["L1H0.q"] | {"L1H0", "L1H1"}  # the attention block runs first
    assert heard["logits"] == {name for name, _ in graph.writers()}
    parallel = EdgeGraph(3, 2, 1, parallel=True).edges().groupby("downstream")["upstream"].apply(set)
    assert parallel["MLP1"] == heard["L1H0.q"]  # attention and MLP read the same stream


def test_a_model_gives_its_graph_and_a_bad_shape_is_refused():
    model = load_model("random:llama")
    graph = EdgeGraph.of(model)
    assert (graph.n_layers, graph.n_heads, graph.n_kv_heads, graph.parallel) == \
        (model.n_layers, model.n_heads, model.n_kv_heads, False)
    with pytest.raises(HeadscopeError, match="n_kv_heads dividing n_heads"):
        EdgeGraph(2, 4, 3)


# -- edge attribution -------------------------------------------------------------------------------

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from headscope.circuits.edges.attribution import edge_attribution, exact_edge_effects, writer_outputs  # noqa: E402
from headscope.circuits.metrics import target_metric  # noqa: E402
from headscope.probes import Intervention, run  # noqa: E402
from headscope.probes.models import hooks  # noqa: E402
from test_ablation import records  # noqa: E402


def ids(model, recs, key):
    return torch.tensor([model.first_token(r[key], key)[0] for r in recs])


def moved_metric(model, recs, downstream: str, delta: torch.Tensor, alpha) -> torch.Tensor:
    """The metric of each prompt when only ``downstream``'s input moves by ``alpha * delta`` (a writer's
    corrupted-minus-clean output): a plain loop's one forward per edge, through the model's own norm modules."""
    batch = model.batch([r["prompt"] for r in recs])
    L, b = model.n_layers, len(recs)
    clean = run(model, batch, record=[hooks.resid_pre(l) for l in range(L)] + [hooks.resid_mid(l) for l in range(L)])
    if downstream == "logits":
        patch = Intervention.add(hooks.resid_post(L - 1), alpha * delta)
    elif downstream.startswith("MLP"):
        layer = int(downstream[3:])
        ln2, x = model.bridge.blocks[layer].ln2, clean.cache[hooks.resid_mid(layer)]
        patch = Intervention.apply(hooks.mlp_in(layer), lambda sel: sel + ln2(x + alpha * delta) - ln2(x))
    else:
        name, part = downstream.split(".")
        layer, head = (int(v) for v in name[1:].split("H"))
        ln1, x = model.bridge.blocks[layer].ln1, clean.cache[hooks.resid_pre(layer)]
        w = getattr(model.bridge, f"W_{part.upper()}")[layer, head].detach()
        patch = Intervention.apply(getattr(hooks, part)(layer),
                                   lambda sel: sel + (ln1(x + alpha * delta) - ln1(x)) @ w,
                                   heads=torch.full((b,), head))
    out = run(model, batch, [patch], grad=isinstance(alpha, torch.Tensor), logits_at=batch.last)
    return target_metric(out.logits, "logit_diff", ids(model, recs, "target"), ids(model, recs, "foil"))


def edge_gradient(model, recs, downstream: str, delta: torch.Tensor) -> float:
    """d metric / d alpha at 0, summed over the prompts (``moved_metric``)."""
    alpha = torch.zeros((), requires_grad=True)
    return float(torch.autograd.grad(moved_metric(model, recs, downstream, delta, alpha).sum(), alpha)[0])


def deltas(model, recs):
    clean, corrupted = (model.batch([r[k] for r in recs]) for k in ("prompt", "corrupted"))
    return writer_outputs(model, corrupted) - writer_outputs(model, clean)


def post_attention_norm(model) -> bool:
    return any(getattr(block, "ln1_post", None) is not None for block in model.bridge.blocks)


def test_writers_add_up_to_the_residual_stream(tiny):
    """input + every head + every MLP (+ the output biases, which belong to no writer) is the last block's output."""
    if post_attention_norm(tiny):
        return  # Gemma: refused by edge attribution (the next test)
    batch = tiny.batch(records(tiny)[0]["prompt"].split("\n"))
    outs = writer_outputs(tiny, batch)
    assert outs.shape[0] == len(EdgeGraph.of(tiny).writers())
    final = run(tiny, batch, record=[hooks.resid_post(tiny.n_layers - 1)]).cache[hooks.resid_post(tiny.n_layers - 1)]
    biases = sum(block.attn.b_O.detach().float() for block in tiny.bridge.blocks
                 if getattr(block.attn, "b_O", None) is not None)
    torch.testing.assert_close(outs.sum(0) + biases, final.float(), rtol=1e-4, atol=1e-4)


def test_eap_equals_a_per_edge_autograd_loop(tiny):
    recs = records(tiny)
    if post_attention_norm(tiny):
        with pytest.raises(HeadscopeError, match="normalises each attention output"):
            edge_attribution(tiny, recs)
        return
    result = edge_attribution(tiny, recs)
    graph = EdgeGraph.of(tiny)
    assert len(result.frame) == graph.n_edges and result.meta["n_prompts"] == 3
    delta = deltas(tiny, recs)
    index = {name: i for i, (name, _) in enumerate(graph.writers())}
    last = tiny.n_layers - 1
    g = tiny.n_kv_heads - 1
    picked = [("input", "L0H1.q"), ("input", f"L1H{g}.k"), ("L0H2", f"L1H{g}.v"), ("L0H0", "MLP0"),
              ("MLP0", f"L{last}H0.q"), (f"L{last}H3", "logits"), ("input", "logits"), (f"MLP{last}", "logits")]
    frame = result.frame.set_index(["upstream", "downstream"])
    for up, down in picked:
        want = edge_gradient(tiny, recs, down, delta[index[up]])
        got = -frame.loc[(up, down), "effect"] * len(recs)  # effect: minus the score, averaged over the prompts
        assert got == pytest.approx(want, rel=1e-3, abs=1e-12), (up, down)  # GPT-2's random weights give tiny values


def test_eap_ig_is_the_mean_gradient_along_the_input_path_and_approaches_the_total_effect(tiny_llama):
    """The input's edges sum to the input's own attribution (every reader reads the input): with the
    gradient averaged over the reference's points it is the integrated gradient of the first block's
    input, computed here by a plain loop, and with many steps close to metric(clean) - metric(corrupted)."""
    model, recs = tiny_llama, records(tiny_llama)[:2]
    steps = 4
    result = edge_attribution(model, recs, method="eap-ig", steps=steps)
    summed = result.frame[result.frame["upstream"] == "input"]["effect"].sum() * len(recs)
    clean, corrupted = (model.batch([r[k] for r in recs]) for k in ("prompt", "corrupted"))
    first = [run(model, b, record=[hooks.resid_pre(0)]).cache[hooks.resid_pre(0)] for b in (clean, corrupted)]
    target, foil = ids(model, recs, "target"), ids(model, recs, "foil")

    def metric(start):
        out = run(model, clean, [Intervention.set(hooks.resid_pre(0), start)], grad=True, logits_at=clean.last)
        return target_metric(out.logits, "logit_diff", target, foil).sum()

    loop = 0.0
    for k in range(steps):
        start = (first[1] + k / steps * (first[0] - first[1])).detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(metric(start), start)
        loop += float(((first[0] - first[1]) * grad).sum()) / steps
    assert summed == pytest.approx(loop, rel=1e-3, abs=1e-6)
    many = edge_attribution(model, recs, method="eap-ig", steps=40)
    total = float(metric(first[0]) - metric(first[1]))
    near = many.frame[many.frame["upstream"] == "input"]["effect"].sum() * len(recs)
    assert abs(near - total) < 0.1 * abs(total) and abs(near - total) < abs(summed - total)


def test_exact_edge_patching_equals_one_forward_per_edge(tiny):
    recs = records(tiny)
    if post_attention_norm(tiny):
        return  # refused like edge attribution (its graph's head outputs are not defined)
    graph = EdgeGraph.of(tiny)
    edges = graph.edges()
    edges = edges.iloc[np.linspace(0, len(edges) - 1, 24).astype(int)]  # every kind of reader, early to late
    got = exact_edge_effects(tiny, recs, edges, batch_size=5)  # rows in several forwards
    delta, index = deltas(tiny, recs), {name: i for i, (name, _) in enumerate(graph.writers())}
    clean = moved_metric(tiny, recs, "logits", torch.zeros(()), 0.0)
    for row in got.itertuples():
        want = (clean - moved_metric(tiny, recs, row.downstream, delta[index[row.upstream]], 1.0)).mean()
        assert row.exact_effect == pytest.approx(float(want), rel=1e-3, abs=1e-7), (row.upstream, row.downstream)
    assert set(got["downstream"].str.split(".").str[-1]) >= {"q", "k", "v", "logits"}


def test_a_direct_edge_to_the_logits_is_the_readout_of_the_moved_final_stream(tiny_llama):
    from headscope.probes.readouts.decompose import decode

    model, recs = tiny_llama, records(tiny_llama)
    head = f"L{model.n_layers - 1}H1"
    got = exact_edge_effects(model, recs, pd.DataFrame({"upstream": [head], "downstream": ["logits"]}))
    index = [name for name, _ in EdgeGraph.of(model).writers()].index(head)
    delta = deltas(model, recs)[index]
    batch = model.batch([r["prompt"] for r in recs])
    final = run(model, batch, record=[hooks.resid_post(model.n_layers - 1)]).cache[hooks.resid_post(model.n_layers - 1)]
    last = final[torch.arange(len(recs)), batch.last]
    target, foil = ids(model, recs, "target"), ids(model, recs, "foil")
    by_hand = (target_metric(decode(model, last), "logit_diff", target, foil)
               - target_metric(decode(model, last + delta[torch.arange(len(recs)), batch.last]), "logit_diff", target,
                               foil)).mean()
    assert got["exact_effect"][0] == pytest.approx(float(by_hand), rel=1e-4)


@pytest.mark.parametrize("options, message", [
    ({"method": "acdc"}, "unknown method 'acdc'"),
    ({"method": "eap-ig", "steps": 0}, "steps must be a whole number of at least 1, not 0"),
    ({"metric": "logits"}, "unknown metric 'logits'"),
])
def test_bad_options_are_refused_before_any_work(tiny_llama, options, message):
    with pytest.raises(HeadscopeError, match=message):
        edge_attribution(tiny_llama, records(tiny_llama), **options)


def test_a_pair_that_is_not_an_edge_is_named(tiny_llama):
    with pytest.raises(HeadscopeError, match="MLP1 -> L0H0.q is not an edge"):
        exact_edge_effects(tiny_llama, records(tiny_llama),
                           pd.DataFrame({"upstream": ["MLP1"], "downstream": ["L0H0.q"]}))


def test_prompts_without_a_usable_corruption_or_foil_are_named(tiny_llama):
    good = records(tiny_llama)[0]
    with pytest.raises(HeadscopeError, match="prompt 1: corrupted prompt has .* tokens"):
        edge_attribution(tiny_llama, [good, {**good, "corrupted": good["corrupted"] + " and more words here"}])
    with pytest.raises(HeadscopeError, match="field 'foil' missing"):
        edge_attribution(tiny_llama, [{k: v for k, v in good.items() if k != "foil"}])
    with pytest.raises(HeadscopeError, match="field 'corrupted' missing"):
        edge_attribution(tiny_llama, [{k: v for k, v in good.items() if k != "corrupted"}], metric="logprob")
