"""Head composition: scores against TransformerLens's, the SVD components and their invariances, the
data-side channel test against zero ablation, the laundry-list task, the head graph, CLI and bad input."""

import json

import pandas as pd
import pytest
import torch

from headscope.circuits.heads.single_heads import head_ablation
from headscope.circuits.composition.channel_effects import channel_test, projection
from headscope.circuits.head_scores import head_scores
from headscope.circuits.composition.scores import (Composition, composition, pair_components, random_baseline,
                                            reader_factor, writer_svd)
from headscope.circuits.composition.weights import head_weights
from headscope.circuits.composition.laundry import laundry_prompts, laundry_task, usable_items
from headscope.probes import HeadscopeError, load_result
from transformer_lens.utilities import composition_scores

from test_loading import cli

RECORDS = [{"prompt": "When Mary and John went to the store, John gave a drink to", "target": " Mary",
            "foil": " John"},
           {"prompt": "The Eiffel Tower is located in the city of", "target": " Paris", "foil": " Rome"}]


def _tl_equal(model, result):
    for kind in ("q", "k", "v"):
        ref = model.bridge.all_composition_scores(kind.upper()).scores.float().cpu()
        f = result.frame[result.frame["kind"] == kind]
        want = ref[f["writer_layer"].values, f["writer_head"].values, f["reader_layer"].values, f["reader_head"].values]
        assert len(f) == sum(model.n_heads ** 2 * (model.n_layers - 1 - l) for l in range(model.n_layers))
        torch.testing.assert_close(torch.tensor(f["score"].values, dtype=torch.float32), want, atol=2e-6, rtol=1e-4)


def test_scores_equal_transformer_lens_on_random_models(tiny):
    _tl_equal(tiny, composition(tiny, fold_norm=False, top=2))


def test_scores_equal_transformer_lens_on_the_default_model(smol):
    result = composition(smol, fold_norm=False, top=3, components=2)
    # TransformerLens's all-pairs function needs ~10 GB here: its scorer on the bridge's OV and QK,
    # for two writer layers against every later layer
    ov, qk = smol.bridge.OV, smol.bridge.QK
    for kind, right in (("q", qk), ("k", qk.T), ("v", ov)):
        f = result.frame[result.frame["kind"] == kind]
        for layer in (14, 28):
            want = composition_scores(ov[layer], right[layer + 1:]).float().cpu()  # [H, later layers, H]
            mine = f[f["writer_layer"] == layer].sort_values(["writer_head", "reader_layer", "reader_head"])
            torch.testing.assert_close(torch.tensor(mine["score"].values, dtype=torch.float32), want.flatten(),
                                       atol=2e-6, rtol=1e-4)
    # what the default model shows, with the norm folded (the default)
    folded = composition(smol, "q", top=5, components=2)
    assert (folded.frame["z"] > 10).any()
    assert folded.frame["baseline"].iloc[0] == pytest.approx(smol.d_model ** -0.5, rel=0.1)


def test_components_sum_back_and_ignore_signs(tiny):
    w = head_weights(tiny)
    u, s, vh = writer_svd(w)
    for layer, head in [(0, 0), (tiny.n_layers - 1, tiny.n_heads - 1)]:
        rebuilt = torch.einsum("di,i,ie->de", u[layer, head], s[layer, head], vh[layer, head])
        torch.testing.assert_close(rebuilt, w.ov(layer, head), atol=1e-5, rtol=1e-4)
    f = reader_factor(w, "k")
    c = pair_components((u, s, vh), f, (0, 1), (1, 0))
    flipped = (u, s, vh * torch.where(torch.arange(tiny.d_head, device=vh.device) % 2 == 0, -1.0, 1.0)[None, None, :, None])
    assert torch.allclose(pair_components(flipped, f, (0, 1), (1, 0)), c)
    # components by brute force: c_i = s_i |v_i^T QK_r|_F / (|OV|_F |QK_r|_F), and their squares add up
    qk_t = w.qk(1, 0).T
    brute = torch.stack([(s[0, 1, i] * vh[0, 1, i] @ qk_t).norm() for i in range(tiny.d_head)])
    brute = brute / w.ov(0, 1).norm() / qk_t.norm()
    torch.testing.assert_close(c, brute, atol=1e-6, rtol=1e-4)
    whole = (w.ov(0, 1) @ qk_t).norm() / w.ov(0, 1).norm() / qk_t.norm()
    assert c.pow(2).sum().sqrt().item() == pytest.approx(whole.item(), rel=1e-4)


def test_folding_the_norm_weight(tiny_llama):
    raw, folded = head_weights(tiny_llama, fold_norm=False), head_weights(tiny_llama)
    weight = tiny_llama.bridge.blocks[2].ln1.weight.detach().float()
    torch.testing.assert_close(folded.W_Q[2], weight[:, None] * raw.W_Q[2])
    # grouped-query attention: each query head gets its group's keys
    group = tiny_llama.n_heads // tiny_llama.n_kv_heads
    assert torch.equal(raw.W_K[1, 0], raw.W_K[1, group - 1]) and not torch.equal(raw.W_K[1, 0], raw.W_K[1, group])


def test_random_baseline_matches_shapes(tiny_llama):
    mean, std = random_baseline(tiny_llama, "q", n_random=32)
    assert mean == pytest.approx(tiny_llama.d_model ** -0.5, rel=0.1) and 0 < std < mean / 3
    assert random_baseline(tiny_llama, "q", n_random=32) == (mean, std)  # seeded


def test_channel_test_limits(tiny):
    k = tiny.d_head
    writer, reader = (0, 1), (tiny.n_layers - 1, 0)
    result = channel_test(tiny, RECORDS, writer, reader, [[], list(range(k)), [0]], metric="logit_diff")
    s = result.summary()
    assert len(s) == 4 and s["components"].tolist()[:2] == ["none", "none"]
    # an empty subspace changes nothing
    assert s.loc[1, "metric_change"] == pytest.approx(0, abs=1e-5) and s.loc[1, "attention_change"] == pytest.approx(0, abs=1e-6)
    # every component at scale 0 is zero ablation of the head
    sweep = head_ablation(tiny, RECORDS, mode="zero", metric="logit_diff", heads=[writer], progress=False).frame
    everything = result.frame[result.frame["variant"] == 2].sort_values("prompt")
    assert everything["metric"].to_numpy() == pytest.approx(sweep.sort_values("prompt")["ablated"].to_numpy(), abs=1e-4)
    assert torch.allclose(projection(tiny, writer, [list(range(k))], 0.5)[0], 0.5 * torch.eye(k), atol=1e-4)


@pytest.mark.parametrize("writer, reader, subspaces, message", [
    ((2, 0), (1, 0), [[0]], "reader L1H0 is not after writer L2H0"),
    ((0, 0), (1, 0), [[99]], "component 99 out of range"),
    ((0, 0), (9, 0), [[0]], "layer 9 out of range")])
def test_channel_test_bad_input(tiny_llama, writer, reader, subspaces, message):
    with pytest.raises(HeadscopeError, match=message):
        channel_test(tiny_llama, RECORDS, writer, reader, subspaces)


def test_laundry_prompts(smol):
    items = usable_items(smol)
    assert len(items) >= 10
    records = laundry_prompts(smol, 4, 6, position=2, seed=1)
    for r in records:
        assert r["target"] == " " + r["items"][2] and r["prompt"].count(r["items"][2]) == 1
        assert all(r["prompt"].count(w) == 2 for w in r["items"] if w != r["items"][2])
    assert laundry_prompts(smol, 4, 6, position=2, seed=1) == records
    with pytest.raises(HeadscopeError, match="list length 1 must be between 2 and 20"):
        laundry_prompts(smol, 1, 3)
    with pytest.raises(HeadscopeError, match="answer position 5"):
        laundry_prompts(smol, 3, 2, position=5)


def test_laundry_task_and_intervention(smol):
    result = laundry_task(smol, (2, 4), n=6, writer=(20, 1), components=[0, 1], scales=(1.0, 0.0))
    acc = result.accuracy()
    assert len(acc) == 4 and acc["among_items"].between(0, 1).all()
    plain = laundry_task(smol, (2, 4), n=6)
    unchanged = result.frame[result.frame["scale"] == 1.0].reset_index(drop=True)
    assert unchanged[["correct", "among_items"]].equals(plain.frame[["correct", "among_items"]])
    with pytest.raises(HeadscopeError, match="component 64 out of range"):
        laundry_task(smol, (2,), n=2, writer=(3, 0), components=[64])


def test_graph_and_cli(tmp_path):
    heads = pd.DataFrame({"layer": [0, 1], "head": [0, 1], "effect": [0.5, 2.0]})
    heads.to_parquet(tmp_path / "heads.parquet")
    out = tmp_path / "svd"
    proc = cli("svd", "--model", "random:gpt2", "--top", "4", "--min-z", "0", "--importance", str(tmp_path),
               "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    comp = pd.read_parquet(out / "composition.parquet")
    assert {"writer_layer", "writer_head", "reader_layer", "reader_head", "kind", "score", "baseline", "z"} <= set(comp)
    assert (comp["reader_layer"] > comp["writer_layer"]).all()
    channels = pd.read_parquet(out / "channels.parquet")
    assert {"component", "singular_value", "score", "share", "top_tokens"} <= set(channels)
    assert len(channels) == 3 * 4 * 4
    graph = json.loads((out / "graph.json").read_text())
    assert len(graph["edges"]) == min(200, int((comp["z"] >= 0).sum())) > 0
    assert {"source", "target", "kind", "score"} <= set(graph["edges"][0]["data"])
    ids = {n["data"]["id"] for n in graph["nodes"]}
    assert all(e["data"]["source"] in ids and e["data"]["target"] in ids for e in graph["edges"])
    assert {n["data"]["importance"] for n in graph["nodes"] if n["data"]["id"] == "L1H1"} == {2.0}
    loaded = load_result(out)
    assert isinstance(loaded, Composition) and len(loaded.channels) == len(channels)
    assert (out / "report.html").stat().st_size > 1000
    for args, message in [(["--kinds", "q,x"], "unknown composition kind 'x'"),
                          (["--importance", str(tmp_path / "nothing")], "no head scores at")]:
        proc = cli("svd", "--model", "random:gpt2", *args, "--out", str(tmp_path / "bad"))
        assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()
    for args, message in [(["--scales", "1,x"], "--scales: '1,x' must be comma-separated numbers"),
                          (["--position", "first"], "--position: 'first' must be 'random'")]:
        proc = cli("laundry", "--model", "random:llama", "--writer", "1-0", "--components", "0", *args,
                   "--out", str(tmp_path / "bad"))
        assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = cli("laundry", "--model", "random:llama", "--lengths", "2,3", "--n", "3", "--writer", "1-0",
               "--components", "0", "--scales", "1,0", "--out", str(tmp_path / "laundry"))
    assert proc.returncode == 0, proc.stderr
    assert set(pd.read_parquet(tmp_path / "laundry" / "laundry.parquet")["scale"]) == {0.0, 1.0}


def test_importance_sources():
    assert head_scores({(1, 2): 3}) == {(1, 2): 3.0}
    frame = pd.DataFrame({"layer": [0, 0], "head": [1, 1], "score": [1.0, 3.0]})
    assert head_scores(frame) == {(0, 1): 2.0}
    assert head_scores(frame.set_index(["layer", "head"])["score"]) == {(0, 1): 2.0}  # a Series too
    from headscope.circuits.heads.importance import ranking

    two = pd.DataFrame({"layer": [0, 1], "head": [1, 0], "effect": [0.5, 2.0]})
    assert ranking(two) == ranking({(0, 1): 0.5, (1, 0): 2.0}) == [(1, 0), (0, 1)]
    with pytest.raises(HeadscopeError, match="needs a column"):
        head_scores(pd.DataFrame({"layer": [0], "head": [0], "x": [1]}))
