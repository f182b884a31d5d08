"""Outputs never destroy what headscope did not write: every refusal leaves the user's files byte for byte."""

import hashlib
import json
import os

import pandas as pd
import pytest

from headscope.app.cli import main
from headscope.circuits.heads.report import head_report
from headscope.probes import HeadscopeError, Result, load_result
from headscope.probes.readouts.tuned_lens import TunedLens


def snapshot(root):
    """Every file under ``root`` (links not followed) with its SHA-256."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            out[rel] = os.readlink(path) if os.path.islink(path) else hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def user_dir(path):
    path.mkdir(parents=True)
    (path / "notes.md").write_text("my notes\n")
    (path / "sub").mkdir()
    (path / "sub" / "data.parquet").write_bytes(b"not really parquet")
    return path


def result(score=1.0):
    return Result(pd.DataFrame({"score": [score]}), {"model": "random:llama"})


def test_an_existing_directory_that_is_not_a_result_is_refused(tmp_path):
    notes = user_dir(tmp_path / "notes")
    before = snapshot(tmp_path)
    with pytest.raises(HeadscopeError, match="not a headscope result"):
        result().save(notes)
    with pytest.raises(HeadscopeError, match="not a headscope result"):
        result().save(notes, overwrite=True)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("where", [".", "..", "~", "/", "home-parent"])
def test_working_home_and_root_directories_are_refused(tmp_path, monkeypatch, where):
    home = user_dir(tmp_path / "home")
    work = user_dir(home / "work")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    target = {"home-parent": str(tmp_path)}.get(where, where)
    before = snapshot(tmp_path)
    with pytest.raises(HeadscopeError, match="holds it"):
        result().save(target, overwrite=True)
    assert snapshot(tmp_path) == before


def test_a_symbolic_link_is_refused_and_its_target_untouched(tmp_path):
    elsewhere = user_dir(tmp_path / "elsewhere")
    result().save(tmp_path / "old")  # a result behind the link: still refused, links are never followed
    (tmp_path / "link").symlink_to(elsewhere)
    (tmp_path / "link-to-result").symlink_to(tmp_path / "old")
    before = snapshot(tmp_path)
    for link in ("link", "link-to-result"):
        with pytest.raises(HeadscopeError, match="symbolic link"):
            result().save(tmp_path / link, overwrite=True)
    assert snapshot(tmp_path) == before


def test_the_model_cache_is_refused(tmp_path, monkeypatch):
    cache = user_dir(tmp_path / "cache")
    monkeypatch.setenv("HEADSCOPE_CACHE", str(cache))
    before = snapshot(tmp_path)
    for target in (cache / "gguf", cache, tmp_path):
        with pytest.raises(HeadscopeError, match="model cache"):
            result().save(target, overwrite=True)
    assert snapshot(tmp_path) == before


def test_a_file_and_an_unwritable_place_are_refused(tmp_path):
    (tmp_path / "file.txt").write_text("keep me")
    before = snapshot(tmp_path)
    with pytest.raises(HeadscopeError, match="not a directory"):
        result().save(tmp_path / "file.txt", overwrite=True)
    with pytest.raises(HeadscopeError, match="cannot be written"):
        result().save(tmp_path / "file.txt" / "run")
    assert snapshot(tmp_path) == before


def test_new_and_empty_directories_are_written(tmp_path):
    (tmp_path / "empty").mkdir()
    result(1.0).save(tmp_path / "empty")
    result(2.0).save(tmp_path / "a" / "b" / "new")
    assert load_result(tmp_path / "empty").frame["score"].tolist() == [1.0]
    assert load_result(tmp_path / "a" / "b" / "new").frame["score"].tolist() == [2.0]
    meta = json.loads((tmp_path / "empty" / "meta.json").read_text())
    assert meta["files"] == ["meta.json", "result.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "empty"]  # no staging left behind


def test_overwrite_replaces_only_the_results_own_files(tmp_path):
    run = tmp_path / "run"
    result(1.0).save(run)
    with pytest.raises(HeadscopeError, match="--overwrite"):
        result(2.0).save(run)
    assert load_result(run).frame["score"].tolist() == [1.0]
    (run / "my-notes.txt").write_text("what I saw in this run\n")
    (run / "figs").mkdir()
    (run / "figs" / "fig.png").write_bytes(b"\x89PNG user figure")
    mine = {k: v for k, v in snapshot(run).items() if k.startswith(("my-", "figs"))}

    class Other(Result):
        kind = "test-other-table"
        table = "other"

    Other(pd.DataFrame({"score": [3.0]}), {"model": "m"}).save(run, overwrite=True)
    after = snapshot(run)
    assert {k: after[k] for k in mine} == mine
    assert sorted(after) == ["figs/fig.png", "meta.json", "my-notes.txt", "other.parquet"]  # result.parquet went
    assert pd.read_parquet(run / "other.parquet")["score"].tolist() == [3.0]


def test_a_user_file_in_the_way_stops_the_overwrite(tmp_path):
    run = tmp_path / "run"
    Result(pd.DataFrame({"score": [1.0]}), {"model": "m"}).save(run)

    class Other(Result):
        kind = "test-other-in-the-way"
        table = "other"

    (run / "other.parquet").write_bytes(b"the user's own file of that name")
    before = snapshot(tmp_path)
    with pytest.raises(HeadscopeError, match="other.parquet is in the way"):
        Other(pd.DataFrame({"score": [3.0]}), {"model": "m"}).save(run, overwrite=True)
    assert snapshot(tmp_path) == before


def test_a_result_without_a_file_list_is_not_overwritten(tmp_path):
    run = tmp_path / "old"
    result().save(run)
    meta = json.loads((run / "meta.json").read_text())
    del meta["files"]  # as written before results listed their files
    (run / "meta.json").write_text(json.dumps(meta))
    before = snapshot(tmp_path)
    with pytest.raises(HeadscopeError, match="older headscope"):
        result(2.0).save(run, overwrite=True)
    assert snapshot(tmp_path) == before


def test_a_listed_file_outside_the_result_is_never_removed(tmp_path):
    (tmp_path / "precious.txt").write_text("outside the run")
    run = tmp_path / "run"
    result().save(run)
    meta = json.loads((run / "meta.json").read_text())
    meta["files"].append("../precious.txt")  # a hand-edited or hostile meta.json
    (run / "meta.json").write_text(json.dumps(meta))
    result(2.0).save(run, overwrite=True)
    assert (tmp_path / "precious.txt").read_text() == "outside the run"


def test_the_cli_refuses_before_loading_a_model(tmp_path):
    notes = user_dir(tmp_path / "notes")
    before = snapshot(tmp_path)
    # an unknown model would fail too: the output check must come first, so its message is the one printed
    assert main(["lens", "--model", "no-such-model", "--prompt", "x", "--out", str(notes)]) == 2
    assert main(["lens", "--model", "random:llama", "--prompt", "The cat", "--out", str(notes), "--overwrite"]) == 2
    assert snapshot(tmp_path) == before


def test_the_cli_overwrites_its_own_result_with_overwrite(tmp_path, capsys):
    run = tmp_path / "lens"
    args = ["lens", "--model", "random:llama", "--prompt", "The cat sat", "--out", str(run)]
    assert main(args) == 0
    (run / "keep.txt").write_text("mine")
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err.strip().splitlines()[-1]
    assert main(args + ["--overwrite"]) == 0
    assert (run / "keep.txt").read_text() == "mine" and load_result(run).meta["model"] == "random:llama"


def test_lens_files_and_head_report_resume_directories(tmp_path, tiny_llama):
    (tmp_path / "lens.safetensors").write_bytes(b"a user's weights")
    (tmp_path / "lens.json").write_text("{}")
    before = snapshot(tmp_path)
    with pytest.raises(HeadscopeError, match="not written by headscope"):
        TunedLens.zeros(tiny_llama).save(tmp_path / "lens", overwrite=True)
    assert snapshot(tmp_path) == before
    saved = TunedLens.zeros(tiny_llama).save(tmp_path / "mine")
    with pytest.raises(HeadscopeError, match="--overwrite"):
        TunedLens.zeros(tiny_llama).save(saved)
    TunedLens.zeros(tiny_llama).save(saved, overwrite=True)

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "The cat sat on the", "target": " mat"}) + "\n")
    user_dir(tmp_path / ".report.shards")  # not a shard directory of ours
    before = snapshot(tmp_path)
    with pytest.raises(HeadscopeError, match="shard directory"):
        head_report([tiny_llama], [prompts], tmp_path / "report", progress=False)
    assert snapshot(tmp_path) == before
