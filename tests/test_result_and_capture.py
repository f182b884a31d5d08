"""Result save/load (atomic), and activation capture against direct engine runs."""

import json

import pandas as pd
import pytest
import torch

from headscope.probes import Activations, HeadscopeError, Result, capture, load_result, run
import importlib

capture_module = importlib.import_module("headscope.probes.engine.capture")

from conftest import PROMPTS


def test_result_roundtrip_and_dispatch(tmp_path):
    frame = pd.DataFrame({"layer": [0, 1], "head": [2, 3], "score": [0.5, -1.0],
                          "top_tokens": [["a", " b"], ["c"]], "top_probs": [[0.5, 0.25], [1.0]]})
    saved = Result(frame, {"model": "random:llama", "seed": 3})
    saved.save(tmp_path / "r")
    loaded = load_result(tmp_path / "r")
    assert type(loaded) is Result
    pd.testing.assert_frame_equal(loaded.frame, frame)  # list cells come back as lists, not arrays
    assert loaded.frame.equals(frame) and loaded.meta["seed"] == 3 and "torch" in loaded.meta["versions"]


def test_head_scores_and_json_export(tmp_path):
    from headscope.circuits.head_scores import HeadScores

    frame = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1], "score": [0.5, -1.0, 2.0, 0.25]})
    scores = HeadScores(frame, {"title": "effect", "model": "random:llama"})
    scores.save(tmp_path / "s")
    loaded = load_result(tmp_path / "s")  # the dashboard's saved head map is a result like any other
    assert type(loaded) is HeadScores and loaded.meta["title"] == "effect"
    pd.testing.assert_frame_equal(loaded.frame, frame)
    fig = loaded.plot((1, 0))
    assert fig.data[0].z.tolist() == [[0.5, -1.0], [2.0, 0.25]] and list(fig.data[1].x) == ["H0"]
    exported = json.loads(loaded.to_json())
    assert exported["meta"]["writer"].endswith("head_scores.HeadScores")
    assert exported["tables"]["heads"] == frame.to_dict("records")


def test_interrupted_save_keeps_the_old_result(tmp_path, monkeypatch):
    Result(pd.DataFrame({"score": [1.0]}), {"model": "old"}).save(tmp_path / "r")

    class Failing(Result):
        kind = "failing-test-result"

        def _write_files(self, directory):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Failing(pd.DataFrame({"score": [2.0]}), {"model": "new"}).save(tmp_path / "r", overwrite=True)
    assert load_result(tmp_path / "r").meta["model"] == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_load_result_errors(tmp_path):
    with pytest.raises(HeadscopeError, match="has no meta.json"):
        load_result(tmp_path)
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(HeadscopeError, match="not valid JSON"):
        load_result(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"kind": "nonsense"}))
    with pytest.raises(HeadscopeError, match="kind 'nonsense', no writer recorded.*regenerate"):
        load_result(tmp_path)


@pytest.mark.parametrize("positions", ["last", "all", (1, 3)])
def test_capture_equals_engine_cache(tiny, positions):
    hooks = ["blocks.1.hook_resid_post", "blocks.2.attn.hook_z"]
    acts = capture(tiny, PROMPTS, hooks, positions=positions, batch_size=2, progress=False)
    for row in acts.frame.itertuples():
        direct = run(tiny, tiny.batch([PROMPTS[row.prompt]]), record=hooks).cache
        for hook in hooks:
            torch.testing.assert_close(acts[hook][row.Index], direct[hook][0, row.position].cpu(), atol=1e-5, rtol=1e-5)
        assert row.token == tiny.tokenizer.decode([tiny.tokenize(PROMPTS[row.prompt]).ids[row.position]])
    lengths = [len(tiny.tokenize(p)) for p in PROMPTS]
    expected = {"last": len(PROMPTS), "all": sum(lengths), (1, 3): sum(min(n, 3) - 1 for n in lengths)}[positions]
    assert len(acts.frame) == expected
    assert acts["blocks.2.attn.hook_z"].shape[1:] == (tiny.n_heads, tiny.d_head)


def test_capture_heads_layers_and_patterns(tiny_llama):
    acts = capture(tiny_llama, PROMPTS, "blocks.*.attn.hook_pattern", layers=[1, 3], heads=[0, 2], progress=False)
    assert acts.meta["hooks"] == ["blocks.1.attn.hook_pattern", "blocks.3.attn.hook_pattern"]
    pattern = acts["blocks.3.attn.hook_pattern"]
    width = max(len(tiny_llama.tokenize(p)) for p in PROMPTS)
    assert pattern.shape == (len(PROMPTS), 2, width)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(len(PROMPTS), 2))


def test_patterns_from_batches_of_different_lengths(tiny_llama, tmp_path):
    prompts = ["a b c", "one two three four five six seven eight", "x"]
    hooks = ["blocks.1.attn.hook_pattern", "blocks.1.attn.hook_attn_scores"]
    together = capture(tiny_llama, prompts, hooks, positions="all", progress=False)
    for kwargs in ({}, {"out": tmp_path / "acts", "shard_rows": 2}):
        apart = capture(tiny_llama, prompts, hooks, positions="all", batch_size=1, progress=False, **kwargs)
        apart = load_result(tmp_path / "acts") if kwargs else apart
        for hook in hooks:
            torch.testing.assert_close(apart[hook], together[hook])
    width = max(len(tiny_llama.tokenize(p)) for p in prompts)
    pattern, scores = together[hooks[0]], together[hooks[1]]
    assert pattern.shape == (len(together.frame), tiny_llama.n_heads, width)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(pattern.shape[:2]))
    # keys after the query's own position (or past the prompt) have weight 0 and the lowest score
    later = torch.arange(width)[None, :] > torch.tensor(together.frame["position"].values)[:, None]
    assert (pattern.permute(0, 2, 1)[later] == 0).all()
    assert (scores.permute(0, 2, 1)[later] == torch.finfo(scores.dtype).min).all()


def test_streamed_capture_reloads_equal(tiny_llama, tmp_path):
    in_memory = capture(tiny_llama, PROMPTS * 3, "blocks.*.hook_mlp_out", positions="all", progress=False)
    streamed = capture(tiny_llama, PROMPTS * 3, "blocks.*.hook_mlp_out", positions="all", batch_size=2,
                       out=tmp_path / "acts", shard_rows=10, progress=False)
    assert len(streamed.meta["shards"]) > 2
    reloaded = load_result(tmp_path / "acts")
    assert isinstance(reloaded, Activations)
    pd.testing.assert_frame_equal(reloaded.frame, in_memory.frame)
    for hook, tensor in in_memory.tensors.items():
        torch.testing.assert_close(reloaded[hook], tensor, atol=1e-5, rtol=1e-5)
    in_memory.save(tmp_path / "saved")
    torch.testing.assert_close(load_result(tmp_path / "saved")["blocks.0.hook_mlp_out"], in_memory["blocks.0.hook_mlp_out"])
    assert in_memory.plot().data


def test_interrupted_capture_leaves_nothing(tiny_llama, tmp_path, monkeypatch):
    calls = []

    def flaky_run(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return run(*args, **kwargs)

    monkeypatch.setattr(capture_module, "run", flaky_run)
    with pytest.raises(KeyboardInterrupt):
        capture(tiny_llama, PROMPTS, "blocks.0.hook_resid_post", batch_size=1, out=tmp_path / "acts", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_capture_errors(tiny_llama, tmp_path):
    with pytest.raises(HeadscopeError, match="'blocks.*.hook_nothing' matches no hook"):
        capture(tiny_llama, PROMPTS, "blocks.*.hook_nothing")
    with pytest.raises(HeadscopeError, match="positions 'first'"):
        capture(tiny_llama, PROMPTS, "blocks.0.hook_resid_post", positions="first")
    with pytest.raises(HeadscopeError, match="device 'gpu' for captured tensors"):
        capture(tiny_llama, PROMPTS, "blocks.0.hook_resid_post", device="gpu")
    with pytest.raises(HeadscopeError, match="head 7 out of range"):
        capture(tiny_llama, PROMPTS, "blocks.0.attn.hook_z", heads=[7])
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": 3}\n')
    with pytest.raises(HeadscopeError, match=r"p.jsonl:2: field 'prompt'"):
        capture(tiny_llama, bad, "blocks.0.hook_resid_post")
