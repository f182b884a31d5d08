"""The model wrapper: one TransformerLens ``TransformerBridge`` over a ``transformers`` causal LM.

It knows the model's structure, tokenizes with character offsets, and pads batches on the right:
with causal attention a right-padded prompt's real positions see exactly what they see when the
prompt runs alone, so position ``p`` of row ``r`` means the same in a batch as alone, and the
padding (whose outputs are ignored) needs no position-id shift.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import HeadscopeError
from .placement import devices


@dataclass
class Tokens:
    """One prompt's tokens: ids, the string of each token, and its character span in the text."""

    text: str
    ids: list[int]
    strings: list[str]
    spans: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.ids)

    def positions_of(self, start: int, end: int) -> list[int]:
        """Token positions whose character span overlaps ``[start, end)``."""
        return [i for i, (a, b) in enumerate(self.spans) if a < end and b > start and b > a]

    def position(self, p: int) -> int:
        """``p`` as a position from 0 (negative counts from the end), or an error naming it."""
        n = len(self.ids)
        if isinstance(p, bool) or not isinstance(p, int) or not -n <= p < n:
            raise HeadscopeError(f"position {p!r} out of range for a prompt of {n} tokens")
        return p % n

    def locate(self, text: str, start: int | None = None, role: str = "text") -> list[int]:
        """Token positions covering ``text`` in the prompt, by character offsets: its last occurrence,
        or the one starting at character ``start``; ``role`` names it in errors (e.g. subject)."""
        if not isinstance(text, str) or not text.strip():
            raise HeadscopeError(f"empty {role}: give its text as it appears in the prompt")
        if start is None:
            start = self.text.rfind(text)
            if start < 0:
                raise HeadscopeError(f"{role} {text!r} not found in prompt {self.text!r}")
        elif self.text[start:start + len(text)] != text:
            raise HeadscopeError(f"{role} {text!r} does not start at character {start} of prompt {self.text!r}")
        positions = self.positions_of(start, start + len(text))
        if not positions:
            raise HeadscopeError(f"{role} {text!r} covers no token of the prompt")
        return positions


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` (on the host) on ``device``. To a GPU it is copied from pinned memory without waiting: a
    plain copy waits for every kernel already queued, so each batch's forward would wait for the previous
    one to finish before it is even launched."""
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


@dataclass
class Batch:
    """Right-padded token ids of several prompts, with their lengths."""

    input_ids: torch.Tensor  # [batch, pos]
    lengths: torch.Tensor  # [batch]
    tokens: list[Tokens] = field(default_factory=list)

    @property
    def attention_mask(self) -> torch.Tensor:
        pos = torch.arange(self.input_ids.shape[1], device=self.input_ids.device)
        return (pos[None, :] < self.lengths[:, None]).long()

    @property
    def last(self) -> torch.Tensor:
        """Index of each row's last real token."""
        return self.lengths - 1

    def __len__(self) -> int:
        return self.input_ids.shape[0]


class Model:
    """A loaded model: the bridge, the underlying HF model, the tokenizer and its structure."""

    def __init__(self, bridge, hf_model, tokenizer, spec: str, device: torch.device, dtype: torch.dtype):
        self.bridge = bridge
        self.hf_model = hf_model
        self.tokenizer = tokenizer
        self.spec = spec
        self.device = device
        self.dtype = dtype
        cfg = bridge.cfg
        self.n_layers: int = int(cfg.n_layers)
        self.n_heads: int = int(cfg.n_heads)
        self.n_kv_heads: int = int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads)
        self.d_head: int = int(cfg.d_head)
        self.d_model: int = int(cfg.d_model)
        self.n_ctx: int = int(cfg.n_ctx)
        self.vocab_size: int = int(cfg.d_vocab)
        self.architecture: str = type(hf_model).__name__
        self.layers = _layer_list(hf_model, bridge)
        self.sdpa_hooks: frozenset[str] = frozenset()  # filled by engine.probe_sdpa_hooks at load
        self._identity: dict | None = None  # the weights are frozen: computed once

    # -- structure -------------------------------------------------------------------------
    def info(self) -> dict:
        return {
            "model": self.spec,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "d_model": self.d_model,
            "d_head": self.d_head,
            "n_ctx": self.n_ctx,
            "vocab_size": self.vocab_size,
            "architecture": self.architecture,
            "device": str(self.device),
            "devices": devices(self.hf_model),
            "dtype": str(self.dtype).removeprefix("torch."),
        }

    def identity(self) -> dict:
        """What makes two loaded models the same model, whatever spec, device or dtype loaded them:
        the architecture, sizes, and a fingerprint of the weights (SHA-256 of a strided sample of
        every parameter, rounded to bfloat16 so float32 and bfloat16 loads of one model agree)."""
        import hashlib

        if self._identity is not None:
            return dict(self._identity)
        from .placement import materialized

        digest = hashlib.sha256()
        with torch.no_grad(), materialized(self.hf_model):
            for param in self.hf_model.parameters():
                flat = param.detach().flatten()
                sample = flat[:: max(1, flat.numel() // 4096)].to("cpu", torch.bfloat16).view(torch.int16)
                digest.update(str(tuple(param.shape)).encode())
                digest.update(sample.numpy().tobytes())
        self._identity = {"architecture": self.architecture, "n_layers": self.n_layers, "d_model": self.d_model,
                          "vocab_size": self.vocab_size, "fingerprint": digest.hexdigest()[:32]}
        return dict(self._identity)

    def check_layer(self, layer: int) -> int:
        if not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise HeadscopeError(f"layer {layer!r} out of range; this model has layers 0..{self.n_layers - 1}")
        return layer

    def check_head(self, head: int) -> int:
        if not isinstance(head, int) or not 0 <= head < self.n_heads:
            raise HeadscopeError(f"head {head!r} out of range; this model has heads 0..{self.n_heads - 1}")
        return head

    # -- tokenization ----------------------------------------------------------------------
    def first_token(self, text: str, role: str = "target") -> tuple[int, str | None]:
        """The first token of ``text`` (an answer, a foil) and, when it has several, a note saying
        which one is used; ``role`` names it in the message."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise HeadscopeError(f"{role} {text!r} is not a token of the vocabulary: it tokenizes to nothing")
        note = None
        if len(ids) > 1:
            pieces = [self.tokenizer.decode([i]) for i in ids]
            note = f"{role} {text!r} is {len(ids)} tokens {pieces}; using the first, {pieces[0]!r}"
        return int(ids[0]), note

    def token_texts(self, ids) -> dict[int, str]:
        """Each distinct token id decoded once, as a dict."""
        ids = sorted({int(i) for i in ids})
        return dict(zip(ids, self.tokenizer.batch_decode([[i] for i in ids])))

    def tokenize(self, text: str) -> Tokens:
        """Token ids of ``text`` (with the tokenizer's special tokens) and each token's character span."""
        if not isinstance(text, str) or not text.strip():
            raise HeadscopeError("empty prompt: give some text to run the model on")
        enc = self.tokenizer(text, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        if len(ids) > self.n_ctx:
            raise HeadscopeError(f"prompt is {len(ids)} tokens long, over this model's context of {self.n_ctx} tokens")
        spans = [tuple(s) for s in enc["offset_mapping"]]
        strings = [text[a:b] if b > a else self.tokenizer.convert_ids_to_tokens(i) for i, (a, b) in zip(ids, spans)]
        return Tokens(text, ids, strings, spans)

    def batch(self, prompts: list[str] | list[Tokens]) -> Batch:
        """Tokenize (if needed) and right-pad several prompts into one batch on the model's device."""
        if len(prompts) == 0:
            raise HeadscopeError("no prompts given")
        toks = [p if isinstance(p, Tokens) else self.tokenize(p) for p in prompts]
        width = max(len(t) for t in toks)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id or 0
        ids = torch.full((len(toks), width), int(pad), dtype=torch.long)
        for row, t in enumerate(toks):
            ids[row, : len(t)] = torch.tensor(t.ids)
        lengths = torch.tensor([len(t) for t in toks])
        return Batch(to_device(ids, self.device), to_device(lengths, self.device), toks)

    def batch_of_ids(self, ids: torch.Tensor) -> Batch:
        """A batch of equal-length rows of token ids (no padding, no text)."""
        ids = to_device(ids, self.device)
        return Batch(ids, torch.full((ids.shape[0],), ids.shape[1], device=self.device))

    def __repr__(self) -> str:
        return (f"<headscope Model {self.spec!r}: {self.architecture}, {self.n_layers} layers x {self.n_heads} heads "
                f"({self.n_kv_heads} KV), d_model {self.d_model}, {self.device}, {self.info()['dtype']}>")


def _layer_list(hf_model, bridge) -> torch.nn.ModuleList:
    """The HF ModuleList that holds the decoder blocks (the bridge wraps them in place)."""
    first = bridge.blocks[0]
    for module in hf_model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0 and module[0] is first:
            return module
    raise HeadscopeError(f"cannot find the decoder layers of {type(hf_model).__name__}")
