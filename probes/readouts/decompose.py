"""Linear pieces of the residual stream: normalisations as formulas, and per-head outputs.

The residual stream after the last block is a sum of pieces (the embeddings, each attention and MLP
output), and an attention output is a sum over heads of ``z_h @ W_O[h]`` (plus ``b_O``). A
normalisation ``N(x) = w * C(x) / s(x) + beta`` (``C`` centres for LayerNorm and is the identity for
RMSNorm; Gemma stores ``w`` as an offset from 1) is not linear, but with its scale ``s`` frozen at the
value it takes on the whole sum it is: ``N(x) = sum_i w * C(c_i) / s + beta``. That is how direct
logit attribution reads a component through the final norm, and how a head's share of an attention
output passes a post-attention norm (Gemma's ``ln1_post``), so that the pieces add up exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import HeadscopeError
from ..models.model import Model
from ..models.placement import materialized


@dataclass
class Norm:
    """A LayerNorm or RMSNorm as its formula, in float32."""

    center: bool
    weight: torch.Tensor  # the effective multiplier (1 + w for offset norms)
    bias: torch.Tensor | None
    eps: float

    def centered(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x - x.mean(-1, keepdim=True) if self.center else x

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """``s(x)``, shaped ``[..., 1]``."""
        return (self.centered(x).pow(2).mean(-1, keepdim=True) + self.eps).sqrt()

    def linear(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``w * C(x) / scale``: the norm with a frozen scale and without its bias."""
        return self.centered(x) / scale * self.weight

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x, self.scale(x))
        return out if self.bias is None else out + self.bias


def norm_of(bridge_norm) -> Norm:
    """The formula of one of the bridge's normalisation components (``ln_final``, ``ln1_post``...)."""
    module = bridge_norm.original_component
    with materialized(module):  # a copy: an offloaded module holds placeholders outside a forward
        weight = bridge_norm.weight.detach().float().clone()
        bias = getattr(module, "bias", None)
        bias = None if bias is None else bias.detach().float().clone()
    if bridge_norm.uses_weight_offset:
        weight = 1.0 + weight
    eps = getattr(module, "eps", None) or getattr(module, "variance_epsilon", None) or getattr(
        bridge_norm.config, "eps", 1e-5)
    return Norm(center=not bridge_norm.uses_rms_norm, weight=weight,
                bias=None if bias is None or bridge_norm.uses_rms_norm else bias, eps=float(eps))


def final_norm(model: Model) -> Norm:
    return norm_of(model.bridge.ln_final)


def unembed_matrix(model: Model) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``W_U`` ``[d_model, vocab]`` and ``b_U`` (None when the model has no output bias), float32."""
    bridge = model.bridge
    with materialized(bridge.unembed.original_component):
        b_u = getattr(bridge.unembed, "b_U", None)
        b_u = None if b_u is None else b_u.detach().float().clone()
        w_u = bridge.W_U.detach().float().clone()
    return w_u, None if b_u is None or not bool(b_u.abs().max() > 0) else b_u


def head_outputs(model: Model, layer: int, z: torch.Tensor,
                 attn_out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each head's share of block ``layer``'s attention output as written to the residual stream.

    ``z`` is ``[..., n_heads, d_head]`` (``hook_z``, or a part of it such as the contribution of some
    source tokens). Returns ``heads`` ``[..., n_heads, d_model]`` (``z_h @ W_O[h]``) and the output
    bias ``b_O`` as it reaches the stream (None when there is none); ``heads.sum(-2) + bias`` is
    ``hook_attn_out``. On architectures with a post-attention norm (Gemma's ``ln1_post``), ``attn_out``
    (the block's whole ``attn.hook_out``, ``[..., d_model]``) gives the frozen scale of that norm.
    """
    block = model.bridge.blocks[layer]
    with materialized(block.attn.original_component):
        w_o = block.attn.W_O.detach().float().to(z.device)  # [n_heads, d_head, d_model]
        b_o = getattr(block.attn, "b_O", None)
        b_o = None if b_o is None else b_o.detach().float().to(z.device)
    heads = torch.einsum("...hd,hdm->...hm", z.float(), w_o)
    bias = None if b_o is None else b_o.expand(heads.shape[:-2] + heads.shape[-1:])
    post = getattr(block, "ln1_post", None)
    if post is not None:
        if attn_out is None:
            raise HeadscopeError("this architecture normalises the attention output: head_outputs needs attn_out")
        norm = norm_of(post)
        scale = norm.scale(attn_out).to(z.device)
        heads = norm.linear(heads, scale[..., None, :])
        bias = None if bias is None else norm.linear(bias, scale)
    return heads, bias


class Readout:
    """The final readout, the one map from residual-stream vectors to logits: final norm (formula),
    unembedding and soft-capping, differentiable, with the unembedding kept once in ``dtype`` (casting
    the bridge's weights on every call would cost more than the product itself). ``frozen`` reads
    vectors with the norm's scale held fixed (direct effects, neuron scores); ``readout(model)`` keeps
    one per model for the lenses and component decoding."""

    def __init__(self, model: Model, dtype: torch.dtype = torch.float32):
        self.norm = final_norm(model)
        w_u, self.b_u = unembed_matrix(model)
        self.w_t = w_u.T.to(model.device, dtype).contiguous()  # [vocab, d_model]
        self.dtype = dtype
        self.cap = getattr(model.hf_model.config, "final_logit_softcapping", None)
        for name in ("weight", "bias"):
            value = getattr(self.norm, name)
            if value is not None:
                setattr(self.norm, name, value.to(model.device))
        if self.b_u is not None:
            self.b_u = self.b_u.to(model.device)
        bias = self.norm.bias @ self.w_t.T.float() if self.norm.bias is not None else None
        self.frozen_bias = bias if self.b_u is None else (self.b_u if bias is None else bias + self.b_u)

    @property
    def w_u(self) -> torch.Tensor:
        """``W_U`` ``[d_model, vocab]`` (a view)."""
        return self.w_t.T

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.nn.functional.linear(self.norm(x.float()).to(self.dtype), self.w_t).float()
        if self.b_u is not None:
            logits = logits + self.b_u
        return self.capped(logits)

    def capped(self, logits: torch.Tensor) -> torch.Tensor:
        """Soft-capping ``cap * tanh(logits / cap)``, where the model has it."""
        return torch.tanh(logits / self.cap) * self.cap if self.cap else logits

    def frozen(self, x: torch.Tensor, scale: torch.Tensor, cols=slice(None)) -> torch.Tensor:
        """Logits before soft-capping of ``x`` ``[..., d]`` with the norm's scale frozen at ``scale`` ``[..., 1]``
        (vocabulary columns ``cols``)."""
        logits = (self.norm.centered(x) / scale * self.norm.weight) @ self.w_u[:, cols].float()
        return logits if self.frozen_bias is None else logits + self.frozen_bias[cols]

    def frozen_logprob(self, x: torch.Tensor, scale: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``log p(ids | x)`` with the frozen scale, for ``x`` ``[P, ..., d]`` and one id per prompt."""
        logp = torch.log_softmax(self.capped(self.frozen(x, scale)), -1)
        index = ids.view(-1, *([1] * (logp.dim() - 1))).expand(*logp.shape[:-1], 1)
        return logp.gather(-1, index)[..., 0]


def readout(model: Model) -> Readout:
    """The model's float32 ``Readout``, made once (the weights are frozen)."""
    if getattr(model, "_readout", None) is None:
        model._readout = Readout(model)
    return model._readout


def decode(model: Model, resid: torch.Tensor) -> torch.Tensor:
    """Float32 logits of residual-stream vectors ``[..., d_model]`` through the final readout
    (differentiable in ``resid``)."""
    return readout(model)(resid.to(model.device))
