"""Steering vectors against plain loops: strength 0 is the clean run, batched settings equal one forward
(and one generation) per setting, the in-context vector equals a numpy computation on captured latents
and restores each latent's norm; saving, loading, another model's vector refused, bad input."""

import numpy as np
import pytest
import torch

from headscope.circuits.steering import (Setting, Steering, SteeringSweep, SteeringVector, actadd, channel_direction,
                                        from_probe, head_direction, in_context_vector, mean_difference, read_pairs,
                                        steer_sweep)
from headscope.circuits.steering.apply import ALL
from headscope.probes import HeadscopeError, Intervention, capture, load_model, load_result, run
from headscope.probes.engine.generate import generate
from headscope.probes.readouts.linear_probe import linear_probe

PAIRS = [{"positive": "the river runs past the old mill", "negative": "the river runs past the red car"},
         {"positive": "A small cat walks to the garden", "negative": "A small cat walks to the market"},
         {"positive": "My neighbour sings about the sea", "negative": "My neighbour writes about the hill"}]
RECORDS = [{"prompt": "the river runs past the old", "target": " mill", "foil": " river"},
           {"prompt": "A small cat walks to the", "target": " old", "foil": " cat"},
           {"prompt": "My neighbour looks at the", "target": " sea", "foil": " hill"}]
COST = ["the river runs past the old mill and on to the sea", "A small cat walks to the garden"]


def plain(model, vector, setting, places="all"):
    """One forward per prompt and per passage with the setting's vector added by a hand-written hook."""
    layers = vector.layers if setting.layer == ALL else [setting.layer]
    steer = Steering(model, vector, places)

    def edits(n, places):
        out = []
        for layer in layers:
            v = steer.direction(setting, layer) * setting.strength
            hook = vector.hook_name(layer)
            if vector.meta["method"] == "icv":
                def restore(x, v=v):
                    unit = x / x.norm(dim=-1, keepdim=True)
                    y = unit + v.to(x.device)
                    return y / y.norm(dim=-1, keepdim=True) * x.norm(dim=-1, keepdim=True)
                out.append(Intervention.apply(hook, restore))
            elif vector.meta["method"] == "actadd":
                out.append(Intervention.add(hook, v, positions=torch.arange(len(v))[None].expand(1, -1),
                                            rows=torch.tensor([0])))
            elif places == "generated":
                out.append(Intervention.add(hook, v[0][None], rows=torch.tensor([0]), positions=torch.tensor([n - 1])))
            else:
                out.append(Intervention.add(hook, v))
        return out

    behaviour = []
    for r in RECORDS:
        batch = model.batch([r["prompt"]])
        logits = run(model, batch, edits(int(batch.lengths[0]), places)).logits[0, -1].float()
        t, f = model.first_token(r["target"])[0], model.first_token(r["foil"])[0]
        behaviour.append(float(logits[t] - logits[f]))
    cost = []
    for text in COST:
        batch = model.batch([text])
        logp = torch.log_softmax(run(model, batch, edits(0, "all")).logits[0].float(), -1)  # every position
        ids = batch.input_ids[0]
        cost.append(float(-logp[:-1].gather(-1, ids[1:, None]).mean()))
    return np.mean(behaviour), np.mean(cost)


@pytest.mark.parametrize("method", ["mean-diff", "actadd", "icv"])
def test_batched_settings_equal_one_forward_per_setting(tiny, method):
    if method == "mean-diff":
        vector = mean_difference(tiny, PAIRS, [0, 2], position="mean")
    elif method == "actadd":
        vector = actadd(tiny, "the old", "a red", [1])
    else:
        vector = in_context_vector(tiny, PAIRS, layers=[1, 2])
    sweep = steer_sweep(tiny, vector, RECORDS, strengths=[0.0, 0.5, 3.0], cost_texts=COST, n_generate=0, progress=False)
    frame = sweep.frame
    clean = frame[frame["control"] == "zero"]
    assert (frame[frame["strength"] == 0][["behaviour", "cost"]].to_numpy() == clean.iloc[0][["behaviour", "cost"]]
            .to_numpy().astype(float)).all()  # strength 0 and the zero vector are the clean run
    base = plain(tiny, vector, Setting(vector.layers[0], 0.0))
    assert clean.iloc[0]["behaviour"] == pytest.approx(base[0], abs=1e-4)
    assert clean.iloc[0]["cost"] == pytest.approx(base[1], abs=1e-4)
    for row in frame[(frame["strength"] > 0) & (frame["control"] != "zero")].itertuples():
        want = plain(tiny, vector, Setting(row.layer, row.strength, row.control))
        assert (row.behaviour, row.cost) == pytest.approx(want, abs=2e-4), (row.layer, row.strength, row.control)
    assert frame.loc[frame["strength"] > 0, "behaviour"].nunique() > 1  # the vector does something


def test_places_generated_adds_at_the_last_prompt_position_only(tiny_llama):
    vector = mean_difference(tiny_llama, PAIRS, [1])
    sweep = steer_sweep(tiny_llama, vector, RECORDS, strengths=[2.0], places="generated", cost_texts=COST,
                        n_generate=0, progress=False)
    row = sweep.frame[sweep.frame["control"] == "vector"].iloc[0]
    assert row["behaviour"] == pytest.approx(plain(tiny_llama, vector, Setting(1, 2.0), "generated")[0], abs=1e-4)


def test_batched_generation_equals_one_generation_per_setting(tiny_llama):
    model = tiny_llama
    vector = mean_difference(model, PAIRS, [1, 2])
    prompts = [r["prompt"] for r in RECORDS[:2]]
    sweep = steer_sweep(model, vector, RECORDS, strengths=[0.0, 4.0], n_generate=2, max_new_tokens=5,
                        cost_texts=COST[:1], progress=False)
    for row in sweep.frame.itertuples():
        steer = Steering(model, vector)
        setting = Setting(row.layer, row.strength, row.control)
        alone = []
        for prompt in prompts:
            n = len(model.tokenize(prompt))
            new = generate(model, [prompt], 5, interventions=lambda rows, first, n=n: steer.interventions(
                [setting], first, torch.tensor([n - 1]), torch.tensor([n])))
            alone.append(model.tokenizer.decode(new[0]))
        assert list(row.text) == alone
    texts = sweep.frame[sweep.frame["control"] == "vector"]["text"].tolist()
    assert texts[0] != texts[1]  # strength 4 changes the continuation


def test_keywords_behaviour_is_the_fraction_of_generations(tiny_llama):
    vector = mean_difference(tiny_llama, PAIRS, [1])
    prompts = [r["prompt"] for r in RECORDS]
    sweep = steer_sweep(tiny_llama, vector, prompts, strengths=[0.0], keywords=["the", "a"], n_generate=3,
                        max_new_tokens=4, cost_texts=COST[:1], progress=False)
    row = sweep.frame.iloc[0]
    want = np.mean([any(k in text.lower() for k in ("the", "a")) for text in row["text"]])
    assert row["behaviour"] == pytest.approx(want)
    with pytest.raises(HeadscopeError, match="keyword list is empty"):
        steer_sweep(tiny_llama, vector, prompts, keywords=[" ", ""], progress=False)


def test_in_context_vector_is_the_principal_direction_of_captured_latents(tiny_llama):
    model = tiny_llama
    vector = in_context_vector(model, PAIRS)
    hooks_ = [f"blocks.{l}.hook_resid_post" for l in range(model.n_layers)]
    pos = capture(model, [p["positive"] for p in PAIRS], hooks_, progress=False)
    neg = capture(model, [p["negative"] for p in PAIRS], hooks_, progress=False)
    diffs = np.concatenate([(pos[h] - neg[h]).double().numpy() for h in hooks_], axis=1)  # [pairs, layers * d]
    centred = diffs - diffs.mean(0)
    direction = np.linalg.svd(centred, full_matrices=False)[2][0]
    direction *= np.sign(diffs.mean(0) @ direction)
    assert vector.vectors.flatten().numpy() == pytest.approx(direction, abs=1e-5)
    # applied at one layer, the latent keeps its norm at every position and turns toward the vector
    layer, strength = 1, 0.5
    steer = Steering(model, vector)
    batch = model.batch([RECORDS[0]["prompt"]])
    name = hooks_[layer]
    clean = run(model, batch, record=[name]).cache[name][0].cpu()
    steered = run(model, batch, steer.interventions([Setting(layer, strength)], True, batch.last, batch.lengths),
                  record=[name]).cache[name][0].cpu()
    assert steered.norm(dim=-1) == pytest.approx(clean.norm(dim=-1), rel=1e-5)
    unit = vector.at(layer)[0] / vector.at(layer)[0].norm()
    assert bool(((steered @ unit) / steered.norm(dim=-1) > (clean @ unit) / clean.norm(dim=-1)).all())


def test_vectors_save_load_and_refuse_another_model(tiny_llama, tmp_path):
    model = tiny_llama
    vector = mean_difference(model, PAIRS, [1, 3])
    vector.save(tmp_path / "v")
    loaded = load_result(tmp_path / "v")
    assert isinstance(loaded, SteeringVector) and torch.equal(loaded.vectors, vector.vectors)
    assert loaded.layers == [1, 3]
    sweep = steer_sweep(model, loaded, RECORDS, strengths=[1.0], n_generate=1, max_new_tokens=2, cost_texts=COST[:1],
                        progress=False)
    sweep.save(tmp_path / "s")
    again = load_result(tmp_path / "s")
    assert isinstance(again, SteeringSweep) and torch.equal(again.steering_vector.vectors, vector.vectors)
    assert again.frame["text"].tolist() == sweep.frame["text"].tolist()
    again.plot()
    other = load_model("random:llama", seed=1)
    with pytest.raises(HeadscopeError, match="made from another model"):
        steer_sweep(other, loaded, RECORDS, progress=False)
    with pytest.raises(HeadscopeError, match="no layer 2"):
        steer_sweep(model, loaded, RECORDS, layers=[2], progress=False)


def test_directions_the_project_finds(tiny_llama):
    model = tiny_llama
    head = head_direction(model, 1, 2, [r["prompt"] for r in RECORDS])
    assert head.hook == "resid_post" and head.layers == [1] and float(head.vectors.norm()) > 0
    channel = channel_direction(model, 0, 1, component=0)
    assert float(channel.vectors.norm()) == pytest.approx(1.0, abs=1e-5)
    probe = linear_probe(model, [{"prompt": p, "label": str(i % 2)} for i, p in enumerate(
        [x["positive"] for x in PAIRS] + [x["negative"] for x in PAIRS] + [r["prompt"] for r in RECORDS] * 2)],
                         "label", progress=False)
    vector = from_probe(model, probe, 2, label="1")
    weights = probe.weights[probe.weights["layer"] == 2].set_index("class")["weight"]
    np.testing.assert_allclose(vector.at(2)[0].numpy(), np.array(weights["1"]) - np.array(weights["0"]), atol=1e-6)


def test_bad_pairs_and_settings(tiny_llama, tmp_path):
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"positive": "good", "negative": "bad"}\n{"positive": "fine"}\n')
    with pytest.raises(HeadscopeError, match=r"pairs.jsonl:2: field 'negative' missing"):
        read_pairs(bad)
    bad.write_text('{"positive": "good", "negative": "  "}\n')
    with pytest.raises(HeadscopeError, match=r"pairs.jsonl:1: field 'negative' missing or not a non-empty string"):
        read_pairs(bad)
    with pytest.raises(HeadscopeError, match="layer 9 out of range"):
        mean_difference(tiny_llama, PAIRS, [9])
    with pytest.raises(HeadscopeError, match="at least 2 demonstrations"):
        in_context_vector(tiny_llama, PAIRS[:1])
    vector = actadd(tiny_llama, "the river runs past the old mill", "a", [1])
    with pytest.raises(HeadscopeError, match="shorter than that"):
        steer_sweep(tiny_llama, vector, [{"prompt": "a cat", "target": " the", "foil": " a"}], progress=False)
    with pytest.raises(HeadscopeError, match="must be numbers"):
        steer_sweep(tiny_llama, mean_difference(tiny_llama, PAIRS, [1]), RECORDS, strengths=["strong"], progress=False)


def test_steer_command_writes_vector_sweep_and_report(tmp_path, capsys):
    import json

    from headscope.app.cli import main

    out = tmp_path / "steer"
    code = main(["steer", "--model", "random:llama", "--device", "cpu", "--pairs", "sentiment-pairs", "--prompts",
                 "sentiment", "--layers", "1,2", "--strengths", "0,2", "--generate", "1", "--max-new-tokens", "3",
                 "--out", str(out), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == "mean-diff" and summary["best"]["layer"] in (1, 2)
    assert {"vector.safetensors", "sweep.parquet", "report.html", "meta.json"} <= {p.name for p in out.iterdir()}
    sweep = load_result(out)
    frame = sweep.frame
    assert set(frame.columns) >= {"layer", "strength", "control", "behaviour", "cost", "text"}
    assert len(frame) == 2 * 2 * 3 and set(frame["control"]) == {"vector", "random", "zero"}
    assert all(len(t) == 1 for t in frame["text"])
    # the saved vector steers again, from its directory (icv: every layer at once)
    again = tmp_path / "again"
    assert main(["steer", "--model", "random:llama", "--device", "cpu", "--vector", str(out), "--prompts", "sentiment",
                 "--layers", "2", "--strengths", "1", "--generate", "0", "--out", str(again)]) == 0
    assert set(load_result(again).frame["layer"]) == {2}
    icv = tmp_path / "icv"
    assert main(["steer", "--model", "random:llama", "--device", "cpu", "--pairs", "sentiment-pairs", "--method", "icv",
                 "--prompts", "sentiment", "--strengths", "0.1", "--generate", "0", "--out", str(icv)]) == 0
    assert set(load_result(icv).frame["layer"]) == {-1}
