"""Component decoding, direct logit attribution and the token lens: the pieces add up to the model's
own numbers, component decoding equals the hand-written norm formulas, bad input."""

import pytest
import torch

from headscope.probes import HeadscopeError, load_result, run
from headscope.probes.readouts.components import Components, component_attribution
from headscope.probes.readouts.token_lens import TokenLens, token_lens

from test_lens import plain_logits

PROMPT = "the river runs past the old mill"


def test_direct_logit_attributions_sum_to_the_models_logit_difference(tiny):
    comp = component_attribution(tiny, PROMPT, foil=" the", top_k=3)
    frame, meta = comp.frame, comp.meta
    logits = run(tiny, tiny.batch([PROMPT])).logits[0, -1].float()
    assert meta["target_token_id"] == int(logits.argmax())  # default target: the model's own top token
    expected = float(logits[meta["target_token_id"]] - logits[meta["foil_token_id"]])
    whole = frame[frame["kind"].isin(["embed", "attn", "mlp", "bias"])]["dla"].sum()
    assert whole == pytest.approx(expected, abs=1e-4)
    assert meta["logit_diff"] == pytest.approx(expected, abs=1e-4)
    # heads and the output bias b_O (where there is one) split each attention output
    for layer in range(tiny.n_layers):
        parts = frame[frame["kind"].isin(["head", "attn_bias"]) & (frame["layer"] == layer)]
        attn = frame[(frame["kind"] == "attn") & (frame["layer"] == layer)]["dla"].item()
        assert len(parts) == tiny.n_heads + (tiny.architecture.startswith("GPT2"))
        assert parts["dla"].sum() == pytest.approx(attn, abs=1e-5)


def test_component_decoding_equals_the_norm_formulas(tiny):
    comp = component_attribution(tiny, PROMPT, top_k=4, heads=False)
    cache = run(tiny, tiny.batch([PROMPT]), record=["blocks.1.hook_mlp_out", "blocks.0.hook_attn_out"]).cache
    for component, hook in (("L1.mlp", "blocks.1.hook_mlp_out"), ("L0.attn", "blocks.0.hook_attn_out")):
        row = comp.frame.set_index("component").loc[component]
        logp = torch.log_softmax(plain_logits(tiny, cache[hook][0, -1:]), -1)[0]
        top = logp.topk(4)
        text = tiny.token_texts(top.indices.tolist())
        assert list(row["top_tokens"]) == [text[i] for i in top.indices.tolist()]
        assert list(row["top_probs"]) == pytest.approx(top.values.exp().tolist(), abs=1e-5)
    assert not (comp.frame["kind"] == "head").any()


def test_components_on_the_default_model(smol, tmp_path):
    comp = component_attribution(smol, "The Eiffel Tower is located in the city of", target=" Paris", foil=" London")
    frame = comp.frame
    assert comp.meta["logit_diff"] > 0  # the model prefers Paris
    assert frame[frame["kind"].isin(["embed", "attn", "mlp", "bias"])]["dla"].sum() == pytest.approx(
        comp.meta["logit_diff"], abs=1e-3)
    late = frame[(frame["kind"] == "attn") & (frame["layer"] >= 15)]["dla"].sum()
    early = frame[(frame["kind"] == "attn") & (frame["layer"] < 5)]["dla"].sum()
    assert late > early  # attention moves the fact late (the causal trace's late site)
    comp.save(tmp_path / "c")
    loaded = load_result(tmp_path / "c")
    assert isinstance(loaded, Components) and loaded.frame["dla"].tolist() == frame["dla"].tolist()
    loaded.plot()
    loaded.heads_plot()


def test_token_lens_parts_add_up_to_the_head(tiny):
    n = len(tiny.tokenize(PROMPT))
    target = " the"
    whole = token_lens(tiny, PROMPT, 1, (0, n), target=target)
    first = token_lens(tiny, PROMPT, 1, (0, 3), target=target)
    rest = token_lens(tiny, PROMPT, 1, (3, n), target=target)
    torch.testing.assert_close(torch.tensor(first.frame["target_logit"].values + rest.frame["target_logit"].values),
                               torch.tensor(whole.frame["target_logit"].values), atol=1e-5, rtol=1e-4)
    assert whole.frame["attention"].tolist() == pytest.approx([1.0] * tiny.n_heads, abs=1e-5)
    # the whole span is the head's output: its direct logit attribution without a foil
    comp = component_attribution(tiny, PROMPT, target=target)
    heads = comp.frame[(comp.frame["kind"] == "head") & (comp.frame["layer"] == 1)]
    assert whole.frame["target_logit"].tolist() == pytest.approx(heads["dla"].tolist(), abs=1e-5)
    one = token_lens(tiny, PROMPT, 1, (0, 3), head=2, target=target)
    assert len(one.frame) == 1 and one.frame["target_logit"].item() == pytest.approx(
        first.frame["target_logit"][2], abs=1e-6)
    assert one.frame["top_logits"][0] == sorted(one.frame["top_logits"][0], reverse=True)


def test_token_lens_on_the_default_model(smol, tmp_path):
    # L23H3, the strongest head of the README's IOI report, attends to the repeated name and pushes it down
    prompt = "When Mary and John went to the store, John gave a drink to"
    lens = token_lens(smol, prompt, 23, " John", head=3, target=" John")
    row = lens.frame.iloc[0]
    last_john = smol.tokenize(prompt).positions_of(prompt.rindex(" John"), len(prompt))[0]
    assert lens.meta["source"] == [last_john, last_john + 1]  # a repeated text means its last occurrence
    assert row["attention"] > 0.5 and row["target_logit"] < 0 and " John" in list(row["bottom_tokens"])[:3]
    lens.save(tmp_path / "t")
    loaded = load_result(tmp_path / "t")
    assert isinstance(loaded, TokenLens) and loaded.meta["source_text"] == " John"
    loaded.plot()


@pytest.mark.parametrize("args,kwargs,message", [
    ((1, "castle"), {}, "source 'castle' not found"),
    ((1, (2, 1)), {}, "source span"),
    ((1, (5, 7)), {"position": 2}, "after position 2"),
    ((9, (0, 2)), {}, "layer 9 out of range"),
    ((1, (0, 2)), {"head": 7}, "head 7 out of range"),
    ((1, (0, 2)), {"top_k": 0}, "top_k 0"),
])
def test_token_lens_bad_input(tiny_llama, args, kwargs, message):
    with pytest.raises(HeadscopeError, match=message):
        token_lens(tiny_llama, PROMPT, *args, **kwargs)


def test_components_bad_input(tiny_llama):
    with pytest.raises(HeadscopeError, match="position 40 out of range"):
        component_attribution(tiny_llama, PROMPT, position=40)
    with pytest.raises(HeadscopeError, match="tokenizes to nothing"):
        component_attribution(tiny_llama, PROMPT, foil="")
