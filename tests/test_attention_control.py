"""Attention rows computed inside the model's attention call equal eager attention's pattern rows, in
prefill and in cached decoding, on every architecture; head masks (query zeroed, output zeroed) per
batch row against plain runs."""

import pytest
import torch

from headscope.probes import Edit, HeadscopeError, run
from headscope.probes.engine.attention_control import AttentionControl, head_masks

PROMPT = "the river runs past the old mill and the river runs on to the sea"


def pattern_rows(model, ids):
    return run(model, model.batch_of_ids(ids), record="blocks.*.attn.hook_pattern").cache


def test_rows_equal_eager_patterns_in_prefill_and_decoding(tiny):
    ids = torch.tensor([tiny.tokenize(PROMPT).ids])
    eager = pattern_rows(tiny, ids)
    control = AttentionControl(rows=3)
    out = run(tiny, tiny.batch_of_ids(ids), control=control)
    for layer in range(tiny.n_layers):
        torch.testing.assert_close(control.kept[layer][0].cpu(),
                                   eager[f"blocks.{layer}.attn.hook_pattern"][0, :, -3:].float().cpu(),
                                   atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.logits, run(tiny, tiny.batch_of_ids(ids)).logits)  # the output is untouched
    # one decoding step from cached keys: the new query's row over every key
    prefix = run(tiny, tiny.batch_of_ids(ids[:, :-1]), kv_cache=True)
    step = AttentionControl(rows=1, reduce=lambda layer, w: w.argmax(-1))
    run(tiny, tiny.batch_of_ids(ids[:, -1:]), past=prefix.past, control=step)
    for layer in range(tiny.n_layers):
        expected = eager[f"blocks.{layer}.attn.hook_pattern"][0, :, -1].argmax(-1)
        assert step.kept[layer][0, :, 0].cpu().tolist() == expected.cpu().tolist()


def test_uniform_mask_spreads_attention_evenly(tiny):
    ids = torch.tensor([tiny.tokenize(PROMPT).ids])
    control = AttentionControl(rows=1, uniform=head_masks([[(1, 2)]], tiny.n_heads))
    run(tiny, tiny.batch_of_ids(ids), control=control)
    row = control.kept[1][0, 2, 0]
    seen = row[row > 0]
    assert torch.allclose(seen, torch.full_like(seen, 1 / len(seen)))  # every key it may see, equally
    assert len(seen) > 1 and not torch.allclose(control.kept[1][0, 1, 0][row > 0], seen)  # other heads are not


def test_per_row_masks_equal_separate_runs(tiny):
    ids = torch.tensor([tiny.tokenize(PROMPT).ids] * 3)
    sets = [[(1, 2)], [(0, 1), (2, 3)], []]
    for field in ("uniform", "silenced"):
        together = run(tiny, tiny.batch_of_ids(ids), control=AttentionControl(**{field: head_masks(sets, tiny.n_heads)}))
        for row, heads in enumerate(sets):
            alone = run(tiny, tiny.batch_of_ids(ids[:1]),
                        control=AttentionControl(**{field: head_masks([heads], tiny.n_heads)}))
            torch.testing.assert_close(together.logits[row], alone.logits[0], atol=1e-5, rtol=1e-4)
    plain = run(tiny, tiny.batch_of_ids(ids[:1])).logits[0]
    torch.testing.assert_close(together.logits[2], plain, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(together.logits[0], plain)


def test_silenced_head_equals_zeroing_its_z(tiny):
    ids = torch.tensor([tiny.tokenize(PROMPT).ids])
    masked = run(tiny, tiny.batch_of_ids(ids), control=AttentionControl(silenced=head_masks([[(2, 1)]], tiny.n_heads)))
    edit = Edit("blocks.2.attn.hook_z", rows=torch.tensor([0]), heads=torch.tensor([1]))
    zeroed = run(tiny, tiny.batch_of_ids(ids), interventions=[edit], attention="eager")
    torch.testing.assert_close(masked.logits, zeroed.logits, atol=1e-4, rtol=1e-4)


def test_control_refuses_eager_only_hooks(tiny_llama):
    ids = torch.tensor([tiny_llama.tokenize(PROMPT).ids])
    with pytest.raises(HeadscopeError, match="attention rows and head masks"):
        run(tiny_llama, tiny_llama.batch_of_ids(ids), record="blocks.0.attn.hook_pattern", control=AttentionControl(rows=1))
