"""What each writer of the ``EdgeGraph`` puts into the residual stream: the first block's input, each
head's ``z_h W_O[h]`` and each MLP's output, stacked ``[batch, writers, pos, d_model]`` in the graph's
order (output biases, the same on every run, belong to no writer)."""

from __future__ import annotations

import torch

from ...probes import Model, run
from ...probes.models import hooks
from ...probes.readouts.decompose import head_outputs


def writer_outputs(model: Model, batch) -> torch.Tensor:
    """Every writer's output into the residual stream over ``batch``, from one forward that stops after
    the last MLP (module docstring)."""
    return stack_writers(model, run(model, batch, record=writer_hooks(model), logits=False).cache)


def writer_hooks(model: Model) -> list[str]:
    return [hooks.resid_pre(0)] + [name for l in range(model.n_layers) for name in (hooks.z(l), hooks.mlp_out(l))]


def stack_writers(model: Model, cache: dict) -> torch.Tensor:
    """The writers' outputs from a run's record of ``writer_hooks``, in float32."""
    first = cache[hooks.resid_pre(0)]
    H = model.n_heads
    out = torch.empty(first.shape[0], 1 + model.n_layers * (H + 1), *first.shape[1:], device=first.device,
                      dtype=torch.float32)
    out[:, 0] = first.detach()
    for l in range(model.n_layers):
        at = 1 + l * (H + 1)
        out[:, at:at + H] = head_outputs(model, l, cache[hooks.z(l)].detach())[0].transpose(1, 2)  # from [b, p, H, d]
        out[:, at + H] = cache[hooks.mlp_out(l)].detach()
    return out
