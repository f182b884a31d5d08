"""Models larger than one device: the layers spread over GPUs, CPU memory and disk with accelerate.

``place(hf_model, device_map, max_memory, offload_folder)`` dispatches a loaded model with accelerate's
big-model machinery (``infer_auto_device_map`` and ``dispatch_model``; headscope places nothing itself):
``auto`` and ``balanced`` spread the layers evenly over the GPUs (``get_balanced_memory``), ``sequential``
fills them in order, an explicit map is taken as it is; ``max_memory`` caps each device (``{0: "20GiB",
"cpu": "60GiB"}``); what fits nowhere goes to disk when an ``offload_folder`` is given, and is refused
with its size otherwise. Accelerate's hooks then move each layer's input
to the layer's device, so activations move with the layers and the engine's interventions (which
move their values to the activation's device) apply wherever a hook fires; weights kept on the CPU or
the disk are brought to the GPU for their layer's forward.

Outside a forward an offloaded module holds placeholders: code that reads weights directly (direct
logit attribution, composition scores) reads them inside ``materialized(module)``, which runs
accelerate's own pre- and post-forward hook around the read.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from pathlib import Path
from typing import Iterator

import torch

from ..errors import HeadscopeError

STRATEGIES = ("auto", "balanced", "sequential")
_SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*([KMGT]i?B)?\s*$", re.IGNORECASE)


def check_placement(device, device_map, max_memory) -> None:
    """One-line errors for a placement that cannot be made: an unknown strategy, a device asked for
    beside a map, a memory cap on a device this machine lacks or of no size."""
    if str(device) not in ("auto", "None"):
        raise HeadscopeError(f"device {device!r} and a device map were both given; a device map places the "
                             "layers itself (leave --device at auto)")
    if isinstance(device_map, str) and device_map not in STRATEGIES:
        raise HeadscopeError(f"unknown device map {device_map!r}; use {', '.join(STRATEGIES)} or an explicit map")
    if not isinstance(device_map, (str, dict)):
        raise HeadscopeError(f"device map {device_map!r} must be one of {', '.join(STRATEGIES)} or a dict")
    for key, size in (max_memory or {}).items():
        if key not in ("cpu", "disk") and not (isinstance(key, int) and 0 <= key < torch.cuda.device_count()):
            raise HeadscopeError(f"max memory for device {key!r}: this machine has "
                                 f"{torch.cuda.device_count()} GPU(s); use a GPU index, 'cpu' or 'disk'")
        if not (isinstance(size, int) and size > 0) and not (isinstance(size, str) and _SIZE.match(size)):
            raise HeadscopeError(f"max memory {size!r} for device {key!r} must be bytes or a size like 20GiB")


def parse_max_memory(text: str) -> dict:
    """``0=20GiB,cpu=60GiB`` as accelerate's ``max_memory`` dict."""
    out: dict = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, _, size = part.partition("=")
        if not size:
            raise HeadscopeError(f"max memory {part!r} must be DEVICE=SIZE, like 0=20GiB or cpu=60GiB")
        key = key.strip()
        out[int(key) if key.isdigit() else key] = int(size) if size.strip().isdigit() else size.strip()
    return out


def place(hf_model, device_map, max_memory: dict | None, offload_folder: str | Path | None) -> torch.device:
    """Dispatch ``hf_model`` (module docstring); returns the device its inputs go to (the embeddings')."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = list(getattr(hf_model, "_no_split_modules", None) or [])
    if isinstance(device_map, str):
        if device_map in ("auto", "balanced") and torch.cuda.device_count() > 1:
            max_memory = get_balanced_memory(hf_model, max_memory=max_memory, no_split_module_classes=no_split)
        given = ",".join(f"{k}={v}" for k, v in max_memory.items()) if max_memory else "this machine's free memory"
        device_map = infer_auto_device_map(hf_model, max_memory=dict(max_memory or {}) or None,
                                           no_split_module_classes=no_split)
        if offload_folder is None:
            _check_fits(hf_model, device_map, given)
    folder = str(offload_folder or tempfile.mkdtemp(prefix="headscope-offload-"))
    dispatch_model(hf_model, device_map=device_map, offload_dir=folder,
                   main_device=_main_device(device_map))
    embeddings = next(hf_model.get_input_embeddings().parameters())
    return _execution_device(hf_model.get_input_embeddings()) or embeddings.device


def _check_fits(hf_model, device_map: dict, given: str) -> None:
    """A strategy's map keeps the model in memory: what it would put on the disk is refused, with its size,
    unless an offload folder was given (a disk-offloaded model runs its layers from files, slowly)."""
    from accelerate.utils import compute_module_sizes

    on_disk = [name for name, where in device_map.items() if where == "disk"]
    if not on_disk:
        return
    sizes = compute_module_sizes(hf_model)
    left, total = sum(sizes[name] for name in on_disk), sizes[""]
    raise HeadscopeError(f"the model does not fit {given}: {_size(left)} of its {_size(total)} of weights "
                         "have no place; raise --max-memory by at least that, or pass --offload-folder DIR to keep "
                         "them on disk")


def _size(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{size} bytes"


def _main_device(device_map: dict) -> str | int:
    """Where offloaded layers run: the first GPU of the map, or the CPU when it has none."""
    gpus = [d for d in device_map.values() if isinstance(d, int) or str(d).startswith("cuda")]
    return gpus[0] if gpus else "cpu"


def _execution_device(module) -> torch.device | None:
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    return None if device is None else torch.device(device if not isinstance(device, int) else f"cuda:{device}")


def offloaded(module) -> bool:
    """Whether ``module`` or one below it keeps its weights on the CPU or the disk between forwards."""
    from accelerate.utils import has_offloaded_params

    return any(has_offloaded_params(m) for m in module.modules())


@contextlib.contextmanager
def materialized(module) -> Iterator[None]:
    """``module``'s offloaded weights (and those below it) readable for the block (a no-op without offload)."""
    if not offloaded(module):
        yield
        return
    from accelerate.utils import align_module_device, has_offloaded_params

    with contextlib.ExitStack() as stack:
        for m in module.modules():
            if has_offloaded_params(m):
                stack.enter_context(align_module_device(m))
        yield


def devices(hf_model) -> list[str]:
    """The devices the model's layers are placed on (``hf_device_map``'s values), or its one device."""
    device_map = getattr(hf_model, "hf_device_map", None)
    if not device_map:
        return [str(next(hf_model.parameters()).device)]
    return list(dict.fromkeys(str(v) for v in device_map.values()))
