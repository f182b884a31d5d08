"""Hook names: TransformerLens's vocabulary (the field's shared one), written in one place.

``hooks.resid_pre(3) == "blocks.3.hook_resid_pre"``; per-head hooks (``z``, ``q``, ``k``, ``v``,
``pattern``) are laid out ``[batch, pos, head, d_head]`` (``pattern``: ``[batch, head, dest, src]``).
"""

from __future__ import annotations


def block(layer: int, name: str) -> str:
    """``blocks.{layer}.{name}``."""
    return f"blocks.{layer}.{name}"


def resid_pre(layer: int) -> str:
    return block(layer, "hook_resid_pre")


def resid_mid(layer: int) -> str:
    return block(layer, "hook_resid_mid")


def resid_post(layer: int) -> str:
    return block(layer, "hook_resid_post")


def attn_out(layer: int) -> str:
    """The attention block's output added to the residual stream."""
    return block(layer, "hook_attn_out")


def mlp_out(layer: int) -> str:
    """The MLP block's output added to the residual stream."""
    return block(layer, "hook_mlp_out")


def z(layer: int) -> str:
    """Per-head attention outputs before ``W_O``."""
    return block(layer, "attn.hook_z")


def q(layer: int) -> str:
    return block(layer, "attn.hook_q")


def k(layer: int) -> str:
    return block(layer, "attn.hook_k")


def v(layer: int) -> str:
    return block(layer, "attn.hook_v")


def pattern(layer: int) -> str:
    """Attention weights (only eager attention computes them)."""
    return block(layer, "attn.hook_pattern")


def attn_hook_in(layer: int) -> str:
    """The attention module's input hook (the normalised stream it reads)."""
    return block(layer, "attn.hook_in")


def attn_hook_out(layer: int) -> str:
    """The attention module's own output hook (before a post-attention norm, where the model has one)."""
    return block(layer, "attn.hook_out")


def mlp_post(layer: int) -> str:
    """The MLP's hidden activations (its neurons)."""
    return block(layer, "mlp.hook_post")


def mlp_in(layer: int) -> str:
    """The MLP module's input (after the block's second norm)."""
    return block(layer, "mlp.hook_in")


def mlp_hook_out(layer: int) -> str:
    """The MLP module's own output hook."""
    return block(layer, "mlp.hook_out")
