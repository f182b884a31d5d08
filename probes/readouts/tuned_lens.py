"""The tuned lens (Belrose et al., "Eliciting Latent Predictions from Transformers with the Tuned Lens").

One affine translator per layer, applied residually, ``h + A_l h + b_l``, before the model's own final
norm and unembedding (both frozen). Layers follow the logit lens: 0 is the embeddings, ``l`` the
stream after block ``l - 1``; layer ``n_layers`` is the model's output and has no translator. The
translators start at zero, so an untrained lens is exactly the logit lens.

Training follows AlignmentResearch/tuned-lens: minimise KL(final || lens) at the same position,
averaged over tokens and summed over layers; SGD with Nesterov momentum 0.9, learning rate
``lr_scale * (1 - momentum)`` = 0.1, weight decay 1e-3 (which pulls ``A`` towards zero, i.e. the map
towards the identity), the learning rate decaying linearly to zero without warm-up, gradients
clipped to norm 1 jointly over all layers, 250 steps, lens logits from a bfloat16 unembedding (on a
GPU; ``autocast``). Deviations, for a 2-core CPU: on the CPU the lens logits are float32 (on a CPU
without bfloat16 instructions, AVX-512 only, bfloat16 training steps were 2.4x slower); the reference
streams 2^18 tokens per step from the Pile; here the text is the project's own passages (or the
user's), the model runs once over the training text, and each step draws ``tokens // steps``
positions at random from that pool (the default ``tokens`` is 2^14, about nine minutes on 2 CPU cores
for the default model; raise it on a GPU). The training loss is computed by a fused function
(``_CrossEntropyToFinal``) that keeps one vocabulary-sized buffer.

A lens is saved as safetensors (translators, with the model identity and training record in the
file's metadata) plus a readable JSON beside it, and refuses to load for a model whose identity
(``Model.identity``: architecture, sizes, weight fingerprint) differs.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from ..models import hooks
from ..models.atomic import atomic_file
from ..text.corpus import read_texts, token_chunks
from .decompose import Readout
from ..engine.batching import row_chunks
from ..engine.run import run
from ..errors import HeadscopeError
from ..models.model import Model
from ..models.files import cache_dir
from ..results.outputs import check_output_file
from ..results.result import Result, library_versions
from ..progress import tracked


class TunedLens:
    """Translators ``weight[l]`` (``[d_model, d_model]``) and ``bias[l]`` for layers ``0..n_layers-1``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, meta: dict):
        self.weight = weight
        self.bias = bias
        self.meta = meta

    @classmethod
    def zeros(cls, model: Model) -> "TunedLens":
        """The untrained lens: every translator is zero, so it reads like the logit lens."""
        L, d = model.n_layers, model.d_model
        return cls(torch.zeros(L, d, d, device=model.device), torch.zeros(L, d, device=model.device),
                   {"model": model.identity(), "spec": model.spec, "trained": None})

    @property
    def n_layers(self) -> int:
        return self.weight.shape[0]

    def transform(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """``h + h A^T + b`` for layers below ``n_layers``; the output layer passes unchanged."""
        if layer >= self.n_layers:
            return h
        w, b = self.weight[layer].to(h.device), self.bias[layer].to(h.device)
        x = h.float()
        return x + x @ w.T + b

    def check(self, model: Model) -> None:
        """Refuse a lens trained for another model."""
        mine, theirs = self.meta["model"], model.identity()
        if mine != theirs:
            raise HeadscopeError(f"this tuned lens was trained for {self.meta.get('spec')!r} "
                                 f"({mine['architecture']}, fingerprint {mine['fingerprint'][:12]}), not for "
                                 f"{model.spec!r} ({theirs['architecture']}, fingerprint {theirs['fingerprint'][:12]})")

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write ``path`` (safetensors; ``.safetensors`` is added when missing) and its ``.json`` beside it.

        Existing files are refused unless both are a tuned lens of ours and ``overwrite`` is true."""
        from safetensors.torch import save_file

        path = check_lens_path(path, overwrite)
        text = json.dumps(self.meta, indent=2)
        with atomic_file(path) as tmp:
            save_file({"weight": self.weight.detach().float().cpu().contiguous(),
                       "bias": self.bias.detach().float().cpu().contiguous()}, str(tmp), metadata={"headscope": text})
        with atomic_file(path.with_suffix(".json")) as tmp:
            tmp.write_text(text)
        return path


def check_lens_path(path: str | Path, overwrite: bool = False) -> Path:
    """The lens file ``TunedLens.save`` would write (``.safetensors`` added), checked with its ``.json``."""
    path = Path(path).expanduser()
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    check_output_file(path, overwrite, _is_lens_file)
    check_output_file(path.with_suffix(".json"), overwrite, lambda p: _is_lens_file(p.with_suffix(".safetensors")))
    return path


def _is_lens_file(path: Path) -> bool:
    """A safetensors file written by ``TunedLens.save``."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return "headscope" in (f.metadata() or {})
    except (SafetensorError, OSError, ValueError):
        return False


def default_path(model: Model) -> Path:
    """Where ``lens-train`` keeps a model's lens when no file is named: the cache, by weight fingerprint."""
    return cache_dir() / "lenses" / f"{model.identity()['fingerprint']}.safetensors"


def load_tuned_lens(model: Model, path: str | Path | None = None) -> TunedLens:
    """The tuned lens at ``path`` (default: this model's lens in the cache), checked against ``model``."""
    from safetensors import SafetensorError, safe_open

    path = Path(path) if path is not None else default_path(model)
    if not path.is_file():
        hint = "" if path != default_path(model) else f"; train one with: headscope lens-train --model {model.spec}"
        raise HeadscopeError(f"no tuned lens at {path}{hint}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["headscope"])
            weight, bias = f.get_tensor("weight"), f.get_tensor("bias")
    except (SafetensorError, KeyError, ValueError, OSError) as err:
        raise HeadscopeError(f"{path} is not a headscope tuned lens ({type(err).__name__}: {err})") from None
    lens = TunedLens(weight.to(model.device), bias.to(model.device), meta)
    lens.check(model)
    return lens


def train_tuned_lens(
    model: Model,
    text: str | Path | Sequence[str] | None = None,
    *,
    tokens: int = 2**14,
    steps: int = 250,
    seq_len: int = 256,
    lr_scale: float = 1.0,
    momentum: float = 0.9,
    weight_decay: float = 1e-3,
    clip: float = 1.0,
    micro_batch: int = 1024,
    autocast: bool | None = None,
    seed: int = 0,
    progress: bool = True,
) -> TunedLens:
    """Train a tuned lens on ``text`` (default: the shipped passages' training split); module docstring.
    ``autocast``: lens logits from a bfloat16 unembedding (default: on a GPU only)."""
    for name, value, low in (("tokens", tokens, 1), ("steps", steps, 1), ("micro_batch", micro_batch, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise HeadscopeError(f"{name} {value!r} must be a positive integer")
    if tokens < steps:
        raise HeadscopeError(f"tokens ({tokens}) must be at least steps ({steps}): each step needs a token")
    started = time.perf_counter()
    if autocast is None:
        autocast = model.device.type == "cuda"
    generator = torch.Generator().manual_seed(seed)
    ids = token_chunks(model, read_texts(text), seq_len)
    n_seq = min(len(ids), math.ceil(tokens / seq_len))
    ids = ids[torch.randperm(len(ids), generator=generator)[:n_seq]]
    pool = residual_pool(model, ids, progress)  # [n_layers + 1, n_seq * seq_len, d_model]

    exact = Readout(model)
    lens_readout = Readout(model, torch.bfloat16 if autocast else torch.float32)
    lens = TunedLens.zeros(model)
    # one tensor per layer: indexing a stacked parameter would make every layer's backward
    # write a gradient the size of all layers
    weights = [torch.nn.Parameter(w.clone()) for w in lens.weight]
    biases = [torch.nn.Parameter(b.clone()) for b in lens.bias]
    params = weights + biases
    optimizer = torch.optim.SGD(params, lr=lr_scale * (1 - momentum), momentum=momentum, nesterov=True,
                                weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    per_step = tokens // steps
    order = torch.randperm(pool.shape[1], generator=generator)
    cursor = 0
    history = []
    for _ in tracked(range(steps), desc="tuned lens", unit="step", disable=not progress):
        if cursor + per_step > len(order):
            order, cursor = torch.randperm(pool.shape[1], generator=generator), 0
        picked = order[cursor:cursor + per_step].to(pool.device)
        cursor += per_step
        losses = torch.zeros(model.n_layers)
        for part in picked.split(micro_batch):
            with torch.no_grad():
                final = torch.log_softmax(exact(pool[-1, part]), -1)
                p = final.exp()
                neg_entropy = float((p * final).sum()) / len(picked)
            for layer in range(model.n_layers):
                h = pool[layer, part].float()
                translated = h + h @ weights[layer].T + biases[layer]
                loss = _CrossEntropyToFinal.apply(lens_readout(translated), p) / len(picked)
                loss.backward()
                losses[layer] += float(loss.detach()) + neg_entropy
        torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        history.append(losses.tolist())
    lens.weight, lens.bias = torch.stack(weights).detach(), torch.stack(biases).detach()
    lens.meta["trained"] = {
        "text": "shipped passages (train split)" if text is None else str(text) if isinstance(text, (str, Path))
        else f"{len(text)} given texts", "tokens": tokens, "steps": steps, "tokens_per_step": per_step,
        "seq_len": seq_len, "pool_tokens": int(pool.shape[1]), "optimizer": "SGD, Nesterov",
        "lr": lr_scale * (1 - momentum), "momentum": momentum, "weight_decay": weight_decay, "clip": clip,
        "schedule": "linear decay to 0, no warm-up", "autocast": "bfloat16" if autocast else None, "seed": seed,
        "first_step_kl": history[0], "last_step_kl": history[-1], "device": str(model.device),
        "seconds": round(time.perf_counter() - started, 1), "versions": library_versions()}
    return lens


class _CrossEntropyToFinal(torch.autograd.Function):
    """``sum_rows(logsumexp(y) - p . y)``: KL(p || softmax(y)) up to p's own entropy, with the softmax
    kept for the backward pass, whose gradient ``softmax(y) - p`` is formed in place."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        top = logits.max(-1, keepdim=True).values
        q = (logits - top).exp_()
        total = q.sum(-1, keepdim=True)
        lse = top + total.log()
        ctx.save_for_backward(q.div_(total), p)
        return (lse[:, 0] - torch.einsum("nv,nv->n", p, logits)).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        q, p = ctx.saved_tensors
        return q.sub_(p).mul_(grad), None


def residual_pool(model: Model, ids: torch.Tensor, progress: bool = False) -> torch.Tensor:
    """Every layer's residual stream (embeddings, after each block) at every position of ``ids``:
    ``[n_layers + 1, n_seq * seq_len, d_model]`` on the model's device."""
    names = [hooks.resid_pre(0)] + [hooks.resid_post(l) for l in range(model.n_layers)]
    n_seq, seq_len = ids.shape
    pool = torch.empty(len(names), n_seq * seq_len, model.d_model, device=model.device, dtype=model.dtype)
    for sl in tracked(row_chunks(model, n_seq, seq_len), desc="residual stream", unit="batch", disable=not progress):
        batch = model.batch_of_ids(ids[sl])
        cache = run(model, batch, record=names).cache
        for i, hook in enumerate(names):
            pool[i, sl.start * seq_len: sl.stop * seq_len] = cache[hook].flatten(0, 1)
    return pool


class LensKL(Result):
    """Per layer and lens: mean KL(final || lens) and next-token cross-entropy, in nats per token."""

    kind = "lens-kl"
    table = "lens_kl"

    def plot(self):
        import plotly.express as px

        fig = px.line(self.frame, x="layer", y="kl", color="lens", markers=True, log_y=True,
                      title=f"KL(final || lens) on held-out text, {self.meta.get('model')}")
        fig.update_layout(yaxis_title="nats per token")
        return fig


def lens_kl(
    model: Model,
    lens: TunedLens | None = None,
    text: str | Path | Sequence[str] | None = None,
    *,
    tokens: int = 2**12,
    seq_len: int = 256,
    micro_batch: int = 512,
    progress: bool = True,
) -> LensKL:
    """The logit lens (and ``lens``, when given) scored at every layer on ``text`` (default: the shipped
    passages' held-out split), the first ``tokens`` tokens of it: KL to the model's final
    distribution at the same position, and cross-entropy of the next token (the last position of
    each sequence has no next token and counts for KL only)."""
    started = time.perf_counter()
    if lens is not None:
        lens.check(model)
    ids = token_chunks(model, read_texts(text, split="test"), seq_len)
    ids = ids[: max(1, math.ceil(tokens / seq_len))]
    pool = residual_pool(model, ids, progress)
    n = pool.shape[1]
    nxt = torch.cat([ids[:, 1:], torch.full((len(ids), 1), -1)], dim=1).flatten().to(pool.device)
    lenses = {"logit": None} if lens is None else {"logit": None, "tuned": lens}
    readout = Readout(model)
    sums = {(name, layer): [0.0, 0.0] for name in lenses for layer in range(model.n_layers + 1)}
    with torch.no_grad():
        for part in torch.arange(n, device=pool.device).split(micro_batch):
            final = torch.log_softmax(readout(pool[-1, part]), -1)
            target = nxt[part]
            has_next = target >= 0
            for name, tl in lenses.items():
                for layer in range(model.n_layers + 1):
                    h = pool[layer, part] if tl is None else tl.transform(layer, pool[layer, part])
                    logq = torch.log_softmax(readout(h), -1)
                    sums[(name, layer)][0] += float((final.exp() * (final - logq)).sum())
                    sums[(name, layer)][1] += float(-logq[has_next].gather(-1, target[has_next, None]).sum())
    n_next = int((nxt >= 0).sum())
    frame = pd.DataFrame([{"layer": layer, "lens": name, "kl": max(v[0] / n, 0.0), "ce": v[1] / n_next}
                          for (name, layer), v in sums.items()])
    meta = {"model": model.spec, "text": "shipped passages (test split)" if text is None else str(text),
            "tokens": n, "seq_len": seq_len, "units": "nats per token",
            "lens_trained": None if lens is None else lens.meta.get("trained"),
            "layers": "0 = embeddings, l = after block l-1", "seconds": round(time.perf_counter() - started, 1)}
    return LensKL(frame, meta)
