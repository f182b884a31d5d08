"""The command line: JSON info, capture to a directory, one-line errors with exit status 2."""

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


def test_user_mistakes_print_one_line_and_exit_2(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The cat sat\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    cases = [
        (["info", "--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["capture", "--model", "random:llama", "--prompts", str(tmp_path / "nope.txt"), "--hooks", "x", "--out", "o"],
         "prompt file not found"),
        (["capture", "--model", "random:llama", "--prompts", str(empty), "--hooks", "x", "--out", "o"], "has no prompts"),
        (["capture", "--model", "random:llama", "--prompts", str(prompts), "--hooks", "blocks.*.hook_zz",
          "--out", str(tmp_path / "o")], "matches no hook"),
        (["capture", "--model", "random:llama", "--prompts", str(prompts), "--hooks", "blocks.0.hook_resid_post",
          "--positions", "middle", "--out", str(tmp_path / "o")], "--positions 'middle'"),
    ]
    for args, message in cases:
        out = cli(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
    assert not (tmp_path / "o").exists()
