"""The hook engine against plain oracles: each prompt alone, one variant per forward, HF logits."""

import pytest
import torch

from headscope.probes import Edit, HeadscopeError, Intervention, run
from headscope.probes.engine.attention_mode import choose_attention
from headscope.probes.models import hooks
from headscope.probes.engine.batching import auto_batch_size, chunks

from conftest import PROMPTS


def _alone(model, prompt, hooks=()):
    batch = model.batch([prompt])
    return model.bridge.run_with_hooks(batch.input_ids, fwd_hooks=list(hooks))[0]


def test_logits_equal_hf_model_on_padded_batch(tiny):
    batch = tiny.batch(PROMPTS)
    with torch.no_grad():
        hf = tiny.hf_model(batch.input_ids, attention_mask=batch.attention_mask).logits
    mask = batch.attention_mask.bool()
    for attention in ("eager", "auto"):
        ours = run(tiny, batch, attention=attention).logits
        torch.testing.assert_close(ours[mask], hf[mask], atol=1e-5, rtol=1e-5)


def test_padded_rows_mean_what_they_mean_alone(tiny):
    batch = tiny.batch(PROMPTS)
    out = run(tiny, batch, record=["blocks.1.hook_resid_post"])
    for row, prompt in enumerate(PROMPTS):
        n = int(batch.lengths[row])
        alone = _alone(tiny, prompt)
        torch.testing.assert_close(out.logits[row, :n], alone, atol=1e-5, rtol=1e-5)
        alone_resid = run(tiny, tiny.batch([prompt]), record=["blocks.1.hook_resid_post"]).cache["blocks.1.hook_resid_post"]
        torch.testing.assert_close(out.cache["blocks.1.hook_resid_post"][row, :n], alone_resid[0], atol=1e-5, rtol=1e-5)


def test_sdpa_hooks_carry_eager_values(tiny):
    batch = tiny.batch(PROMPTS)
    names = sorted(tiny.sdpa_hooks)
    assert any(n.endswith("hook_z") for n in names) or tiny.architecture == "GPT2LMHeadModel"
    assert not any(n.endswith("hook_pattern") for n in names)
    eager = run(tiny, batch, record=names, attention="eager").cache
    sdpa = run(tiny, batch, record=names, attention="sdpa").cache
    mask = batch.attention_mask.bool()
    for name in names:
        if eager[name].shape[:2] == mask.shape:
            torch.testing.assert_close(sdpa[name][mask], eager[name][mask], atol=2e-5, rtol=1e-4, msg=name)


def test_delegation_is_refused_when_one_layers_attention_computes_otherwise(tiny_llama, monkeypatch):
    """The probe compares each layer's delegated attention with the eager one on the eager run's own
    input to it: the HF attention of the last layer alone made 1% off takes delegation away. It finds
    the load-time set again and leaves the model's own set as it was."""
    from headscope.probes.engine.run import probe_sdpa_hooks

    delegated = probe_sdpa_hooks(tiny_llama)
    assert delegated == tiny_llama.sdpa_hooks and hooks.z(0) in delegated
    hf_attention = tiny_llama.bridge.blocks[-1].attn.original_component
    forward = hf_attention.forward

    def off(*args, **kwargs):
        out = forward(*args, **kwargs)
        return (out[0] * 1.01, *out[1:])

    with monkeypatch.context() as patch:
        patch.setattr(hf_attention, "forward", off)
        assert probe_sdpa_hooks(tiny_llama) == frozenset() and tiny_llama.sdpa_hooks == delegated
    assert probe_sdpa_hooks(tiny_llama) == delegated


def test_attention_choice(tiny_llama):
    assert choose_attention(tiny_llama, ["blocks.0.hook_resid_post"]) == "sdpa"
    assert choose_attention(tiny_llama, ["blocks.0.attn.hook_pattern"]) == "eager"
    with pytest.raises(HeadscopeError, match="hook_pattern"):
        choose_attention(tiny_llama, ["blocks.0.attn.hook_pattern"], "sdpa")
    with pytest.raises(HeadscopeError, match="'flash'"):
        choose_attention(tiny_llama, [], "flash")


def _zero_head(layer_head_rows):
    """Plain hook fn for the oracle: zero one head's z in every row it is given."""
    head, position = layer_head_rows

    def fn(z, hook):
        z = z.clone()
        if position is None:
            z[:, :, head] = 0
        else:
            z[:, position, head] = 0
        return z

    return fn


@pytest.mark.parametrize("at_last", [False, True])
def test_per_row_head_ablation_equals_plain_loop(tiny, at_last):
    # rows: every (prompt, head) pair of layer 1, on a padded batch of prompts of different lengths
    layer = 1
    pairs = [(p, h) for p in range(len(PROMPTS)) for h in range(tiny.n_heads)]
    batch = tiny.batch([PROMPTS[p] for p, _ in pairs])
    heads = torch.tensor([h for _, h in pairs])
    positions = batch.last if at_last else None
    edit = Edit(f"blocks.{layer}.attn.hook_z", rows=torch.arange(len(pairs)), heads=heads, positions=positions)
    fast = run(tiny, batch, interventions=[edit], logits_at=batch.last).logits
    for row, (p, h) in enumerate(pairs):
        pos = int(batch.last[row]) if at_last else None
        alone = _alone(tiny, PROMPTS[p], [(f"blocks.{layer}.attn.hook_z", _zero_head((h, pos)))])
        torch.testing.assert_close(fast[row], alone[-1], atol=1e-5, rtol=1e-5)
    # and the edit did something
    clean = run(tiny, batch, logits_at=batch.last).logits
    assert (fast - clean).abs().max() > 1e-4


def test_per_row_residual_patch_with_start_layer_equals_plain_loop(tiny):
    # each row patches a different position of layer 2's residual stream with a value from another prompt
    layer = 2
    hook = f"blocks.{layer}.hook_resid_pre"
    base = tiny.batch([PROMPTS[0]] * 4)
    donor = run(tiny, tiny.batch([PROMPTS[2]]), record=[hook]).cache[hook][0]
    positions = torch.tensor([0, 1, 3, 5])
    edit = Edit(hook, rows=torch.arange(4), positions=positions, value=donor[positions])
    resid = run(tiny, base, record=[hook]).cache[hook]
    started = run(tiny, base, interventions=[edit], start_layer=layer, resid=resid)
    full = run(tiny, base, interventions=[edit])
    torch.testing.assert_close(started.logits, full.logits, atol=1e-5, rtol=1e-5)
    for row, pos in enumerate(positions.tolist()):
        def patch(x, hook, pos=pos):
            x = x.clone()
            x[:, pos] = donor[pos]
            return x

        torch.testing.assert_close(full.logits[row], _alone(tiny, PROMPTS[0], [(hook, patch)]), atol=1e-5, rtol=1e-5)


def test_start_layer_needs_matching_resid(tiny_llama):
    batch = tiny_llama.batch(PROMPTS)
    with pytest.raises(HeadscopeError, match="start_layer=2"):
        run(tiny_llama, batch, start_layer=2, resid=torch.zeros(1, 2, tiny_llama.d_model))
    with pytest.raises(HeadscopeError, match="layer 9"):
        run(tiny_llama, batch, start_layer=9, resid=torch.zeros(1, 2, tiny_llama.d_model))


def test_logits_at_equals_gathered_full_logits(tiny):
    batch = tiny.batch(PROMPTS)
    full = run(tiny, batch).logits
    last = run(tiny, batch, logits_at=batch.last).logits
    torch.testing.assert_close(last, full[torch.arange(len(PROMPTS)), batch.last], atol=1e-5, rtol=1e-5)


def test_logits_false_stops_after_the_last_recorded_hook(tiny):
    batch = tiny.batch(PROMPTS)
    names = [hooks.pattern(0), hooks.resid_post(1)]
    full = run(tiny, batch, record=names)
    later = []  # an intervention past the last recorded hook must never be reached
    probe = Intervention.apply(hooks.resid_post(tiny.n_layers - 1), lambda act: later.append(1) or act)
    early = run(tiny, batch, [probe], record=names, logits=False)
    assert early.logits is None and later == [] and set(early.cache) == set(names)
    for name in names:
        torch.testing.assert_close(early.cache[name], full.cache[name])
    with pytest.raises(HeadscopeError, match="logits=False"):
        run(tiny, batch, logits=False)


def test_gradients_flow_when_asked(tiny):
    batch = tiny.batch(PROMPTS[:1])
    out = run(tiny, batch, record=["blocks.1.hook_resid_post"], grad=True, logits_at=batch.last)
    resid = out.cache["blocks.1.hook_resid_post"]
    assert resid.requires_grad
    (grad,) = torch.autograd.grad(out.logits[0, 5], resid)
    assert grad.abs().sum() > 0


def test_chunks_and_batch_size(tiny_llama):
    assert [(s.start, s.stop) for s in chunks(7, 3)] == [(0, 3), (3, 6), (6, 7)]
    with pytest.raises(HeadscopeError, match="batch size 0"):
        list(chunks(3, 0))
    small, large = auto_batch_size(tiny_llama, 4096, 1 << 26), auto_batch_size(tiny_llama, 16, 1 << 26)
    assert 1 <= small < large


def test_real_model_predicts_paris_and_batches_like_alone(smol):
    prompts = ["The Eiffel Tower is located in the city of", "The capital of Italy is the city of"]
    batch = smol.batch(prompts)
    logits = run(smol, batch, logits_at=batch.last).logits
    assert smol.tokenizer.decode([int(logits[0].argmax())]) == " Paris"
    for row, prompt in enumerate(prompts):
        torch.testing.assert_close(logits[row], _alone(smol, prompt)[-1], atol=1e-4, rtol=1e-4)


def test_resume_from_prefix_cache_equals_full_run(tiny):
    # the rows differ after position t only (an edit at t), so positions < t come from the cache
    from headscope.probes.engine.run import prefix_cache
    from headscope.probes.models.model import Batch

    batch = tiny.batch([PROMPTS[0]] * 3)
    n, t, layer = batch.input_ids.shape[1], 4, 2
    hook = f"blocks.{layer}.hook_resid_pre"
    base = run(tiny, batch, record=[hook], kv_cache=True)
    assert base.past.layers[0].keys.shape[2] == n  # every position kept, sliding-window layers too
    value = torch.randn(3, tiny.d_model)
    full = run(tiny, batch, interventions=[Edit(hook, rows=torch.arange(3), positions=torch.full((3,), t), value=value)])
    suffix = Batch(batch.input_ids[:, t:], torch.full((3,), n - t, device=batch.input_ids.device))
    past = prefix_cache(tiny, base.past, torch.tensor([2, 1, 0]), t)
    resumed = run(tiny, suffix, interventions=[Edit(hook, rows=torch.arange(3), positions=torch.zeros(3, dtype=torch.long),
                                            value=value.flip(0))],
                  start_layer=layer, resid=base.cache[hook][[2, 1, 0], t:], past=past)
    torch.testing.assert_close(resumed.logits, full.logits[[2, 1, 0], t:], atol=1e-5, rtol=1e-5)
    with pytest.raises(HeadscopeError, match="padded rows"):
        run(tiny, tiny.batch(PROMPTS[:2]), past=prefix_cache(tiny, base.past, torch.tensor([0, 1]), 2))
    # the bridge's eager attention would read the resumed positions as 0.. (wrong rotary and mask): refused
    with pytest.raises(HeadscopeError, match="cannot resume"):
        run(tiny, suffix, past=prefix_cache(tiny, base.past, torch.tensor([0, 1, 2]), t), attention="eager")


def test_start_layer_zero_replaces_the_embeddings(tiny_llama):
    batch = tiny_llama.batch(PROMPTS)
    resid = run(tiny_llama, batch, record=["blocks.0.hook_resid_pre"]).cache["blocks.0.hook_resid_pre"] * 1.5
    ours = run(tiny_llama, batch, start_layer=0, resid=resid).logits
    scaled = run(tiny_llama, batch, [Intervention.apply("blocks.0.hook_resid_pre", lambda x: x * 1.5)]).logits
    torch.testing.assert_close(ours, scaled, atol=1e-5, rtol=1e-5)
