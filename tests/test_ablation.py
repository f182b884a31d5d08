"""Head ablation against a plain loop (one forward per head over a padded batch), W_O zeroing,
gradient importance against finite differences, pruning and masking controls, bad input."""

import json

import numpy as np
import pytest
import torch

from headscope.circuits.heads.ablation import all_heads, prepare
from headscope.circuits.heads.single_heads import HeadAblation, head_ablation
from headscope.circuits.heads.importance import gradient_importance, pruning_curve, ranking, top_vs_random
from headscope.circuits.prompt_sets import read_prompt_set
from headscope.probes import HeadscopeError, Intervention, load_result, run

from test_sweep import same_length_prompts


def records(model):
    """Three prompts of two token lengths (so batches are padded), each with a same-length corruption."""
    a = same_length_prompts(model, 2, n_words=6)
    b = same_length_prompts(model, 1, n_words=4)
    pairs = [(a[0], a[2]), (b[0], b[1]), (a[1], a[3])]
    targets = [" the", " cat", " a"]
    return [{"prompt": p.text, "target": t, "foil": " dog", "corrupted": c.text} for (p, c), t in zip(pairs, targets)]


def plain_loop(model, recs, mode, metric, positions, heads, mean_over="all", reference=None):
    """Reference: for each head, one forward over the padded batch of every prompt with that head's z replaced."""
    toks = [model.tokenize(r["prompt"]) for r in recs]
    batch = model.batch(toks)
    tid = torch.tensor([model.tokenizer(r["target"], add_special_tokens=False)["input_ids"][0] for r in recs])
    fid = torch.tensor([model.tokenizer(r["foil"], add_special_tokens=False)["input_ids"][0] for r in recs])
    mask = batch.attention_mask.float().cpu()
    last = batch.last.cpu()
    zs = [f"blocks.{l}.attn.hook_z" for l in range(model.n_layers)]
    if mode == "mean":  # mean over every real token of every reference prompt, or per position
        ref = model.batch(reference or [r["prompt"] for r in recs])
        ref_mask = ref.attention_mask.float().cpu()[:, :, None, None]
        cache = {h: v.cpu() for h, v in run(model, ref, record=zs).cache.items()}
        overall = {h: (cache[h] * ref_mask).sum((0, 1)) / ref_mask.sum() for h in zs}
        width = batch.input_ids.shape[1]
        means = {}
        for h in zs:
            per_pos = [(cache[h][:, p] * ref_mask[:, p]).sum(0) / ref_mask[:, p].sum()
                       if p < ref_mask.shape[1] and ref_mask[:, p].sum() > 0 else overall[h] for p in range(width)]
            means[h] = overall[h] if mean_over == "all" else torch.stack(per_pos)  # [H, d] or [pos, H, d]
    if mode == "resample":
        corr = run(model, model.batch([model.tokenize(r["corrupted"]) for r in recs]), record=zs).cache
    ids = batch.input_ids.cpu()
    labels = torch.cat([ids[:, 1:], torch.zeros_like(ids[:, :1])], 1)
    labels[torch.arange(len(recs)), last] = tid

    def measure(logits):
        logits = logits.float().cpu()
        logp = torch.log_softmax(logits, -1)
        at_last = logp[torch.arange(len(recs)), last]
        if metric == "logprob":
            return at_last[torch.arange(len(recs)), tid]
        if metric == "prob":
            return at_last[torch.arange(len(recs)), tid].exp()
        if metric == "logit_diff":
            lg = logits[torch.arange(len(recs)), last]
            return lg[torch.arange(len(recs)), tid] - lg[torch.arange(len(recs)), fid]
        if metric == "loss":
            ce = -logp.gather(-1, labels[..., None])[..., 0]
            return (ce * mask).sum(1) / mask.sum(1)
        return at_last

    clean = measure(run(model, batch).logits)
    out = {}
    for layer, head in heads:
        def hook(z, hook=None, layer=layer, head=head):
            z = z.clone()
            name = f"blocks.{layer}.attn.hook_z"
            value = {"zero": torch.zeros_like(z[:, :, head]),
                     "mean": (means[name][head] if mean_over == "all" else means[name][:, head]).to(z)
                     .expand_as(z[:, :, head]) if mode == "mean" else None,
                     "resample": corr[name][:, :, head] if mode == "resample" else None}[mode]
            if positions == "all":
                z[:, :, head] = value
            else:
                rows = torch.arange(len(z), device=z.device)
                z[rows, batch.last, head] = value[rows, batch.last]
            return z
        ablated = measure(run(model, batch, [Intervention.apply(f"blocks.{layer}.attn.hook_z", hook)]).logits)
        if metric == "kl":  # KL(clean || ablated) at the last position
            ablated = (clean.exp() * (clean - ablated)).sum(-1)
        out[(layer, head)] = ablated.numpy()
    clean_value = np.zeros(len(recs)) if metric == "kl" else clean.numpy()
    return clean_value, out


@pytest.mark.parametrize("mode", ["zero", "mean", "resample"])
@pytest.mark.parametrize("metric", ["logprob", "prob", "logit_diff", "kl", "loss"])
@pytest.mark.parametrize("positions", ["all", "last"])
def test_batched_ablation_equals_plain_loop(tiny_llama, mode, metric, positions):
    model = tiny_llama
    recs = records(model)
    heads = all_heads(model)
    result = head_ablation(model, recs, mode=mode, metric=metric, positions=positions, progress=False)
    clean, ablated = plain_loop(model, recs, mode, metric, positions, heads)
    frame = result.frame.set_index(["layer", "head", "prompt"])
    for (layer, head), values in ablated.items():
        got = frame.loc[(layer, head)].sort_index()
        np.testing.assert_allclose(got["ablated"], values, atol=3e-5, rtol=1e-4)
        np.testing.assert_allclose(got["clean"], clean, atol=3e-5, rtol=1e-4)
    sign = -1 if metric in ("kl", "loss") else 1
    np.testing.assert_allclose(result.frame["effect"], sign * (result.frame["clean"] - result.frame["ablated"]))
    assert result.frame["effect"].abs().max() > 1e-6  # something was ablated


def test_per_position_mean_ablation_equals_plain_loop(tiny_llama):
    model = tiny_llama
    recs = records(model)
    reference = ["the cat", "a river runs past the old mill and on to the sea"]  # short and long
    heads = [(0, 1), (1, 2), (model.n_layers - 1, 0)]
    result = head_ablation(model, recs, mode="mean", mean_over="position", reference=reference, heads=heads,
                           progress=False)
    _, ablated = plain_loop(model, recs, "mean", "logprob", "all", heads, mean_over="position", reference=reference)
    frame = result.frame.set_index(["layer", "head", "prompt"])
    for head, values in ablated.items():
        np.testing.assert_allclose(frame.loc[head].sort_index()["ablated"], values, atol=3e-5, rtol=1e-4)
    # the per-position mean differs from the all-position one
    overall = head_ablation(model, recs, mode="mean", reference=reference, heads=heads, progress=False)
    assert np.abs(overall.frame["ablated"].to_numpy() - result.frame["ablated"].to_numpy()).max() > 1e-6


@pytest.mark.parametrize("mode,metric,positions", [("zero", "logit_diff", "all"), ("mean", "kl", "last"),
                                                    ("resample", "loss", "all")])
def test_batched_ablation_equals_plain_loop_default_model(smol, mode, metric, positions):
    recs = [{"prompt": "When Mary and John went to the store, John gave a drink to", "target": " Mary",
             "foil": " John", "corrupted": "When Anna and Paul went to the store, Paul gave a drink to"},
            {"prompt": "The capital of France is", "target": " Paris", "foil": " London",
             "corrupted": "The capital of Italy is"}]
    heads = [(l, h) for l in (0, 12, 29) for h in range(smol.n_heads)]
    result = head_ablation(smol, recs, mode=mode, metric=metric, positions=positions, heads=heads, progress=False)
    clean, ablated = plain_loop(smol, recs, mode, metric, positions, heads)
    frame = result.frame.set_index(["layer", "head", "prompt"])
    for head, values in ablated.items():
        np.testing.assert_allclose(frame.loc[head].sort_index()["ablated"], values, atol=2e-4, rtol=1e-4)
    assert result.frame["effect"].abs().max() > 1e-3


def test_zero_ablation_equals_zeroing_output_projection_slice(tiny):
    model = tiny
    recs = [{"prompt": "The river runs past the old mill", "target": " and"}]
    every = head_ablation(model, recs, progress=False).frame
    layer, head = every.loc[every["effect"].abs().idxmax(), ["layer", "head"]].astype(int)  # the most visible head
    result = head_ablation(model, recs, heads=[(int(layer), int(head))], progress=False)
    o_proj = model.bridge.blocks[layer].attn.o.original_component
    d = model.d_head
    saved = o_proj.weight.data.clone()
    try:
        if type(o_proj).__name__ == "Conv1D":  # GPT-2 stores [in, out]
            o_proj.weight.data[head * d:(head + 1) * d] = 0
        else:  # nn.Linear stores [out, in]
            o_proj.weight.data[:, head * d:(head + 1) * d] = 0
        batch = model.batch([model.tokenize(recs[0]["prompt"])])
        logits = run(model, batch, logits_at=batch.last).logits
    finally:
        o_proj.weight.data.copy_(saved)
    tid = model.tokenizer(" and", add_special_tokens=False)["input_ids"][0]
    expected = float(torch.log_softmax(logits.float(), -1)[0, tid])
    assert result.frame["ablated"].iloc[0] == pytest.approx(expected, abs=5e-6)
    assert abs(result.frame["effect"].iloc[0]) > 2e-4


@pytest.mark.parametrize("metric,positions", [("logprob", "all"), ("loss", "all"), ("logit_diff", "last")])
def test_gradient_importance_matches_finite_differences(tiny_llama, metric, positions):
    model = tiny_llama
    recs = records(model)
    setup = prepare(model, recs, metric=metric, positions=positions)
    result = gradient_importance(setup, normalize=False)
    frame = result.frame.set_index(["layer", "head"])
    toks = [model.tokenize(r["prompt"]) for r in recs]
    eps = 1e-2
    from headscope.circuits.heads.ablation import prompt_metric

    for layer, head in [(0, 0), (1, 3), (model.n_layers - 1, 2)]:
        def gated(scale):
            def hook(z, hook=None):
                z = z.clone()
                if positions == "all":
                    z[:, :, head] *= scale
                else:
                    rows = torch.arange(len(z), device=z.device)
                    z[rows, batch.last, head] *= scale
                return z
            out = run(model, batch, [Intervention.apply(f"blocks.{layer}.attn.hook_z", hook)],
                      logits_at=None if metric == "loss" else batch.last)
            return prompt_metric(setup, out.logits, batch, list(range(len(recs))))

        batch = model.batch(toks)
        fd = ((gated(1 + eps) - gated(1 - eps)) / (2 * eps)).double().cpu().numpy()
        assert frame.loc[(layer, head), "importance"] == pytest.approx(np.abs(fd).mean(), rel=2e-2, abs=1e-5)
        assert frame.loc[(layer, head), "gradient"] == pytest.approx(
            (-1 if metric == "loss" else 1) * fd.mean(), rel=2e-2, abs=1e-5)


def test_layer_normalised_importance(tiny_llama):
    setup = prepare(tiny_llama, records(tiny_llama))
    norms = gradient_importance(setup).frame.groupby("layer")["importance"].apply(lambda v: float(np.sqrt((v**2).sum())))
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    with pytest.raises(HeadscopeError, match="kl"):
        gradient_importance(prepare(tiny_llama, records(tiny_llama), metric="kl"))


def test_pruning_curve_and_masking_controls(tiny_llama):
    model = tiny_llama
    setup = prepare(model, records(model))
    single = head_ablation(model, records(model), progress=False)
    clean = single.frame.groupby("prompt")["clean"].first().mean()
    effect = {(l, h): e for l, h, e in single.summary()[["layer", "head", "effect"]].itertuples(index=False)}
    curve = pruning_curve(setup, effect, seeds=(0, 1))
    frame = curve.frame
    assert set(frame["order"]) == {"by importance", "random (seed 0)", "random (seed 1)"}
    by_importance = frame[frame["order"] == "by importance"]
    assert by_importance["fraction"].tolist()[0] == 0 and by_importance["fraction"].tolist()[-1] == 1
    assert by_importance["value"].iloc[0] == pytest.approx(clean, abs=1e-6)
    # removing every head gives the same value whatever the order
    np.testing.assert_allclose(frame[frame["fraction"] == 1]["value"], by_importance["value"].iloc[-1], atol=1e-5)
    # one head removed by importance: the least important head's single ablation
    least = ranking(effect)[-1]
    one = single.frame[(single.frame["layer"] == least[0]) & (single.frame["head"] == least[1])]["ablated"].mean()
    assert by_importance[by_importance["n_removed"] == 1]["value"].iloc[0] == pytest.approx(one, abs=1e-5)
    assert curve.meta["knee_fraction"] in set(frame["fraction"])
    curve.plot()

    ranked = ranking(effect)
    masking = top_vs_random(setup, ranked, [0, 1, 3], seeds=(0, 1, 2))
    for _, row in masking.frame[masking.frame["control"] == "random"].iterrows():
        drawn = set(row["heads"].split(";")) if row["heads"] else set()
        top = {f"{l}-{h}" for l, h in ranked[:row["k"]]}
        assert len(drawn) == row["k"] and not drawn & top
    assert masking.frame[masking.frame["k"] == 0]["value"].tolist() == pytest.approx([clean] * 4, abs=1e-6)
    with pytest.raises(HeadscopeError, match="k=99"):
        top_vs_random(setup, ranked, [99])


def test_result_roundtrip_summary_and_export(tiny_llama, tmp_path):
    result = head_ablation(tiny_llama, records(tiny_llama), progress=False)
    result.save(tmp_path / "abl")
    loaded = load_result(tmp_path / "abl")
    assert isinstance(loaded, HeadAblation)
    summary = loaded.summary()
    assert len(summary) == tiny_llama.n_layers * tiny_llama.n_heads
    assert (summary["ci_low"] <= summary["effect"]).all() and (summary["effect"] <= summary["ci_high"]).all()
    export = loaded.effects_by_head()
    assert len(export["0-0"]) == 3 and json.loads(json.dumps(export)) == export
    assert "query heads" in loaded.meta["heads_are"]  # random:llama has grouped-query attention
    loaded.plot()


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("lines,kwargs,message", [
    ([], {}, "no prompts"),
    (['{"prompt": "a b"', ], {}, ":1: not valid JSON"),
    (['{"prompt": "a b", "target": " c"}', '{"prompt": "a b"}'], {}, ":2: field 'target'"),
    (['{"prompt": "a b", "target": " c"}'], {"metric": "logit_diff"}, ":1: field 'foil' missing"),
    (['{"prompt": "a b", "target": " c"}'], {"mode": "resample"}, ":1: field 'corrupted' missing"),
    (['{"prompt": "a b", "target": " c", "corrupted": "a b c d e f g"}'], {"mode": "resample"}, "the prompt.s token length"),
    (['{"prompt": "a b", "target": " c"}'], {"metric": "accuracy"}, "unknown metric 'accuracy'"),
    (['{"prompt": "a b", "target": " c"}'], {"mode": "noise"}, "unknown ablation mode 'noise'"),
    (['{"prompt": "a b", "target": " c"}'], {"positions": "first"}, "unknown positions 'first'"),
])
def test_bad_prompt_sets(tiny_llama, tmp_path, lines, kwargs, message):
    path = write(tmp_path / "set.jsonl", lines)
    with pytest.raises(HeadscopeError, match=message):
        head_ablation(tiny_llama, read_prompt_set(path), progress=False, **kwargs)


def test_shipped_ioi_set(smol):
    from headscope.circuits.heads.ablation import ablate
    from headscope.data import DATA_DIR

    setup = prepare(smol, read_prompt_set(DATA_DIR / "ioi.jsonl"), mode="resample", metric="logit_diff")
    assert len(setup.prompts) == 48  # every corrupted prompt has its prompt's token length (else prepare fails)
    clean, _, _, _ = ablate(setup, [])
    assert (clean > 0).mean() > 0.8  # the model prefers the indirect object over the subject
