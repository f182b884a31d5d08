"""Activation capture: chosen hooks, layers, heads and positions over a list of prompts.

Rows are (prompt, position) pairs: the ``frame`` has one row per captured token (``prompt``,
``position``, ``token``) and each hook's tensor has one row per frame row. Per-head hooks
(``hook_z``, ``hook_q``...) keep ``[row, head, d_head]``; attention patterns keep
``[row, head, key]`` for the captured query positions. Prompts run in batches through the engine
with SDPA attention unless a pattern is asked for. With ``out=DIR`` the rows stream to
safetensors shards of ``shard_rows`` rows, written into a staging directory that is renamed into
place only when the capture completes; an interrupted capture leaves nothing behind.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from .batching import Halving, row_chunks
from .run import Record, hook_names, run
from ..errors import HeadscopeError
from ..models.model import Model, to_device
from ..text.prompts import read_prompts
from ..results.outputs import check_output_dir, commit, new_staging
from ..results.result import Result, read_table, write_meta
from ..progress import tracked

PATTERN_HOOKS = ("hook_pattern", "hook_attn_scores")


class Activations(Result):
    """Captured activations: ``frame`` indexes the rows, ``tensors[hook]`` holds the values."""

    kind = "activations"
    table = "index"

    def __init__(self, frame: pd.DataFrame, meta: dict, tensors: dict[str, torch.Tensor] | None = None,
                 directory: Path | None = None):
        super().__init__(frame, meta)
        self._tensors = tensors
        self._directory = directory

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        if self._tensors is None:
            self._tensors = _read_shards(self._directory, self.meta["shards"])
        return self._tensors

    def __getitem__(self, hook: str) -> torch.Tensor:
        if hook not in self.tensors:
            raise HeadscopeError(f"hook {hook!r} was not captured; captured: {', '.join(self.tensors)}")
        return self.tensors[hook]

    def plot(self):
        """Mean L2 norm of each captured hook's rows, by layer (one line per hook kind)."""
        import plotly.express as px

        rows = []
        for name, t in self.tensors.items():
            parts = name.split(".")
            layer = int(parts[1]) if parts[0] == "blocks" else -1
            rows.append({"hook": ".".join(p for p in parts if not p.isdigit()), "layer": layer,
                         "mean_norm": float(t.float().flatten(1).norm(dim=1).mean())})
        fig = px.line(pd.DataFrame(rows), x="layer", y="mean_norm", color="hook", markers=True,
                      title=f"Activation norms, {self.meta.get('model')}")
        return fig

    def _write_files(self, directory: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous().cpu() for k, v in self.tensors.items()}, directory / "shard-00000.safetensors")
        self.meta["shards"] = ["shard-00000.safetensors"]

    @classmethod
    def _load(cls, directory: Path, meta: dict) -> "Activations":
        frame = read_table(directory / f"{cls.table}.parquet")
        return cls(frame, meta, directory=directory)


def _read_shards(directory: Path, shards: list[str]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    parts = [load_file(directory / s) for s in shards]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else {}


def _select(name: str, act: torch.Tensor, rows: torch.Tensor | None, positions: torch.Tensor | int,
            heads: torch.Tensor | None, n_keys: int) -> torch.Tensor:
    """Rows ``(rows[i], positions[i])`` of an activation, or position ``positions`` of every row when it
    is one number (a view: no kernel to launch); per-head hooks restricted to ``heads``.
    Attention rows get ``n_keys`` keys (the longest prompt's length), whatever their batch's length:
    a key a prompt does not have gets weight 0 and the dtype's lowest score, as masking gives."""
    if name.endswith(PATTERN_HOOKS):
        act = act.transpose(1, 2)  # [batch, query, head, key]
        fill = 0.0 if name.endswith("hook_pattern") else torch.finfo(act.dtype).min
        act = torch.nn.functional.pad(act, (0, n_keys - act.shape[-1]), value=fill)
    out = act[:, positions] if isinstance(positions, int) else act[rows, positions]
    if heads is not None and out.ndim >= 3:
        out = out[:, heads]
    return out


def capture(
    model: Model,
    prompts: Sequence[str] | str | Path,
    hooks: str | Sequence[str] = "blocks.*.hook_resid_post",
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    positions: str | tuple[int, int] = "last",
    batch_size: int | None = None,
    device: str = "cpu",
    out: str | Path | None = None,
    shard_rows: int = 4096,
    overwrite: bool = False,
    progress: bool = True,
) -> Activations:
    """Capture activations; ``positions`` is ``"last"``, ``"all"`` or a token span ``(start, end)``;
    ``device`` is where the captured tensors are kept: ``"cpu"`` or ``"model"`` (e.g. stay on the GPU).
    With ``out`` the rows stream to a new directory (``overwrite``: replace an earlier result there)."""
    if isinstance(prompts, (str, Path)):
        prompts = read_prompts(prompts)
    prompts = list(prompts)
    if not prompts:
        raise HeadscopeError("no prompts given")
    names = hook_names(model, hooks)
    if layers is not None:
        for layer in layers:
            model.check_layer(layer)
        names = [n for n in names if n.split(".")[0] == "blocks" and int(n.split(".")[1]) in set(layers)]
        if not names:
            raise HeadscopeError(f"hooks {hooks!r} have nothing in layers {list(layers)}")
    head_index = None
    if heads is not None:
        head_index = torch.tensor([model.check_head(h) for h in heads])
    if device not in ("cpu", "model"):
        raise HeadscopeError(f"device {device!r} for captured tensors must be 'cpu' or 'model' (the model's device)")
    if positions not in ("last", "all") and not (isinstance(positions, tuple) and len(positions) == 2):
        raise HeadscopeError(f"positions {positions!r} must be 'last', 'all' or a (start, end) token span")
    span = isinstance(positions, tuple)
    if span and not 0 <= positions[0] < positions[1]:
        raise HeadscopeError(f"positions {positions[0]}:{positions[1]} is an empty span; give START:END with "
                             "0 <= START < END")
    toks = [model.tokenize(p) for p in prompts]
    longest = max(len(t) for t in toks)
    if span and positions[0] >= longest:
        raise HeadscopeError(f"positions {positions[0]}:{positions[1]} start past the end of every prompt "
                             f"(the longest has {longest} tokens)")
    slices = row_chunks(model, len(toks), longest, batch_size)
    started = time.perf_counter()

    meta = {"model": model.spec, "hooks": names, "positions": positions if isinstance(positions, str) else list(positions),
            "heads": None if heads is None else list(heads), "n_prompts": len(prompts),
            "batch_size": slices[0].stop - slices[0].start if slices else 0}
    writer = _ShardWriter(Path(out), shard_rows, overwrite) if out is not None else None
    index: dict[str, list] = {"prompt": [], "position": [], "id": []}
    kept: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    heads_at = None if head_index is None else to_device(head_index, model.device)

    def forward(prompt_rows: list[int]) -> None:
        sl = slice(prompt_rows[0], prompt_rows[-1] + 1)
        lengths = [len(t) for t in toks[sl]]
        rows, pos = _row_positions(lengths, positions)
        if len(rows) == 0:
            return
        batch = model.batch(toks[sl])
        if positions == "last" and len(set(lengths)) == 1:  # one position of every row: a view per hook
            at = (None, lengths[0] - 1)
        else:  # indices on the model's device before the forward: a copy inside a hook would wait for the GPU
            at = (to_device(rows, model.device), to_device(pos, model.device))
        keep = lambda n, a: _select(n, a, *at, heads_at, longest)  # noqa: E731
        result = run(model, batch, record=Record(names, keep=keep), logits=False)  # stops after the last hook
        index["prompt"] += (rows + sl.start).tolist()
        index["position"] += pos.tolist()
        index["id"] += [toks[sl][r].ids[p] for r, p in zip(rows.tolist(), pos.tolist())]  # from the CPU tokens
        values = _moved({n: result.cache[n] for n in names}, "cpu" if device == "cpu" else model.device,
                        wait=writer is not None)
        if writer is not None:
            writer.add(values, len(rows))
        else:
            for n in names:
                kept[n].append(values[n])

    halving = Halving("prompts")
    try:
        for sl in tracked(slices, desc="capture", unit="batch", disable=not progress):
            halving(list(range(sl.start, sl.stop)), forward)
        if model.device.type == "cuda":  # the queued copies to the host are done
            torch.cuda.synchronize(model.device)
        frame = pd.DataFrame({"prompt": index["prompt"], "position": index["position"],
                              "token": model.tokenizer.batch_decode([[i] for i in index["id"]])})
        meta["seconds"] = round(time.perf_counter() - started, 3)
        if writer is not None:
            return writer.finish(frame, meta)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return Activations(frame, meta, {n: torch.cat(v) for n, v in kept.items() if v})


def _moved(values: dict[str, torch.Tensor], target, wait: bool) -> dict[str, torch.Tensor]:
    """``values`` on ``target``: those of one shape stacked into one copy (one kernel and one transfer
    for every layer's residual stream, not one per hook). Unless ``wait``, copies to the host are queued
    behind the forward, not waited for: the next batch's forward is launched meanwhile (the caller
    synchronises once, before the tensors are read)."""
    groups: dict[tuple, list[str]] = {}
    for name, value in values.items():
        groups.setdefault((tuple(value.shape), value.dtype, value.device), []).append(name)
    out = {}
    for names in groups.values():
        stacked = torch.stack([values[n] for n in names]).to(target, non_blocking=not wait)
        out.update(zip(names, stacked.unbind(0)))
    return out


def _row_positions(lengths: list[int], positions) -> tuple[torch.Tensor, torch.Tensor]:
    """The (row, position) pairs of a batch of prompts of ``lengths`` tokens that ``positions`` keeps."""
    if positions == "last":
        return torch.arange(len(lengths)), torch.tensor(lengths) - 1
    rows, pos = [], []
    for r, n in enumerate(lengths):
        start, end = (0, n) if positions == "all" else (max(0, positions[0]), min(n, positions[1]))
        rows += [r] * max(0, end - start)
        pos += list(range(start, end))
    return torch.tensor(rows, dtype=torch.long), torch.tensor(pos, dtype=torch.long)


class _ShardWriter:
    """Buffers captured rows and writes safetensors shards into a staging directory."""

    def __init__(self, target: Path, shard_rows: int, overwrite: bool):
        if shard_rows < 1:
            raise HeadscopeError(f"shard_rows {shard_rows} must be at least 1")
        self.target = check_output_dir(target, overwrite)
        self.overwrite = overwrite
        self.shard_rows = shard_rows
        self.staging = new_staging(self.target)
        self.buffer: dict[str, list[torch.Tensor]] = {}
        self.buffered = 0
        self.shards: list[str] = []

    def add(self, values: dict[str, torch.Tensor], n_rows: int) -> None:
        for n, v in values.items():
            self.buffer.setdefault(n, []).append(v.cpu())
        self.buffered += n_rows
        if self.buffered >= self.shard_rows:
            self._flush()

    def _flush(self) -> None:
        from safetensors.torch import save_file

        if not self.buffered:
            return
        name = f"shard-{len(self.shards):05d}.safetensors"
        save_file({n: torch.cat(v).contiguous() for n, v in self.buffer.items()}, self.staging / name)
        self.shards.append(name)
        self.buffer, self.buffered = {}, 0

    def finish(self, frame: pd.DataFrame, meta: dict) -> Activations:
        self._flush()
        result = Activations(frame, {**meta, "shards": self.shards})
        frame.to_parquet(self.staging / f"{Activations.table}.parquet", index=False)
        write_meta(self.staging, result.saved_meta())
        commit(self.staging, self.target, self.overwrite)
        result._directory = self.target
        return result

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
