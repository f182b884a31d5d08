"""Activation patching against TransformerLens's patching functions; attribution patching against
finite differences; bad input."""

import pytest
import torch
import transformer_lens.patching as tl_patching

from headscope.circuits.causal.patching import activation_patching, attribution_patching, rank_correlation
from headscope.circuits.metrics import target_metric
from headscope.probes import Edit, HeadscopeError, run

PAIRS = [("A small cat walks to the market square", "A small cat walks to the blue sea"),
         ("The teacher looks at the green hill", "The teacher looks at the tall tower"),
         ("My neighbour sings about the river", "My neighbour sings about the market"),
         ("The river is located in the city of Paris and", "The river is located in the city of Rome and")]
TL_FUNCTIONS = {"resid": "get_act_patch_resid_pre", "attn": "get_act_patch_attn_out", "mlp": "get_act_patch_mlp_out",
                "heads": "get_act_patch_attn_head_out_all_pos", "heads_by_pos": "get_act_patch_attn_head_out_by_pos"}


def equal_length_pair(model):
    """A pair of equal token length, with the clean run's top token as target and the corrupted
    run's (or the clean run's second) as foil."""
    for clean, corrupted in PAIRS:
        if len(model.tokenize(clean)) == len(model.tokenize(corrupted)):
            batch = model.batch([clean, corrupted])
            logits = run(model, batch, logits_at=batch.last).logits
            target = int(logits[0].argmax())
            foil = int(logits[1].argmax()) if int(logits[1].argmax()) != target else int(logits[0].topk(2).indices[1])
            decode = model.tokenizer.decode
            if model.tokenizer(decode([target]), add_special_tokens=False)["input_ids"][:1] == [target] and \
                    model.tokenizer(decode([foil]), add_special_tokens=False)["input_ids"][:1] == [foil]:
                return clean, corrupted, decode([target]), decode([foil])
    raise AssertionError("no usable prompt pair of equal token length for this tokenizer")


def check_against_transformer_lens(model, clean, corrupted, target, foil, kinds):
    ours = activation_patching(model, clean, corrupted, target, foil, kinds=kinds, progress=False)
    meta = ours.meta
    clean_ids = model.batch([clean]).input_ids
    corrupted_ids = model.batch([corrupted]).input_ids
    _, clean_cache = model.bridge.run_with_cache(clean_ids)

    def metric(logits):
        m = target_metric(logits[:, -1], meta["metric"], meta["target_token_id"], meta["foil_token_id"])[0]
        return (m - meta["corrupted_metric"]) / (meta["clean_metric"] - meta["corrupted_metric"])

    for kind in kinds:
        expected = getattr(tl_patching, TL_FUNCTIONS[kind])(model.bridge, corrupted_ids, clean_cache, metric).cpu()
        part = ours.frame[ours.frame["kind"] == kind]
        if kind == "heads_by_pos":
            got = torch.tensor(part.sort_values(["layer", "position", "head"])["score"].values).view(expected.shape)
        elif kind == "heads":
            got = torch.tensor(part.sort_values(["layer", "head"])["score"].values).view(expected.shape)
        else:
            got = torch.tensor(part.sort_values(["layer", "position"])["score"].values).view(expected.shape)
        torch.testing.assert_close(got.float(), expected.float(), atol=1e-4, rtol=1e-3)
    return ours


def test_activation_patching_equals_transformer_lens_random_model(tiny):
    clean, corrupted, target, foil = equal_length_pair(tiny)
    ours = check_against_transformer_lens(tiny, clean, corrupted, target, foil, tuple(TL_FUNCTIONS))
    # before the first token where the prompts differ, both runs are identical: patching there changes nothing
    a, b = tiny.tokenize(clean).ids, tiny.tokenize(corrupted).ids
    first_diff = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    before = ours.frame[(ours.frame["position"] >= 0) & (ours.frame["position"] < first_diff)]
    assert len(before) > 0
    assert (before["metric_value"] - ours.meta["corrupted_metric"]).abs().max() < 1e-5


def test_activation_patching_equals_transformer_lens_default_model(smol):
    ours = check_against_transformer_lens(smol, "The capital of France is the city of", "The capital of Italy is the city of",
                                          " Paris", " Rome", ("heads",))  # resid: the random models' test
    assert ours.meta["clean_metric"] > 0 > ours.meta["corrupted_metric"]


def test_attribution_matches_finite_differences(tiny_llama):
    clean, corrupted, target, foil = equal_length_pair(tiny_llama)
    attr = attribution_patching(tiny_llama, clean, corrupted, target, foil, kinds=("resid", "heads_by_pos"))
    meta = attr.meta
    clean_cache = run(tiny_llama, tiny_llama.batch([clean]), record="blocks.*.hook_resid_pre").cache
    corr_batch = tiny_llama.batch([corrupted])
    corr_cache = run(tiny_llama, corr_batch, record="blocks.*.hook_resid_pre").cache
    frame = attr.frame.set_index(["kind", "layer", "position", "head"])["attribution"]
    eps = 1e-2
    for layer, position in [(1, 2), (2, 5), (3, 0)]:
        hook = f"blocks.{layer}.hook_resid_pre"
        delta = clean_cache[hook][0, position] - corr_cache[hook][0, position]

        def metric_at(step):
            edit = Edit(hook, rows=torch.tensor([0]), positions=torch.tensor([position]),
                        value=corr_cache[hook][0, position] + step * delta)
            logits = run(tiny_llama, corr_batch, interventions=[edit], logits_at=corr_batch.last).logits
            return float(target_metric(logits, meta["metric"], meta["target_token_id"], meta["foil_token_id"])[0])

        finite = (metric_at(eps) - metric_at(-eps)) / (2 * eps)
        assert frame[("resid", layer, position, -1)] == pytest.approx(finite, rel=1e-2, abs=1e-4)


def test_rank_correlation_and_roundtrip(tiny_llama, tmp_path):
    clean, corrupted, target, foil = equal_length_pair(tiny_llama)
    exact = activation_patching(tiny_llama, clean, corrupted, target, foil, kinds=("heads", "resid"), progress=False)
    approx = attribution_patching(tiny_llama, clean, corrupted, target, foil, kinds=("heads", "resid"))
    corr = rank_correlation(exact, approx).set_index("kind")
    assert set(corr.index) == {"heads", "resid"} and corr.loc["heads", "n"] == tiny_llama.n_layers * tiny_llama.n_heads
    assert -1 <= corr.loc["heads", "spearman"] <= 1
    # Spearman by hand: Pearson correlation of the ranks
    import numpy as np
    ex = exact.frame[exact.frame["kind"] == "heads"].sort_values(["layer", "head"])["score"].rank().to_numpy()
    ap = approx.frame[approx.frame["kind"] == "heads"].sort_values(["layer", "head"])["score"].rank().to_numpy()
    assert corr.loc["heads", "spearman"] == pytest.approx(np.corrcoef(ex, ap)[0, 1])
    exact.save(tmp_path / "p")
    from headscope.probes import load_result

    loaded = load_result(tmp_path / "p")
    assert loaded.meta["method"] == "activation" and len(loaded.plot().data) == 2


@pytest.mark.parametrize("kwargs,message", [
    (dict(corrupted="A cat."), "different token lengths"),
    (dict(corrupted="A cat.", align=[0, 1]), "alignment must give a clean position"),
    (dict(metric="logit_diff", foil=None), "needs a foil"),
    (dict(metric="kl"), "unknown metric 'kl'"),
    (dict(kinds=("neurons",)), "unknown kind 'neurons'"),
    (dict(corrupted=None), "give the same"),
])
def test_patching_bad_input(tiny_llama, kwargs, message):
    clean, corrupted, target, foil = equal_length_pair(tiny_llama)
    args = dict(clean=clean, corrupted=corrupted, target=target, foil=foil) | kwargs
    if args["corrupted"] is None:
        args["corrupted"] = clean
    for fn in (activation_patching, attribution_patching):
        with pytest.raises(HeadscopeError, match=message):
            fn(tiny_llama, **args)
