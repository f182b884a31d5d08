"""Applying steering vectors: the engine's interventions for a vector, a strength per row, and where.

A *setting* is a layer (or every layer of the vector: ``ALL``), a strength and a control: the ``vector``
itself, a ``random`` direction of the same norm at each (layer, position) (Gaussian, seeded), or the
``zero`` vector. Each row of a batch carries its own setting, so a sweep over strengths x layers x
controls is rows of one forward. Where the vector is added (``places``):

- ``prompt``: every position of the prompt;
- ``generated``: the positions that produce new tokens, the prompt's last one and each generated token;
- ``all``: both.

A vector made from one layer's residual stream is added there, ``strength * v``. ActAdd's per-position
vector is added at the prompt's first positions (its ``places`` are the prompt's). An in-context vector
is added at every layer it has to the stream leaving the block, then each position's norm is restored
(Liu et al.): ``x' = |x| * unit(unit(x) + strength * unit(v))``, so strength is a step on the unit
sphere, relative to the latent's own norm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...probes import HeadscopeError, Intervention, Model
from .vectors import SteeringVector

PLACES = ("all", "prompt", "generated")
CONTROLS = ("vector", "random", "zero")
ALL = -1  # the layer of a setting that steers every layer of the vector


@dataclass(frozen=True)
class Setting:
    layer: int
    strength: float
    control: str = "vector"

    @property
    def inert(self) -> bool:
        """Adds nothing: the clean run."""
        return self.strength == 0 or self.control == "zero"


class Steering:
    """The interventions of ``vector`` for rows that each carry a ``Setting``."""

    def __init__(self, model: Model, vector: SteeringVector, places: str = "all", seed: int = 0):
        vector.check_model(model)
        if places not in PLACES:
            raise HeadscopeError(f"unknown places {places!r}; use one of {', '.join(PLACES)}")
        self.model, self.vector, self.places = model, vector, places
        self.norm_restoring = vector.meta["method"] == "icv"
        self.front = vector.meta["method"] == "actadd"
        base = vector.vectors
        if self.norm_restoring:  # a step on the unit sphere: each layer's direction alone
            base = torch.nn.functional.normalize(base, dim=-1)
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(base.shape, generator=generator)
        self.base = base
        self.random = noise / noise.norm(dim=-1, keepdim=True) * base.norm(dim=-1, keepdim=True)  # same norms

    def layers_of(self, setting: Setting) -> list[int]:
        return self.vector.layers if setting.layer == ALL else [setting.layer]

    def check(self, settings: list[Setting]) -> None:
        for s in settings:
            if s.control not in CONTROLS:
                raise HeadscopeError(f"unknown control {s.control!r}; use one of {', '.join(CONTROLS)}")
            if s.layer != ALL:
                self.vector.at(s.layer)

    def first_layer(self, settings: list[Setting]) -> int:
        """The lowest block any of ``settings`` changes (a forward of them can start there)."""
        return min(min(self.layers_of(s)) for s in settings)

    def direction(self, setting: Setting, layer: int) -> torch.Tensor:
        """``[positions, d_model]``: what ``setting`` adds at ``layer`` before its strength."""
        index = self.vector.layers.index(layer)
        if setting.control == "zero":
            return torch.zeros_like(self.base[index])
        return (self.random if setting.control == "random" else self.base)[index]

    def interventions(self, settings: list[Setting], prompt: bool, last: torch.Tensor | None = None,
                      lengths: torch.Tensor | None = None) -> list[Intervention]:
        """The interventions of a forward whose row ``r`` carries ``settings[r]``: over prompts (``prompt``;
        ``last``: each row's last real position, ``lengths``: each row's length) or one generated token each."""
        if not prompt and (self.places == "prompt" or self.front):
            return []
        out = []
        by_layer: dict[int, list[int]] = {}
        for row, setting in enumerate(settings):
            if not setting.inert:
                for layer in self.layers_of(setting):
                    by_layer.setdefault(layer, []).append(row)
        dev, dtype = self.model.device, self.model.dtype
        for layer, rows in by_layer.items():
            values = torch.stack([settings[r].strength * self.direction(settings[r], layer) for r in rows])  # [k, p, d]
            values = values.to(dev, dtype if not self.norm_restoring else torch.float32)
            index = torch.tensor(rows)
            hook = self.vector.hook_name(layer)
            positions = None
            if prompt and self.front:
                width = values.shape[1]
                if lengths is not None and int(lengths[index].min()) < width:
                    raise HeadscopeError(f"this ActAdd vector covers {width} positions; a prompt of "
                                         f"{int(lengths[index].min())} tokens is shorter than that")
                positions = torch.arange(width).expand(len(rows), width)
            elif prompt and self.places == "generated":
                positions, values = last[index].cpu(), values[:, 0]
            if self.norm_restoring:
                out.append(Intervention.apply(hook, _restoring(values), rows=index, positions=positions))
            else:
                out.append(Intervention.add(hook, values, rows=index, positions=positions))
        return out


def _restoring(steps: torch.Tensor):
    """``x -> |x| unit(unit(x) + step)`` per row, ``steps`` ``[k, 1, d]`` (or ``[k, d]`` for one position per
    row) already times the strength."""
    def apply(x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        unit = torch.nn.functional.normalize(xf, dim=-1)
        return (torch.nn.functional.normalize(unit + steps, dim=-1) * xf.norm(dim=-1, keepdim=True)).to(x.dtype)

    return apply
