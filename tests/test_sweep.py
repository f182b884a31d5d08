"""The sweep engine against a plain loop: one full forward per variant, patches applied by hand."""

import pytest
import torch

from headscope.circuits.metrics import target_metric
from headscope.probes import Intervention, run
from headscope.probes.engine.sweep import Patch, base_run, sweep

WORDS = ["cat", "dog", "tree", "house", "river", "stone", "cloud", "bird"]


def same_length_prompts(model, n_prompts, n_words=6):
    """``2 * n_prompts`` prompts of one token length (bases, then donors)."""
    by_len = {}
    for i in range(200):
        text = " ".join(WORDS[(i * 7 + j * (i % 5 + 1)) % len(WORDS)] for j in range(n_words))
        toks = model.tokenize(text)
        by_len.setdefault(len(toks), []).append(toks)
        if len(by_len[len(toks)]) == 2 * n_prompts:
            return by_len[len(toks)]
    raise AssertionError("no prompts of one length")


def plain(model, bases, donors_cache, variant):
    """Full forward over every base row with the variant's patches, each row from its own donor."""
    def patcher(patch):
        def fn(act, hook=None):
            act = act.clone()
            src = donors_cache[patch.hook]
            sp = patch.position if patch.source_position is None else patch.source_position
            if patch.head is None:
                if patch.position is None:
                    act[:] = src
                else:
                    act[:, patch.position] = src[:, sp]
            elif patch.position is None:
                act[:, :, patch.head] = src[:, :, patch.head]
            else:
                act[:, patch.position, patch.head] = src[:, sp, patch.head]
            return act
        return fn

    batch = model.batch(bases)
    return run(model, batch, [Intervention.apply(p.hook, patcher(p)) for p in variant], logits_at=batch.last).logits


@pytest.mark.parametrize("merge_positions,fill", [(False, 64), (True, 64), (True, 10**6)])
def test_sweep_equals_plain_loop(tiny_llama, merge_positions, fill):
    model = tiny_llama
    prompts = same_length_prompts(model, 3)
    bases, donors = prompts[:3], prompts[3:]
    n = len(bases[0])
    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_mlp_out", "blocks.1.attn.hook_z", "blocks.0.hook_attn_out"]
    donor_cache = run(model, model.batch(donors), record=hooks).cache
    variants = [
        (Patch("blocks.0.hook_resid_pre", 2),),
        (Patch("blocks.1.hook_mlp_out", n - 1),),
        (Patch("blocks.1.attn.hook_z", None, 1),),
        (Patch("blocks.1.attn.hook_z", 3, 0),),
        (Patch("blocks.0.hook_attn_out", 1, source_position=4), Patch("blocks.1.attn.hook_z", n - 2, 2)),
        (Patch("blocks.1.hook_mlp_out", None),),
    ]
    target = 5
    score = lambda logits: target_metric(logits, "logprob", target)  # noqa: E731
    base = base_run(model, bases)
    got = sweep(model, bases, base, variants, donor_cache, score, fill=fill, merge_positions=merge_positions)
    assert got.shape == (len(variants), 3)
    for v, variant in enumerate(variants):
        want = score(plain(model, bases, donor_cache, variant)).cpu()
        torch.testing.assert_close(got[v], want, atol=2e-5, rtol=1e-5)
    # and the patches did something: not every variant scores like the unpatched base
    assert (got - score(base.logits).cpu()).abs().max() > 1e-3


def test_base_run_needs_one_length(tiny_llama):
    from headscope.probes import HeadscopeError

    with pytest.raises(HeadscopeError, match="one token length"):
        base_run(tiny_llama, [tiny_llama.tokenize("a b c"), tiny_llama.tokenize("a")])
