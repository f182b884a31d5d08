"""Interventions: the one kind of object the engine applies to activations, per row of a batch.

An ``Intervention`` says *where* and *what*:

- where: a hook name, and optionally ``rows`` (a 1-D index tensor; all rows when None), ``positions``
  (one per row, ``[k]``, or several per row, ``[k, p]``; all positions when None) and, for per-head
  hooks laid out ``[batch, pos, head, d_head]`` (``hook_z``, ``hook_q``...), ``heads`` (one per row);
- what: ``set`` the selection to a value (zero when None), ``add`` a vector times ``scale``,
  ``scale`` it by a factor or a gate (a tensor that may require grad), ``project`` it through a matrix
  (``project_out`` / ``keep`` a subspace, or any per-row matrix), or ``apply`` a function to it.

The selection is ``act[rows, positions]`` (per-head hooks: ``act.transpose(1, 2)[rows, heads,
positions]``), shaped ``[k, ...]``; values, factors and matrices broadcast against it. A sweep puts
its variants on the batch axis and gives each row its own intervention through these indices, so a
hundred ablations or patches run as one forward. The engine registers the hooks; nothing else does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

OPS = ("set", "add", "scale", "project", "apply")


@dataclass
class Intervention:
    """Change ``hook``'s activation at (``rows``, ``positions``, ``heads``) by ``op`` (module docstring)."""

    hook: str
    op: str = "set"
    value: torch.Tensor | float | None = None
    rows: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    heads: torch.Tensor | None = None
    fn: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"unknown intervention op {self.op!r}; use one of {', '.join(OPS)}")
        if self.op == "apply" and self.fn is None:
            raise ValueError("an 'apply' intervention needs fn")

    # -- what, as constructors ----------------------------------------------------------------

    @classmethod
    def set(cls, hook: str, value: torch.Tensor | float | None = None, **where) -> "Intervention":
        """Set the selection to ``value`` (zero when None): ablation, patching, restoration."""
        return cls(hook, "set", value, **where)

    @classmethod
    def add(cls, hook: str, vector: torch.Tensor, scale: float | torch.Tensor = 1.0, **where) -> "Intervention":
        """Add ``scale * vector``: noise, steering vectors, edge patches as differences."""
        return cls(hook, "add", vector * scale, **where)

    @classmethod
    def scale(cls, hook: str, factor: torch.Tensor | float, **where) -> "Intervention":
        """Multiply by ``factor`` (a number, or a tensor such as a gate that requires grad)."""
        return cls(hook, "scale", factor, **where)

    @classmethod
    def project(cls, hook: str, matrix: torch.Tensor, **where) -> "Intervention":
        """Right-multiply the selection's last axis by ``matrix`` (``[d, d]``, or ``[k, d, d]`` per row)."""
        return cls(hook, "project", matrix, **where)

    @classmethod
    def project_out(cls, hook: str, basis: torch.Tensor, **where) -> "Intervention":
        """Remove the span of ``basis``'s orthonormal rows (``[r, d]``): ``x - x B^T B``."""
        return cls.project(hook, _eye_like(basis) - basis.T @ basis, **where)

    @classmethod
    def keep(cls, hook: str, basis: torch.Tensor, **where) -> "Intervention":
        """Keep only the span of ``basis``'s orthonormal rows (``[r, d]``): ``x B^T B``."""
        return cls.project(hook, basis.T @ basis, **where)

    @classmethod
    def apply(cls, hook: str, fn: Callable[[torch.Tensor], torch.Tensor], **where) -> "Intervention":
        """Replace the selection by ``fn(selection)``, for anything the other kinds do not say."""
        return cls(hook, "apply", None, fn=fn, **where)

    # -- applying -----------------------------------------------------------------------------

    def __repr__(self) -> str:  # TransformerLens formats hook functions it registers: keep it cheap
        rows = "all" if self.rows is None else len(self.rows)
        return f"Intervention({self.hook!r}, {self.op}, rows={rows})"

    def __call__(self, act: torch.Tensor, hook=None) -> torch.Tensor:
        index = self._index(act)
        if not index:  # the whole activation: a new tensor, nothing written in place
            return self._new(act)
        act = act.clone() if act.requires_grad or self.op != "set" else act
        target = act if self.heads is None else act.transpose(1, 2)  # a view: writes go through to act
        if self.op == "set":  # written without reading the selection first (sweeps set many rows)
            value = self.value
            target[index] = 0.0 if value is None else (
                value.to(device=act.device, dtype=act.dtype) if isinstance(value, torch.Tensor) else value)
        else:
            target[index] = self._new(target[index])
        return act

    def _index(self, act: torch.Tensor) -> tuple:
        device = act.device
        if self.rows is None and self.heads is None and self.positions is None:
            return ()
        rows = torch.arange(act.shape[0], device=device) if self.rows is None else self.rows.to(device)
        positions = None if self.positions is None else self.positions.to(device)
        if positions is not None and positions.ndim == 2:
            rows = rows[:, None]
        index = [rows]
        if self.heads is not None:
            heads = self.heads.to(device)
            index.append(heads[:, None] if positions is not None and positions.ndim == 2 else heads)
        if positions is not None:
            index.append(positions)
        return tuple(index)

    def _new(self, selected: torch.Tensor) -> torch.Tensor:
        value = self.value
        if isinstance(value, torch.Tensor):
            value = value.to(device=selected.device, dtype=selected.dtype)
        if self.op == "set":
            if value is None:
                return torch.zeros_like(selected)
            return torch.broadcast_to(value, selected.shape) if isinstance(value, torch.Tensor) else torch.full_like(selected, value)
        if self.op == "add":
            return selected + value
        if self.op == "scale":
            return selected * value
        if self.op == "project":
            if value.ndim == 3 and selected.ndim == 2:  # one position per row, a matrix per row
                return (selected[:, None] @ value)[:, 0]
            return selected @ value
        return self.fn(selected)


def _eye_like(basis: torch.Tensor) -> torch.Tensor:
    return torch.eye(basis.shape[-1], device=basis.device, dtype=basis.dtype)


def Edit(hook: str, rows: torch.Tensor | None = None, positions: torch.Tensor | None = None,
         heads: torch.Tensor | None = None, value: torch.Tensor | float | None = None) -> Intervention:
    """``Intervention.set`` under its first name (zero when ``value`` is None)."""
    return Intervention.set(hook, value, rows=rows, positions=positions, heads=heads)
