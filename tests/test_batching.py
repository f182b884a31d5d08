"""Memory-aware batching: a GPU out-of-memory error in a sweep or a capture halves the chunks and goes on
once, with a warning, to the same numbers; a second one is one line saying what to pass. (The out-of-memory
error is raised by the engine's forward when it is given more rows than a limit, as CUDA raises it; the
batch size measured from GPU memory is checked on the GPU machine, ``bench_engine.py``.)"""

import importlib

import pandas as pd
import pytest
import torch

from headscope.circuits.heads.single_heads import head_ablation
from headscope.probes import HeadscopeFailure, capture

from test_ablation import records

# the modules (the package exports functions of the same names)
capture_module = importlib.import_module("headscope.probes.engine.capture")
sweep_module = importlib.import_module("headscope.probes.engine.sweep")


def limited(monkeypatch, module, rows: int) -> list[int]:
    """The module's forward raises CUDA's out-of-memory error above ``rows`` rows; returns the sizes it ran."""
    real, sizes = module.run, []

    def forward(model, batch, *args, **kwargs):
        if len(batch) > rows:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        sizes.append(len(batch))
        return real(model, batch, *args, **kwargs)

    monkeypatch.setattr(module, "run", forward)
    return sizes


def test_a_sweep_halves_its_chunks_once(tiny_llama, monkeypatch):
    recs = records(tiny_llama)
    plain = head_ablation(tiny_llama, recs, progress=False, batch_size=32).frame
    sizes = limited(monkeypatch, sweep_module, 20)
    with pytest.warns(UserWarning, match="out of GPU memory at .* variants per forward: halving"):
        halved = head_ablation(tiny_llama, recs, progress=False, batch_size=32).frame
    pd.testing.assert_frame_equal(plain, halved, atol=1e-5, rtol=0)  # other batch widths round differently
    assert max(sizes) <= 20 and len(sizes) > 2


def test_a_second_out_of_memory_error_says_what_to_pass(tiny_llama, monkeypatch):
    limited(monkeypatch, sweep_module, 2)
    with pytest.warns(UserWarning), pytest.raises(HeadscopeFailure, match="even after halving; pass a smaller"):
        head_ablation(tiny_llama, records(tiny_llama), progress=False, batch_size=32)


def test_a_capture_halves_its_chunks(tiny_llama, monkeypatch):
    prompts = [f"the river runs past the old mill {i}" for i in range(8)]
    plain = capture(tiny_llama, prompts, "blocks.*.hook_resid_post", batch_size=8, progress=False)
    sizes = limited(monkeypatch, capture_module, 5)
    with pytest.warns(UserWarning, match="out of GPU memory at 8 prompts"):
        halved = capture(tiny_llama, prompts, "blocks.*.hook_resid_post", batch_size=8, progress=False)
    assert sizes == [4, 4]
    pd.testing.assert_frame_equal(plain.frame, halved.frame)
    for name in plain.tensors:
        assert torch.allclose(plain[name], halved[name], atol=1e-5)  # other batch widths round differently
