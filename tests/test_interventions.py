"""Every intervention kind against the same change written by hand on the recorded clean activation."""

import pytest
import torch

from headscope.probes import Intervention, Record, run
from headscope.probes.models import hooks

from conftest import PROMPTS


def recorded(model, interventions, hook):
    """The activation at ``hook`` as the rest of the network sees it (recorders run after interventions)."""
    batch = model.batch(PROMPTS)
    return run(model, batch, interventions, record=hook).cache[hook]


def test_each_kind_equals_the_hand_written_change(tiny_llama):
    model, resid, z = tiny_llama, hooks.resid_post(1), hooks.z(1)
    clean_resid, clean_z = recorded(model, [], resid), recorded(model, [], z)
    rows, pos = torch.tensor([0, 2]), torch.tensor([1, 3])
    d = model.d_model
    device = model.device  # on a GPU machine too (HEADSCOPE_TEST_DEVICE=cuda)
    vector = torch.randn(d, generator=torch.Generator().manual_seed(0)).to(device)
    basis = torch.linalg.qr(torch.randn(d, 3, generator=torch.Generator().manual_seed(1))).Q.T.to(device)

    want = clean_resid.clone()
    want[rows, pos] = 7.0
    torch.testing.assert_close(recorded(model, [Intervention.set(resid, 7.0, rows=rows, positions=pos)], resid), want)

    want = clean_resid + 0.5 * vector
    torch.testing.assert_close(recorded(model, [Intervention.add(resid, vector, scale=0.5)], resid), want)

    several = torch.tensor([[0, 1], [2, 3]])  # two positions in each of two rows, as tracing's noise
    want = clean_resid.clone()
    want[rows[:, None], several] += vector
    got = recorded(model, [Intervention.add(resid, vector, rows=rows, positions=several)], resid)
    torch.testing.assert_close(got, want)

    want = clean_z.clone()
    want[rows, :, torch.tensor([1, 3])] *= 0.25
    got = recorded(model, [Intervention.scale(z, 0.25, rows=rows, heads=torch.tensor([1, 3]))], z)
    torch.testing.assert_close(got, want)

    out = recorded(model, [Intervention.project_out(resid, basis)], resid)
    torch.testing.assert_close(out @ basis.T, torch.zeros(*out.shape[:2], 3, device=device), atol=1e-4, rtol=0)
    torch.testing.assert_close(out + (clean_resid @ basis.T) @ basis, clean_resid, atol=1e-5, rtol=1e-5)
    kept = recorded(model, [Intervention.keep(resid, basis, rows=rows)], resid)
    torch.testing.assert_close(kept[rows], (clean_resid[rows] @ basis.T) @ basis)
    torch.testing.assert_close(kept[1], clean_resid[1])  # rows not named are untouched

    mats = torch.randn(2, model.d_head, model.d_head, generator=torch.Generator().manual_seed(2)).to(device)
    want = clean_z.clone()
    want[rows, pos, 0] = torch.einsum("kd,kde->ke", clean_z[rows, pos, 0], mats)
    got = recorded(model, [Intervention.project(z, mats, rows=rows, positions=pos, heads=torch.zeros(2, dtype=torch.long))], z)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)

    want = clean_resid.clamp(-0.1, 0.1)
    torch.testing.assert_close(recorded(model, [Intervention.apply(resid, lambda x: x.clamp(-0.1, 0.1))], resid), want)


def test_a_gate_carries_the_gradient_of_a_hand_written_scale(tiny_llama):
    model = tiny_llama
    batch = model.batch(PROMPTS)
    gate = torch.full((len(PROMPTS), model.n_heads), 1.0, device=model.device, requires_grad=True)
    out = run(model, batch, [Intervention.scale(hooks.z(2), gate[:, None, :, None])], logits_at=batch.last, grad=True)
    (ours,) = torch.autograd.grad(out.logits[:, 5].sum(), gate)

    def by_hand(z, hook=None):
        return z * gate_ref[:, None, :, None]

    gate_ref = torch.full((len(PROMPTS), model.n_heads), 1.0, device=model.device, requires_grad=True)
    logits = model.bridge.run_with_hooks(batch.input_ids, attention_mask=batch.attention_mask,
                                         fwd_hooks=[(hooks.z(2), by_hand)])
    (theirs,) = torch.autograd.grad(logits[torch.arange(len(PROMPTS)), batch.last, 5].sum(), gate_ref)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_records_reduce_and_unknown_ops_are_refused(tiny_llama):
    batch = tiny_llama.batch(PROMPTS)
    name = hooks.resid_post(0)
    full = run(tiny_llama, batch, record=name).cache[name]
    last = run(tiny_llama, batch, record=Record(name, keep=lambda n, a: a[:, -1])).cache[name]
    torch.testing.assert_close(last, full[:, -1])
    with pytest.raises(ValueError, match="unknown intervention op 'mix'"):
        Intervention(name, "mix")
