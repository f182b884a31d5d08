"""A model split by a device map (here over CPU memory and the disk, with accelerate's offloading) gives
every analysis the same numbers as the model on one device: forwards, capture, batched ablation sweeps
that start at a layer from cached keys and values, causal tracing, lenses, direct logit attribution,
gradient-based edge attribution, the Hydra check, steering and generation."""

import pandas as pd
import pytest
import torch

from headscope.circuits.edges import edge_attribution
from headscope.circuits.heads.single_heads import head_ablation
from headscope.circuits.steering import hydra, mean_difference, steer_sweep
from headscope.probes import HeadscopeError, capture, load_model, run
from headscope.probes.engine.generate import generate
from headscope.probes.readouts.components import component_attribution
from headscope.probes.readouts.lens import logit_lens
from headscope.circuits.causal import trace

from test_ablation import records

# every other block on the disk: its weights come in for its forward only
SPLIT = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
         "model.layers.2": "cpu", "model.layers.3": "disk", "model.norm": "disk", "lm_head": "disk"}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    whole = load_model("random:llama", device="cpu")
    split = load_model("random:llama", device_map=SPLIT, offload_folder=tmp_path_factory.mktemp("offload"))
    return whole, split


def test_the_split_is_offloaded_and_the_same_model(pair):
    whole, split = pair
    assert split.info()["devices"] == ["cpu", "disk"]
    assert any(p.device.type == "meta" for p in split.hf_model.parameters())  # placeholders between forwards
    assert split.identity() == whole.identity()


def test_forwards_capture_and_generation(pair):
    whole, split = pair
    prompts = ["the river runs past the old mill", "a small cat"]
    assert torch.equal(run(whole, whole.batch(prompts)).logits, run(split, split.batch(prompts)).logits)
    a, b = (capture(m, prompts, "blocks.*.hook_resid_post", progress=False) for m in pair)
    for name in a.tensors:
        assert torch.equal(a[name], b[name])
    assert generate(whole, prompts, 6, stop_at_eos=False) == generate(split, prompts, 6, stop_at_eos=False)


@pytest.mark.parametrize("positions", ["all", "last"])
def test_ablation_sweeps(pair, positions):
    whole, split = pair
    recs = records(whole)
    a, b = (head_ablation(m, recs, metric="logit_diff", positions=positions, progress=False).frame for m in pair)
    pd.testing.assert_frame_equal(a, b, atol=1e-5, rtol=0)


def test_tracing_lens_attribution_and_gradients(pair):
    whole, split = pair
    prompt = "the river runs past the old mill"
    a, b = (trace(m, prompt, "the river", samples=3, seed=1).frame for m in pair)
    pd.testing.assert_frame_equal(a, b, atol=1e-5, rtol=0)
    a, b = (logit_lens(m, prompt).frame for m in pair)
    pd.testing.assert_frame_equal(a, b, atol=1e-5, rtol=0)
    a, b = (component_attribution(m, prompt, foil=" the").frame for m in pair)
    assert (a["dla"] - b["dla"]).abs().max() < 1e-5
    recs = records(whole)
    a, b = (edge_attribution(m, recs, progress=False).frame for m in pair)
    assert (a["effect"] - b["effect"]).abs().max() < 1e-5 and a["effect"].abs().max() > 0


def test_hydra_and_steering(pair):
    whole, split = pair
    recs = records(whole)
    a, b = (hydra(m, recs, progress=False).frame for m in pair)
    pd.testing.assert_frame_equal(a, b, atol=1e-5, rtol=0)
    pairs = [{"positive": "the river runs past the old mill", "negative": "the river runs past the red car"},
             {"positive": "A small cat walks to the garden", "negative": "A small cat walks to the market"}]
    a, b = (steer_sweep(m, mean_difference(m, pairs, [1, 3]), recs, strengths=[2.0], n_generate=1, max_new_tokens=3,
                        cost_texts=["the river runs past the old mill and on"], progress=False).frame for m in pair)
    pd.testing.assert_frame_equal(a, b, atol=1e-5, rtol=0)


def test_a_map_that_needs_the_disk_needs_an_offload_folder(tmp_path):
    with pytest.raises(HeadscopeError, match=r"does not fit cpu=100KiB: [\d.]+ KiB of its [\d.]+ KiB of weights"):
        load_model("random:llama", device_map="auto", max_memory={"cpu": "100KiB"})
    model = load_model("random:llama", device_map="auto", max_memory={"cpu": "500KiB"}, offload_folder=tmp_path)
    assert model.info()["devices"] == ["cpu", "disk"]


def test_bad_placements():
    with pytest.raises(HeadscopeError, match="unknown device map 'everywhere'"):
        load_model("random:llama", device_map="everywhere")
    with pytest.raises(HeadscopeError, match="max memory for device 3"):
        load_model("random:llama", device_map="auto", max_memory={3: "1GiB"})
    with pytest.raises(HeadscopeError, match="device 'cpu' and a device map"):
        load_model("random:llama", device="cpu", device_map="auto")
