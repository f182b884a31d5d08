"""Sweeps on Ray (two local workers, random models) give exactly the single-process results: the head
report, the retrieval scan and averaged causal traces; a worker killed mid-run has its unit retried and
the result is unchanged; an interrupted run started again reuses its finished units and gives the same
result."""

import json
import os
import signal

import pandas as pd
import psutil
import pytest
import ray

from headscope.app.cli import main
from headscope.circuits.heads.report import head_report
from headscope.probes import HeadscopeError
from headscope.probes.engine.units import Cluster
from headscope.probes.progress import listen

from test_ablation import records

TWO = Cluster("local", 2)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One Ray for the module (each run reuses it instead of starting its own)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture
def prompts(tiny_llama, tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records(tiny_llama) * 2))
    return path


def report(prompts, out, cluster=None):
    return head_report(["random:llama"], [prompts], out, metric="logit_diff", gradient=True, pruning=True, chunk_size=2,
                       device="cpu", progress=False, cluster=cluster)


def same_report(a, b) -> None:
    for name in ("heads.parquet", "heads_by_prompt.parquet", "pruning.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(a / name), pd.read_parquet(b / name))
    assert json.loads((a / "heads.json").read_text()) == json.loads((b / "heads.json").read_text())


def test_the_head_report_on_ray_is_the_single_process_report(prompts, tmp_path):
    same_report(report(prompts, tmp_path / "here"), report(prompts, tmp_path / "ray", TWO))
    assert json.loads((tmp_path / "ray" / "meta.json").read_text())["ray"] == {"address": "local", "workers": 2}
    assert not (tmp_path / ".ray.shards").exists()


def test_a_killed_worker_has_its_unit_retried(prompts, tmp_path):
    killed = []

    def kill_one(done, total, desc):  # once the first unit is in, a worker process dies
        if done == 1 and not killed:
            worker = next(p for p in psutil.process_iter(["cmdline"]) if "ray::_Worker" in " ".join(p.info["cmdline"] or []))
            os.kill(worker.pid, signal.SIGKILL)
            killed.append(worker.pid)

    with listen(kill_one):
        survived = report(prompts, tmp_path / "killed", TWO)
    assert killed
    same_report(report(prompts, tmp_path / "here"), survived)


def test_an_interrupted_run_resumes_from_its_finished_units(prompts, tmp_path):
    def interrupt(done, total, desc):
        if done == 3:
            raise KeyboardInterrupt

    with listen(interrupt), pytest.raises(KeyboardInterrupt):
        report(prompts, tmp_path / "resumed", TWO)
    shards = tmp_path / ".resumed.shards"
    finished = len(list(shards.glob("*.done.parquet")))
    assert finished >= 3 and not (tmp_path / "resumed").exists()
    pending = []
    with listen(lambda done, total, desc: pending.append(total) if done == 0 else None):
        resumed = report(prompts, tmp_path / "resumed", TWO)
    assert pending[0] < 3 + 4  # the first stage's units less the finished ones ran again
    same_report(report(prompts, tmp_path / "here"), resumed)


def test_retrieval_and_averaged_traces_on_ray(tiny_llama, tmp_path):
    common = ["--model", "random:llama", "--device", "cpu"]
    scan = ["retrieval", *common, "--lengths", "200,260", "--depths", "0,1", "--max-new-tokens", "4", "--mode",
            "teacher-forced"]
    assert main([*scan, "--out", str(tmp_path / "scan")]) == 0
    assert main([*scan, "--ray", "--workers", "2", "--out", str(tmp_path / "scan-ray")]) == 0
    for name in ("scores.parquet", "tests.parquet", "heads.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "scan" / name), pd.read_parquet(tmp_path / "scan-ray" / name))
    facts = tmp_path / "facts.jsonl"
    facts.write_text("".join(json.dumps(f) + "\n" for f in known_facts(tiny_llama)))
    traced = ["trace", *common, "--facts", str(facts), "--samples", "2"]
    here, there = tmp_path / "aie", tmp_path / "aie-ray"
    assert main([*traced, "--out", str(here)]) == 0
    assert main([*traced, "--ray", "local", "--workers", "2", "--out", str(there)]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(here / "effects.parquet"), pd.read_parquet(there / "effects.parquet"))
    assert json.loads((there / "meta.json").read_text())["n_facts"] >= 3


def known_facts(model) -> list[dict]:
    """Facts the random model gets right: its own greedy next token after each prompt."""
    from headscope.probes import run

    facts = []
    for subject in ["The river", "A small cat", "My neighbour", "Paris", "The teacher", "The old library", "A red car",
                    "Every morning the baker", "The number seven", "Rome and Berlin"]:
        prompt = f"{subject} walks to"
        batch = model.batch([prompt])
        token = int(run(model, batch, logits_at=batch.last).logits[0].argmax())
        target = model.tokenizer.decode([token])
        if target.strip() and model.first_token(target)[0] == token:
            facts.append({"subject": subject, "prompt": prompt, "target": target})
    assert len(facts) >= 3
    return facts


def test_ray_mistakes(tmp_path, monkeypatch, capsys):
    with pytest.raises(HeadscopeError, match="workers 0"):
        head_report(["random:llama"], ["ioi"], tmp_path / "x", cluster=Cluster("local", 0), progress=False)
    import builtins

    real = builtins.__import__

    def without_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_ray)
    assert main(["heads", "--model", "random:llama", "--prompts", "ioi", "--ray", "--out", str(tmp_path / "y")]) == 2
    assert "pip install 'headscope[ray]'" in capsys.readouterr().err and not (tmp_path / "y").exists()


def test_circuits_and_steering_on_ray(tiny_llama, tmp_path):
    common = ["--model", "random:llama", "--device", "cpu"]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in records(tiny_llama)))
    for name, argv, tables in [
        ("circuit", ["circuit", *common, "--prompts", str(prompts), "--edges", "20", "--seeds", "2"],
         ("edges", "faithfulness")),
        ("steer", ["steer", *common, "--pairs", "sentiment-pairs", "--prompts", "sentiment", "--layers", "1,2",
                   "--strengths", "0,2", "--generate", "1", "--max-new-tokens", "3"], ("sweep",)),
    ]:
        assert main([*argv, "--out", str(tmp_path / name)]) == 0
        assert main([*argv, "--ray", "--workers", "2", "--out", str(tmp_path / f"{name}-ray")]) == 0
        for table in tables:
            pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / name / f"{table}.parquet"),
                                          pd.read_parquet(tmp_path / f"{name}-ray" / f"{table}.parquet"))
