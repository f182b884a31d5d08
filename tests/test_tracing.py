"""Causal tracing: the batched, prefix-reusing tracer against a plain one-forward-per-cell loop."""

import pytest
import torch

from headscope.circuits.causal.tracing import trace, window_layers
from headscope.probes import HeadscopeError, run

NOISE_SUBJECTS = ["The Eiffel Tower", "France", "Barack Obama", "Lionel Messi"]
PROMPT, SUBJECT = "My neighbour walks to the city of Paris and the Eiffel Tower is located in the city of", "the Eiffel Tower"


def plain_trace(model, result, cells):
    """The reference's algorithm cell by cell: noise the subject in S copies, restore, mean probability."""
    meta = result.meta
    tokens = model.tokenize(meta["prompt"])
    subject = meta["subject_positions"]
    gen = torch.Generator().manual_seed(meta["seed"])
    noise = torch.randn(meta["samples"], len(subject), model.d_model, generator=gen) * meta["noise_scale"]
    ids = torch.tensor([tokens.ids] * meta["samples"], device=model.device)
    hooks = {"resid": "blocks.{}.hook_resid_post", "mlp": "blocks.{}.hook_mlp_out", "attn": "blocks.{}.hook_attn_out"}
    clean = run(model, model.batch([tokens]), record=[h.format(l) for h in hooks.values() for l in range(model.n_layers)]).cache

    def add_noise(x, hook):
        x = x.clone()
        x[:, subject] += noise.to(x.device, x.dtype)
        return x

    def restore(name, t):
        def fn(x, hook):
            x = x.clone()
            x[:, t] = clean[name][0, t]
            return x
        return fn

    scores = {}
    for kind, layer, t in cells:
        restored = [layer] if kind == "resid" else window_layers(layer, meta["window"], model.n_layers)
        fwd = [("hook_embed", add_noise)] + [(hooks[kind].format(j), restore(hooks[kind].format(j), t)) for j in restored]
        with torch.no_grad():
            logits = model.bridge.run_with_hooks(ids, fwd_hooks=fwd)
        scores[(kind, layer, t)] = float(torch.softmax(logits[:, -1].float(), -1)[:, meta["target_token_id"]].mean())
    return scores


def check_against_loop(model, result, cells):
    expected = plain_trace(model, result, cells)
    frame = result.frame.set_index(["kind", "layer", "position"])["score"]
    for cell, value in expected.items():
        assert frame[cell] == pytest.approx(value, abs=2e-5), cell


def test_batched_trace_equals_plain_loop_random_model(tiny):
    result = trace(tiny, PROMPT, SUBJECT, samples=3, window=3, noise_subjects=NOISE_SUBJECTS, seed=5, progress=False)
    n = len(tiny.tokenize(PROMPT))
    cells = [(k, l, t) for k in ("resid", "mlp", "attn") for l in range(tiny.n_layers) for t in range(n)]
    check_against_loop(tiny, result, cells)
    assert result.meta["subject_positions"] == tiny.tokenize(PROMPT).locate(SUBJECT)


def test_batched_trace_equals_plain_loop_default_model(smol):
    result = trace(smol, "The Eiffel Tower is located in the city of", "The Eiffel Tower", layers=[0, 13, 29],
                   samples=4, noise_subjects=NOISE_SUBJECTS, progress=False)
    assert result.meta["target"] == " Paris" and result.meta["high_score"] > 0.5
    n = len(smol.tokenize("The Eiffel Tower is located in the city of"))
    cells = [(k, l, t) for k in ("resid", "mlp", "attn") for l in (0, 13, 29) for t in range(n)]
    check_against_loop(smol, result, cells)


def test_trace_invariants(tiny_llama):
    result = trace(tiny_llama, PROMPT, SUBJECT, samples=4, noise_subjects=NOISE_SUBJECTS, progress=False)
    meta, frame = result.meta, result.frame.set_index(["kind", "layer", "position"])["score"]
    last, top = meta["last_position"], tiny_llama.n_layers - 1
    # restoring the last layer's residual stream at the last token restores the clean run
    assert frame[("resid", top, last)] == pytest.approx(meta["high_score"], abs=1e-5)
    # before the subject nothing differs, so restoring there changes nothing
    first = min(meta["subject_positions"])
    assert all(frame[("resid", l, t)] == meta["low_score"] for l in range(top + 1) for t in range(first))
    # the corruption did something, so the invariants above are not trivially true
    assert meta["high_score"] != pytest.approx(meta["low_score"], abs=1e-6)


def test_trace_result_roundtrip_and_plot(tiny_llama, tmp_path):
    result = trace(tiny_llama, PROMPT, SUBJECT, samples=2, noise=0.5, kinds=("resid", "attn"), progress=False)
    assert set(result.frame.columns) >= {"kind", "layer", "position", "token", "score"}
    assert result.meta["noise_scale"] == 0.5
    result.save(tmp_path / "t")
    from headscope.probes import load_result

    loaded = load_result(tmp_path / "t")
    assert type(loaded).__name__ == "CausalTrace" and loaded.meta["low_score"] == result.meta["low_score"]
    fig = loaded.plot()
    assert len(fig.data) == 2 and "*" in fig.data[0].y[min(result.meta["subject_positions"])]


@pytest.mark.parametrize("kwargs,message", [
    (dict(subject="the Louvre"), "subject 'the Louvre' not found"),
    (dict(subject=" "), "empty subject"),
    (dict(noise=0), "noise 0 must be positive"),
    (dict(noise="-2sd"), "must be a positive number"),
    (dict(samples=0), "samples 0 must be at least 1"),
    (dict(window=0), "window 0 must be between 1"),
    (dict(window=99), "window 99 must be between 1"),
    (dict(kinds=("resid", "heads")), "unknown kind 'heads'"),
    (dict(target=""), "tokenizes to nothing"),
    (dict(metric="logit_diff"), "needs a foil"),
])
def test_trace_bad_input(tiny_llama, kwargs, message):
    args = dict(subject=SUBJECT, noise_subjects=NOISE_SUBJECTS, progress=False) | kwargs
    subject = args.pop("subject")
    with pytest.raises(HeadscopeError, match=message):
        trace(tiny_llama, PROMPT, subject, **args)
