"""The Hydra check against plain loops: total effects are one ablated forward per component (and head
ablation's effects), direct effects are the components module's attributions, self-repair splits exactly
into compensation and the final norm's share, and a one-layer model has nothing else; the head report's
direct effects and self-repair."""

import pandas as pd
import pytest
import torch

from headscope.circuits.heads.ablation import prepare
from headscope.circuits.heads.direct import head_direct_effects
from headscope.circuits.heads.single_heads import head_ablation
from headscope.circuits.steering import Hydra, hydra
from headscope.probes import HeadscopeError, Intervention, load_model, load_result, run
from headscope.probes.models.random_models import build_random_model
from headscope.probes.readouts.components import component_attribution
from headscope.probes.readouts.decompose import readout

from test_ablation import records

KEY = ["component", "layer", "head"]


def logit_diffs(model, recs, interventions=()):
    """Target - foil logit at each prompt's last position, one forward per prompt."""
    out = []
    for r in recs:
        batch = model.batch([r["prompt"]])
        logits = run(model, batch, interventions).logits[0, -1].float()
        t, _ = model.first_token(r["target"])
        f, _ = model.first_token(r["foil"])
        out.append(float(logits[t] - logits[f]))
    return out


@pytest.fixture(scope="module")
def checked(tiny):
    recs = records(tiny)
    return tiny, recs, hydra(tiny, recs, progress=False)


def test_total_effects_are_one_ablated_forward_per_component(checked):
    model, recs, result = checked
    by_prompt = result.hydra_by_prompt
    clean = logit_diffs(model, recs)
    for kind, hook in (("attn", "hook_attn_out"), ("mlp", "hook_mlp_out")):
        for layer in (0, model.n_layers - 1):
            ablated = logit_diffs(model, recs, [Intervention.set(f"blocks.{layer}.{hook}")])
            rows = by_prompt[(by_prompt["component"] == kind) & (by_prompt["layer"] == layer)].sort_values("prompt")
            assert rows["total_effect"].tolist() == pytest.approx([c - a for c, a in zip(clean, ablated)], abs=2e-4)
    heads = head_ablation(model, recs, metric="logit_diff", progress=False).frame
    mine = by_prompt[by_prompt["component"] == "head"].astype({"head": int}).merge(heads, on=["prompt", "layer", "head"])
    assert len(mine) == len(heads)
    assert (mine["total_effect"] - mine["effect"]).abs().max() < 2e-4


def test_direct_effects_are_the_components_attributions(checked):
    model, recs, result = checked
    by_prompt = result.hydra_by_prompt
    for i, r in enumerate(recs):
        comp = component_attribution(model, r["prompt"], target=r["target"], foil=r["foil"]).frame
        mine = by_prompt[by_prompt["prompt"] == i]
        for kind in ("attn", "mlp", "head"):
            want = comp[comp["kind"] == kind].sort_values(["layer", "head"])["dla"].to_numpy()
            got = mine[mine["component"] == kind].sort_values(["layer", "head"])["direct_effect"].to_numpy()
            assert got == pytest.approx(want, abs=1e-4)
        # the attention and MLP direct effects, the embeddings and the constant terms are the logit difference
        rest = comp[comp["kind"].isin(["embed", "bias"])]["dla"].sum()
        whole = mine[mine["component"].isin(["attn", "mlp"])]["direct_effect"].sum() + rest
        assert whole == pytest.approx(logit_diffs(model, [r])[0], abs=1e-3)


def test_self_repair_is_compensation_plus_the_norms_share(checked):
    model, recs, result = checked
    frame = result.frame.set_index(KEY)
    assert (frame["self_repair"] - (frame["direct_effect"] - frame["total_effect"])).abs().max() < 1e-6
    comp = result.compensation.groupby(KEY, dropna=False)["compensation"].sum()
    assert (frame["self_repair"] - frame["norm_repair"] - comp).abs().max() < 1e-4
    # one component's compensation by hand: its ablated forward, each later output's change read at the clean scale
    layer = 0
    batch = model.batch([recs[0]["prompt"]])
    names = [f"blocks.{l}.hook_{k}_out" for l in range(model.n_layers) for k in ("attn", "mlp")]
    final = f"blocks.{model.n_layers - 1}.hook_resid_post"
    clean = run(model, batch, record=names + [final]).cache
    ablated = run(model, batch, [Intervention.set(f"blocks.{layer}.hook_attn_out")], record=names).cache
    r = readout(model)
    scale = r.norm.scale(clean[final][0, -1])
    t, _ = model.first_token(recs[0]["target"])
    f, _ = model.first_token(recs[0]["foil"])

    def dla(x):
        logits = r.frozen(x[0, -1], scale) - (0 if r.frozen_bias is None else r.frozen_bias)
        return float(logits[t] - logits[f])

    by_hand = {(n.split("_")[1], int(n.split(".")[1])): dla(ablated[n]) - dla(clean[n]) for n in names}
    mine = result.compensation
    mine = mine[(mine["component"] == "attn") & (mine["layer"] == layer)]
    one = hydra(model, recs[:1], components=("attn",), progress=False).compensation
    one = one[one["layer"] == layer]
    assert set(zip(mine["by_kind"], mine["by_layer"])) == {("mlp", 0)} | {(k, l) for l in range(1, model.n_layers)
                                                                           for k in ("attn", "mlp")}
    for row in one.itertuples():
        assert row.compensation == pytest.approx(by_hand[(row.by_kind, row.by_layer)], abs=1e-4)


def test_one_layer_model_has_only_the_norms_share(tmp_path):
    """With one layer nothing after a component compensates but the same layer's MLP: with that MLP writing
    nothing, each component's self-repair is the final norm's share alone."""
    model, tokenizer = build_random_model("llama", seed=3)
    model.config.num_hidden_layers = 1
    model.model.layers = model.model.layers[:1]
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.zero_()
    model.save_pretrained(tmp_path / "one")
    tokenizer.save_pretrained(tmp_path / "one")
    one = load_model(str(tmp_path / "one"))
    recs = records(one)
    result = hydra(one, recs, progress=False)
    frame = result.frame
    assert set(frame["layer"]) == {0}
    assert (frame["self_repair"] - frame["norm_repair"]).abs().max() < 1e-5
    assert result.compensation["compensation"].abs().max() < 1e-5
    assert frame["norm_repair"].abs().max() > 1e-4  # the recomputed scale does give some back


def test_result_saves_loads_and_offers_head_scores(checked, tmp_path):
    model, recs, result = checked
    result.save(tmp_path / "hydra")
    loaded = load_result(tmp_path / "hydra")
    assert isinstance(loaded, Hydra)
    pd.testing.assert_frame_equal(loaded.frame, result.frame)
    heads = pd.read_parquet(tmp_path / "hydra" / "heads.parquet")  # the dashboard's heads map reads it
    assert {"direct_effect", "total_effect", "self_repair"} <= set(heads.columns)
    assert len(heads) == model.n_layers * model.n_heads
    loaded.plot()
    loaded.compensation_plot("attn", 0)
    assert (tmp_path / "hydra" / "report.html").is_file()


@pytest.mark.parametrize("metric", ["logprob", "kl", "loss"])
def test_head_direct_effects_are_the_direct_path_by_hand(tiny_llama, metric):
    model = tiny_llama
    recs = records(model)
    setup = prepare(model, recs, mode="zero", metric=metric)
    heads = [(0, 1), (model.n_layers - 1, 2)]
    mine = head_direct_effects(setup, heads, [0, 1, 2]).set_index(["prompt", "layer", "head"])["direct_effect"]
    r = readout(model)
    for i, rec in enumerate(recs):
        batch = model.batch([rec["prompt"]])
        final = f"blocks.{model.n_layers - 1}.hook_resid_post"
        names = [final] + [f"blocks.{l}.attn.hook_z" for l, _ in heads]
        cache = run(model, batch, record=names).cache
        x = cache[final][0]  # [pos, d]
        scale = r.norm.scale(x)
        t, _ = model.first_token(rec["target"])
        ids = batch.input_ids[0]
        for layer, head in heads:
            w_o = model.bridge.blocks[layer].attn.W_O[head].float().to(x.device)
            share = cache[f"blocks.{layer}.attn.hook_z"][0, :, head].float() @ w_o  # [pos, d]
            clean_logp = torch.log_softmax(r.frozen(x, scale), -1)
            logp = torch.log_softmax(r.frozen(x - share, scale), -1)
            if metric == "logprob":
                want = float(clean_logp[-1, t] - logp[-1, t])
            elif metric == "kl":
                want = float((clean_logp[-1].exp() * (clean_logp[-1] - logp[-1])).sum())
            else:
                labels = torch.cat([ids[1:], torch.tensor([t], device=ids.device)])
                ce = lambda lp: -lp.gather(-1, labels[:, None])[:, 0].mean()  # noqa: E731
                want = float(ce(logp) - ce(clean_logp))
            assert mine[(i, layer, head)] == pytest.approx(want, abs=1e-4)


def test_hydra_bad_input(tiny_llama):
    recs = records(tiny_llama)
    with pytest.raises(HeadscopeError, match="metric 'logprob'"):
        hydra(tiny_llama, recs, metric="logprob", progress=False)
    with pytest.raises(HeadscopeError, match="component kind 'neuron'"):
        hydra(tiny_llama, recs, components=("neuron",), progress=False)
    with pytest.raises(HeadscopeError, match="foil"):
        hydra(tiny_llama, [{"prompt": r["prompt"], "target": r["target"]} for r in recs], progress=False)


def test_hydra_command(tmp_path, capsys):
    import json

    from headscope.app.cli import main

    out = tmp_path / "hydra"
    assert main(["hydra", "--model", "random:llama", "--device", "cpu", "--prompts", "greater-than", "--metric", "logit",
                 "--components", "attn,mlp", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["most_repaired"]) == 5 and summary["most_repaired"][0]["head"] is None
    frame = load_result(out).frame
    assert set(frame["component"]) == {"attn", "mlp"} and len(frame) == 2 * 4
    assert {"direct_effect", "total_effect", "self_repair", "norm_repair"} <= set(frame.columns)
