"""The logit lens against a plain computation from the cached residual stream, written from the
norm formulas (LayerNorm, RMSNorm, Gemma's 1 + weight RMSNorm), and against the model's own logits."""

import pytest
import torch

from headscope.probes import HeadscopeError, load_result, run
from headscope.probes.readouts.lens import LogitLens, logit_lens

PROMPT = "the river runs past the old mill"


def params(model):
    return {n.replace("._original_component", ""): p.detach().float().cpu() for n, p in model.hf_model.named_parameters()}


def plain_logits(model, resid):
    """Final norm + unembedding by hand, in float32."""
    p, cfg, x = params(model), model.hf_model.config, resid.float().cpu()
    if model.architecture.startswith("GPT2"):
        mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
        h = (x - mean) / torch.sqrt(var + cfg.layer_norm_epsilon) * p["transformer.ln_f.weight"] + p["transformer.ln_f.bias"]
        return h @ p["transformer.wte.weight"].T
    w = p["model.norm.weight"]
    h = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps)
    h = h * (1 + w) if "Gemma" in model.architecture else h * w
    unembed = p.get("lm_head.weight", p["model.embed_tokens.weight"])
    return h @ unembed.T


def test_logit_lens_equals_plain_computation(tiny):
    model = tiny
    lens = logit_lens(model, PROMPT, top_k=3)
    batch = model.batch([model.tokenize(PROMPT)])
    hooks = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_post" for l in range(model.n_layers)]
    cache = run(model, batch, record=hooks).cache
    final = torch.log_softmax(run(model, batch).logits[0].float().cpu(), -1)
    frame = lens.frame.set_index(["layer", "position"])
    for layer in (0, 1, model.n_layers):
        logp = torch.log_softmax(plain_logits(model, cache[hooks[layer]][0]), -1)
        for pos in (0, len(batch.tokens[0]) - 1):
            row = frame.loc[(layer, pos)]
            top = logp[pos].topk(3)
            assert row["top_ids"] == top.indices.tolist()
            assert row["top_probs"] == pytest.approx(top.values.exp().tolist(), abs=1e-5)
            tgt = int(final[pos].argmax())
            assert row["target_id"] == tgt
            assert row["target_prob"] == pytest.approx(float(logp[pos, tgt].exp()), abs=1e-5)
            assert row["target_rank"] == int((logp[pos] > logp[pos, tgt]).sum())
            assert row["entropy"] == pytest.approx(float(-(logp[pos].exp() * logp[pos]).sum()), abs=1e-4)
            kl = float((final[pos].exp() * (final[pos] - logp[pos])).sum())
            assert row["kl_to_final"] == pytest.approx(max(kl, 0.0), abs=1e-4)


def test_last_layer_lens_is_the_models_output(tiny):
    lens = logit_lens(tiny, PROMPT)
    last = lens.frame[lens.frame["layer"] == tiny.n_layers]
    assert (last["target_rank"] == 0).all()
    assert last["kl_to_final"].max() < 1e-4
    first = lens.frame[lens.frame["layer"] == 0]
    assert first["kl_to_final"].max() > 10 * last["kl_to_final"].max()  # the embeddings are not the output


def test_lens_on_default_model_and_roundtrip(smol, tmp_path):
    lens = logit_lens(smol, "The Eiffel Tower is located in the city of", target=" Paris", positions=[-1])
    traj = lens.frame.sort_values("layer")
    assert traj["target_prob"].iloc[-1] > 0.1 and traj["target_rank"].iloc[-1] == 0
    assert traj["target_prob"].iloc[:5].max() < 0.01  # early layers do not know the answer yet
    lens.save(tmp_path / "lens")
    loaded = load_result(tmp_path / "lens")
    assert isinstance(loaded, LogitLens) and list(loaded.frame["top_tokens"].iloc[0]) == lens.frame["top_tokens"].iloc[0]
    loaded.plot()
    loaded.trajectory()


@pytest.mark.parametrize("kwargs,message", [
    ({"top_k": 0}, "top_k 0"),
    ({"top_k": 10**9}, "vocabulary size"),
    ({"positions": [99]}, "position 99"),
    ({"target": ""}, "tokenizes to nothing"),
])
def test_lens_bad_input(tiny_llama, kwargs, message):
    with pytest.raises(HeadscopeError, match=message):
        logit_lens(tiny_llama, PROMPT, **kwargs)


def test_multi_token_target_is_noted(smol):
    lens = logit_lens(smol, "The capital of France is", target=" Parisian cafés", positions=[-1])
    assert "using the first" in lens.meta["notes"][0]


def test_cli_lens(tmp_path, capsys):
    import json

    import pandas as pd

    from headscope.app.cli import main

    assert main(["lens", "--model", "random:qwen2", "--prompt", PROMPT, "--top-k", "3", "--out", str(tmp_path / "l")]) == 0
    frame = pd.read_parquet(tmp_path / "l" / "lens.parquet")
    for col in ("layer", "position", "token", "top_tokens", "top_probs", "target_prob", "target_rank", "entropy",
                "kl_to_final"):
        assert col in frame.columns
    assert json.loads((tmp_path / "l" / "meta.json").read_text())["top_k"] == 3
    assert main(["lens", "--model", "random:qwen2", "--prompt", PROMPT, "--top-k", "0", "--out", str(tmp_path / "m")]) == 2
    assert "top_k 0" in capsys.readouterr().err and not (tmp_path / "m").exists()
