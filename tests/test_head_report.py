"""Head detectors, the batch head report (files, resume after an interruption, bad input) and its CLI."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import headscope.circuits.heads.report as head_report_module
from headscope.app.cli import main
from headscope.circuits.heads.detectors import (_patterns, attention_sink, detector_scores,
                                               repeated_random_tokens)
from headscope.circuits.heads.report import head_report
from headscope.probes import HeadscopeError

from test_ablation import records


def test_detector_scores_match_their_definitions(tiny_llama):
    model = tiny_llama
    seq_len = 6
    seed = next(s for s in range(100)
                if len(set(repeated_random_tokens(model, seq_len, 1, s)[0, -seq_len:].tolist())) == seq_len)
    ids = repeated_random_tokens(model, seq_len, 1, seed)
    assert torch.equal(ids[0, -seq_len:], ids[0, -2 * seq_len:-seq_len])
    scores = detector_scores(model, seq_len=seq_len, n_seqs=1, seed=seed).set_index(["layer", "head"])
    pattern = _patterns(model, ids)
    n = ids.shape[1]
    first = n - seq_len  # first position of the repeat
    for layer, head in [(0, 0), (1, 2), (model.n_layers - 1, 3)]:
        p = pattern[layer][0, head]
        prev = sum(float(p[i, i - 1]) for i in range(1, n)) / n
        induction = sum(float(p[i, i - seq_len + 1]) for i in range(first, n)) / n
        duplicate = sum(float(p[i, i - seq_len]) for i in range(first, n)) / n
        assert scores.loc[(layer, head), "previous_token"] == pytest.approx(prev, abs=1e-5)
        assert scores.loc[(layer, head), "induction"] == pytest.approx(induction, abs=1e-5)
        assert scores.loc[(layer, head), "duplicate_token"] == pytest.approx(duplicate, abs=1e-5)


def test_attention_sink_is_attention_to_the_first_token(tiny_llama):
    model = tiny_llama
    toks = [model.tokenize("the river runs past the mill"), model.tokenize("a cat")]
    sink = attention_sink(model, toks).set_index(["layer", "head"])["attention_sink"]
    pattern = _patterns(model, torch.tensor([toks[0].ids]))
    pattern_b = _patterns(model, torch.tensor([toks[1].ids]))
    for layer, head in [(0, 1), (1, 0)]:
        to_first = torch.cat([pattern[layer][0, head, 1:, 0], pattern_b[layer][0, head, 1:, 0]])
        assert sink[(layer, head)] == pytest.approx(float(to_first.mean()), abs=1e-5)


def prompt_file(path, recs):
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return path


def test_head_report_files(tiny_llama, tmp_path):
    recs = records(tiny_llama)
    a = prompt_file(tmp_path / "a.jsonl", recs)
    b = prompt_file(tmp_path / "b.jsonl", recs[:2])
    out = head_report([tiny_llama], [a, b], tmp_path / "report", metric="logit_diff", gradient=True, pruning=True,
                      chunk_size=2, progress=False)
    heads = pd.read_parquet(out / "heads.parquet")
    n_heads = tiny_llama.n_layers * tiny_llama.n_heads
    assert len(heads) == 2 * n_heads and set(heads["prompt_set"]) == {"a", "b"}
    for col in ("layer", "head", "effect", "ci_low", "ci_high", "induction", "previous_token", "duplicate_token",
                "attention_sink", "gradient_importance"):
        assert col in heads.columns
    by_prompt = pd.read_parquet(out / "heads_by_prompt.parquet")
    assert len(by_prompt) == (3 + 2) * n_heads and {"clean", "ablated", "effect"} <= set(by_prompt.columns)
    # each head's direct effect (the Hydra check's, for this linear metric) and what the network repairs
    from headscope.circuits.steering import hydra

    direct = hydra(tiny_llama, recs, components=("head",), progress=False).hydra_by_prompt
    mine = by_prompt[by_prompt["prompt_set"] == "a"].merge(direct.astype({"head": int}), on=["prompt", "layer", "head"])
    assert len(mine) == 3 * n_heads
    assert (mine["direct_effect_x"] - mine["direct_effect_y"]).abs().max() < 1e-4
    assert (by_prompt["self_repair"] - (by_prompt["direct_effect"] - by_prompt["effect"])).abs().max() < 1e-6
    assert {"direct_effect", "self_repair"} <= set(heads.columns)
    exported = json.loads((out / "heads.json").read_text())
    assert len(exported["random:llama | a"]["0-0"]) == 3
    page = (out / "report.html").read_text()
    assert "Comparison: top 10 heads" in page and "plotly" in page and "knee" in page
    assert "<script src=" not in page  # self-contained
    meta = json.loads((out / "meta.json").read_text())
    assert len(meta["combinations"]) == 2 and "spearman_gradient_importance_vs_effect" in meta["combinations"][0]
    pruning = pd.read_parquet(out / "pruning.parquet")
    assert set(pruning["prompt_set"]) == {"a", "b"} and pruning["fraction"].max() == 1
    assert not (tmp_path / ".report.shards").exists()
    # the per-set means match the per-prompt table
    mean = by_prompt[by_prompt["prompt_set"] == "a"].groupby(["layer", "head"])["effect"].mean().to_numpy()
    np.testing.assert_allclose(heads[heads["prompt_set"] == "a"]["effect"], mean)


def test_head_report_resumes_after_interruption(tiny_llama, tmp_path, monkeypatch):
    recs = records(tiny_llama) * 2
    prompts = prompt_file(tmp_path / "p.jsonl", recs)
    whole = head_report([tiny_llama], [prompts], tmp_path / "whole", chunk_size=2, progress=False)

    real_chunk = head_report_module._ablations
    calls = []

    def interrupted(model, prompts, indices, **options):
        calls.append(indices)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_chunk(model, prompts, indices, **options)

    monkeypatch.setattr(head_report_module, "_ablations", interrupted)
    with pytest.raises(KeyboardInterrupt):
        head_report([tiny_llama], [prompts], tmp_path / "resumed", chunk_size=2, progress=False)
    assert not (tmp_path / "resumed").exists()  # nothing that looks complete
    assert len(list((tmp_path / ".resumed.shards").glob("*-c*.done.parquet"))) == 2
    monkeypatch.setattr(head_report_module, "_ablations", real_chunk)
    resumed = head_report([tiny_llama], [prompts], tmp_path / "resumed", chunk_size=2, progress=False)
    for name in ("heads.parquet", "heads_by_prompt.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(whole / name), pd.read_parquet(resumed / name))
    assert json.loads((whole / "heads.json").read_text()) == json.loads((resumed / "heads.json").read_text())


def test_head_report_bad_input_leaves_nothing(tiny_llama, tmp_path):
    good = prompt_file(tmp_path / "good.jsonl", [{"prompt": "a b c", "target": " d"}])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a b c", "target": " d"}\n{"prompt": "x"\n')
    with pytest.raises(HeadscopeError, match="bad.jsonl:2"):
        head_report([tiny_llama], [good, bad], tmp_path / "out", progress=False)
    with pytest.raises(HeadscopeError, match="field 'foil' missing"):
        head_report([tiny_llama], [good], tmp_path / "out", metric="logit_diff", progress=False)
    with pytest.raises(HeadscopeError, match="unknown ablation mode"):
        head_report([tiny_llama], [good], tmp_path / "out", mode="shuffle", progress=False)
    with pytest.raises(HeadscopeError, match="unknown positions 'first'"):
        head_report([tiny_llama], [good], tmp_path / "out", positions="first", progress=False)
    corrupted = prompt_file(tmp_path / "c.jsonl", [{"prompt": "a b c", "target": " d", "corrupted": "a b c d e f"}])
    with pytest.raises(HeadscopeError, match="the prompt.s token length"):  # found once the model is loaded
        head_report([tiny_llama], [corrupted], tmp_path / "out", mode="resample", progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.shards").exists()


def test_cli_heads(tmp_path, capsys):
    prompts = prompt_file(tmp_path / "p.jsonl", [{"prompt": "the river runs past the", "target": " mill"}])
    assert main(["heads", "--model", "random:gpt2", "--prompts", str(prompts), "--positions", "last",
                 "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.html").exists()
    assert main(["heads", "--model", "random:gpt2", "--prompts", str(prompts), "--metric", "acc",
                 "--out", str(tmp_path / "r2")]) == 2
    assert "invalid choice: 'acc'" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()
