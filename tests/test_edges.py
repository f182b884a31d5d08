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
