"""Direct effects: what a change of one component's output does to a metric through the direct path
alone, the final norm's scale frozen at the clean run's (``probes.readouts.decompose``).

``DirectPath`` holds, per prompt, the clean run's residual stream after the last block at the position
the metric reads and that norm's scale there. A change ``delta`` of a component's output (clean minus
ablated) changes the pre-cap logits by ``readout.frozen(delta) - bias``, a linear map; for a metric that
is linear in the logits (``logit_diff``, the centred ``logit``) the whole path is one vector per prompt,
``direction``, so a direct effect is a dot product. This is how the components module's direct logit
attribution reads a component (its DLAs sum with the constant terms to the logit difference), and how
McGrath et al. ("The Hydra Effect", 2023) and Rushing & Nanda (2024) read direct effects.

Soft-capped logits (``final_logit_softcapping``) are read before the cap, as the components module does.
"""

from __future__ import annotations

import torch

from ..probes import HeadscopeError, Model
from ..probes.readouts.decompose import readout

LINEAR = ("logit_diff", "logit")


class DirectPath:
    """The frozen final readout of ``model`` at the clean residual streams ``final`` (``[B, d_model]``)."""

    def __init__(self, model: Model, final: torch.Tensor):
        self.readout = readout(model)
        self.final = final.float().to(model.device)
        self.scale = self.readout.norm.scale(self.final)  # [B, 1]

    def logits(self) -> torch.Tensor:
        """The clean pre-cap logits ``[B, vocab]``."""
        return self.readout.frozen(self.final, self.scale)

    def delta_logits(self, delta: torch.Tensor) -> torch.Tensor:
        """The change of the pre-cap logits ``[..., B, vocab]`` that a change ``delta`` ``[..., B, d_model]`` of
        one component's output makes through the direct path (no constant term: it belongs to no component)."""
        norm = self.readout.norm
        return (norm.centered(delta.float()) / self.scale * norm.weight) @ self.readout.w_u.float()

    def metric_vector(self, metric: str, targets: torch.Tensor, foils: torch.Tensor | None) -> torch.Tensor:
        """``[B, d_model]``: for a metric linear in the logits (``LINEAR``), the vector ``u`` with ``metric =
        u . N(x)`` plus a constant, ``N`` the final norm: the target's unembedding minus the foil's, or minus the
        mean unembedding (the centred logit), one per prompt."""
        if metric not in LINEAR:
            raise HeadscopeError(f"metric {metric!r} is not linear in the logits; use one of {', '.join(LINEAR)}")
        w_u = self.readout.w_u.float()
        u = w_u[:, targets.to(w_u.device)].T
        return u - (w_u[:, foils.to(w_u.device)].T if metric == "logit_diff" else w_u.mean(1))

    def direction(self, u: torch.Tensor) -> torch.Tensor:
        """``[B, d_model]``: ``g`` with ``x . g`` the direct effect of a component's output ``x`` on the metric of
        ``metric_vector`` ``u``, through the frozen norm."""
        norm = self.readout.norm
        g = u * norm.weight / self.scale
        return g - g.mean(-1, keepdim=True) if norm.center else g  # C(x) . v = x . C(v) for LayerNorm's centring

    def normed(self, x: torch.Tensor) -> torch.Tensor:
        """The final norm of residual streams ``x`` with its scale recomputed (a total effect's readout)."""
        return self.readout.norm(x.float())
