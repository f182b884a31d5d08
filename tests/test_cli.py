"""The command line: JSON info, capture to a directory, exit statuses (the mistakes: test_bad_input)."""

import json

from headscope.probes import load_result

from test_loading import cli


def test_info_json():
    out = cli("info", "--model", "random:qwen2")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["architecture"] == "Qwen2ForCausalLM" and info["n_kv_heads"] == 2


def test_capture_writes_a_loadable_directory(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The cat sat\n\nParis is a city\n")
    out = cli("capture", "--model", "random:llama", "--prompts", str(prompts), "--hooks", "blocks.*.hook_resid_post",
              "--layers", "0,2", "--positions", "all", "--out", str(tmp_path / "acts"))
    assert out.returncode == 0, out.stderr
    acts = load_result(tmp_path / "acts")
    assert acts.meta["hooks"] == ["blocks.0.hook_resid_post", "blocks.2.hook_resid_post"]
    assert set(acts.frame["prompt"]) == {0, 1}


def test_exit_status_of_the_process(tmp_path):
    """The installed entry point's exit status and one line; every mistake of every command is in
    test_bad_input (in-process)."""
    out = cli("info", "--model", "no-such-model")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("headscope: error: unknown model 'no-such-model'; use an alias"), out.stderr
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file at all" * 100)
    out = cli("info", "--model", str(garbage))
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and str(garbage) in out.stderr, out.stderr


def test_trace_and_patch_commands(tmp_path):
    out = cli("trace", "--model", "random:llama", "--prompt", "The Eiffel Tower is located in the city of",
              "--subject", "The Eiffel Tower", "--samples", "2", "--kinds", "resid,attn", "--out", str(tmp_path / "t"))
    assert out.returncode == 0, out.stderr
    import pandas as pd

    frame = pd.read_parquet(tmp_path / "t" / "trace.parquet")
    assert {"kind", "layer", "position", "token", "score"} <= set(frame.columns)
    meta = json.loads((tmp_path / "t" / "meta.json").read_text())
    assert {"high_score", "low_score", "target", "target_token_id", "subject_positions", "noise_scale", "samples",
            "window"} <= set(meta) and meta["samples"] == 2
    facts = tmp_path / "facts.jsonl"
    facts.write_text('{"subject": "Paris", "template": "{} is a city in", "target": " the"}\n'
                     '{"subject": "Rome", "prompt": "Rome is a city in", "target": " the"}\n')
    out = cli("trace", "--model", "random:llama", "--facts", str(facts), "--samples", "2", "--kinds", "resid",
              "--out", str(tmp_path / "f"))
    # a random model knows no facts: the error says so in one line
    assert out.returncode == 2 and "gets none of the 2 facts right" in out.stderr
    for method in ("activation", "attribution"):
        out = cli("patch", "--model", "random:llama", "--clean", "The river is located in the city of Paris and",
                  "--corrupted", "The river is located in the city of Rome and", "--target", " the", "--method", method,
                  "--kinds", "heads", "--out", str(tmp_path / method))
        assert out.returncode == 0, out.stderr
        frame = pd.read_parquet(tmp_path / method / "patching.parquet")
        assert len(frame) == 16 and set(frame["kind"]) == {"heads"}


def test_public_api_names_resolve_and_version_is_one():
    import headscope as hs
    from importlib.metadata import version

    assert hs.__version__ == version("headscope")
    missing = [name for name in hs.__all__ if name != "__version__" and getattr(hs, name, None) is None]
    assert not missing, missing
    assert hs.trace.__module__ == "headscope.circuits.causal.tracing" and hs.Intervention is hs.probes.Intervention


def test_version_help_and_aliases():
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.strip().startswith("headscope ")
    import subprocess
    import sys

    main_module = subprocess.run([sys.executable, "-m", "headscope", "--version"], capture_output=True, text=True)
    assert main_module.returncode == 0 and main_module.stdout == out.stdout
    from headscope.app.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "name")
    for name, command in sub.choices.items():  # every option of every command says what it is
        for action in command._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings[0]} has no help"
    assert sub.choices["svd"] is sub.choices["composition"]


def test_shipped_sets_by_name(tmp_path, monkeypatch):
    import pytest

    from headscope.circuits.causal.fact_effects import read_facts
    from headscope.circuits.prompt_sets import read_prompt_set
    from headscope.circuits.retrieval.haystack import read_needles
    from headscope.probes import HeadscopeError, read_prompts

    monkeypatch.chdir(tmp_path)  # names, not paths: nothing here is called ioi
    ioi = read_prompt_set("ioi")
    assert ioi.name == "ioi" and len(ioi) == 48 and all("corrupted" in r for r in ioi.records)
    assert read_prompts("ioi")[0] == ioi.records[0]["prompt"]
    assert len(read_facts("facts")) == 382 and len(read_needles("needles")) == 12
    (tmp_path / "ioi").write_text("a prompt of my own\n")  # a file of that name wins over the shipped set
    assert read_prompts("ioi") == ["a prompt of my own"]
    with pytest.raises(HeadscopeError, match="prompt file not found: iio .*shipped set: facts, greater-than, ioi, "
                                             "needles, passages"):
        read_prompt_set("iio")
    greater = read_prompt_set("greater-than")  # start years X9: the answer's first digit decides later or not
    assert len(greater) == 48 and all(r["prompt"].endswith(r["prompt"].split("year ")[1][:2]) for r in greater.records)
    for r in greater.records:
        tens = int(r["prompt"].split("year ")[1][2])
        assert r["targets"] == [str(d) for d in range(tens + 1, 10)] and r["foils"] == [str(d) for d in range(tens + 1)]


def test_json_summaries(tmp_path, capsys):
    from headscope.app.cli import main

    assert main(["lens", "--model", "random:llama", "--prompt", "The cat sat", "--out", str(tmp_path / "l"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    saved = load_result(tmp_path / "l").frame
    last = saved[saved["position"] == saved["position"].max()].sort_values("layer")
    assert summary["out"] == str(tmp_path / "l") and summary["target_prob_by_layer"] == last["target_prob"].tolist()
    assert main(["trace", "--model", "random:llama", "--prompt", "The cat sat on the mat", "--subject", "The cat",
                 "--samples", "2", "--kinds", "resid", "--out", str(tmp_path / "t"), "--json"]) == 0
    trace = json.loads(capsys.readouterr().out)
    assert trace["high_score"] == load_result(tmp_path / "t").meta["high_score"]


def test_every_subpackage_is_packaged():
    """A non-editable install carries only the packages pyproject lists: each folder with an __init__.py."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {"headscope"} | {"headscope." + ".".join(p.parent.relative_to(root).parts)
                               for top in ("probes", "circuits", "app", "data") for p in (root / top).rglob("__init__.py")}
    assert listed == on_disk


def test_heads_reads_a_shipped_set_by_name(tmp_path, monkeypatch, capsys):
    from headscope.app.cli import main

    monkeypatch.chdir(tmp_path)  # nothing here is called ioi: the name is the shipped set
    assert main(["heads", "--model", "random:llama", "--device", "cpu", "--prompts", "ioi", "--out", "r"]) == 0
    assert load_result(tmp_path / "r").meta["params"]["prompt_files"][0].endswith("ioi.jsonl")
