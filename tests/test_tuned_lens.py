"""The tuned lens: an untrained lens is the logit lens exactly; training lowers held-out KL at every
layer of the default model; lenses save, load and refuse other models; the CLI."""

import json

import pytest
import torch

from headscope.probes import HeadscopeError, load_model, load_result
from headscope.probes.text.corpus import passages, read_texts, token_chunks
from headscope.probes.readouts.lens import LogitLens, logit_lens, tuned_lens
from headscope.probes.readouts.tuned_lens import TunedLens, lens_kl, load_tuned_lens, train_tuned_lens

from test_loading import cli

PROMPT = "the river runs past the old mill"
LIST_COLUMNS = ["top_ids", "top_tokens", "top_probs"]


def test_untrained_lens_is_the_logit_lens(tiny):
    plain = logit_lens(tiny, PROMPT, top_k=4)
    zero = logit_lens(tiny, PROMPT, top_k=4, lens=TunedLens.zeros(tiny))
    assert zero.meta["lens"] == "tuned"
    assert plain.frame.drop(columns=LIST_COLUMNS).equals(zero.frame.drop(columns=LIST_COLUMNS))
    assert plain.frame["top_ids"].tolist() == zero.frame["top_ids"].tolist()


def test_translator_is_applied_residually_below_the_output_layer(tiny_llama):
    lens = TunedLens.zeros(tiny_llama)
    lens.weight[1] = torch.eye(tiny_llama.d_model)  # layer 1 reads 2h: the same tokens under RMSNorm
    lens.bias[2] = 5 * torch.randn(tiny_llama.d_model, generator=torch.Generator().manual_seed(0))
    plain = logit_lens(tiny_llama, PROMPT).frame.set_index(["layer", "position"])
    tuned = logit_lens(tiny_llama, PROMPT, lens=lens).frame.set_index(["layer", "position"])
    assert tuned.loc[1, "top_ids"].tolist() == plain.loc[1, "top_ids"].tolist()
    assert tuned.loc[2, "top_ids"].tolist() != plain.loc[2, "top_ids"].tolist()
    last = tiny_llama.n_layers
    assert tuned.loc[last, "top_probs"].tolist() == plain.loc[last, "top_probs"].tolist()  # no translator


def test_trained_lens_beats_the_logit_lens_at_every_layer_of_the_default_model(smol, tmp_path):
    lens = train_tuned_lens(smol, tokens=1024, steps=8, seq_len=128, progress=False)
    trained = lens.meta["trained"]
    assert (trained["autocast"] == "bfloat16") == (smol.device.type == "cuda")  # bf16 logits on a GPU only
    assert sum(trained["last_step_kl"]) < sum(trained["first_step_kl"])
    kl = lens_kl(smol, lens, tokens=512, seq_len=128, progress=False)
    table = kl.frame.pivot(index="layer", columns="lens", values="kl")
    below_output = table.iloc[:-1]
    assert (below_output["tuned"] < below_output["logit"]).all(), table
    assert table.iloc[-1]["tuned"] == table.iloc[-1]["logit"] < 1e-4  # the output layer is the model's
    kl.save(tmp_path / "kl")
    assert load_result(tmp_path / "kl").frame.equals(kl.frame)
    kl.plot()
    path = lens.save(tmp_path / "smol-lens")
    again = load_tuned_lens(smol, path)
    assert torch.equal(again.weight.cpu(), lens.weight.cpu())
    result = tuned_lens(smol, "The Eiffel Tower is located in the city of", path, target=" Paris", positions=[-1])
    assert isinstance(result, LogitLens) and result.meta["lens"] == "tuned"
    plain = logit_lens(smol, "The Eiffel Tower is located in the city of", target=" Paris", positions=[-1])
    assert result.frame["kl_to_final"].iloc[:-1].mean() < plain.frame["kl_to_final"].iloc[:-1].mean()
    plain.trajectory(None, result)


def test_fused_training_loss_equals_the_kl_and_its_gradient():
    from headscope.probes.readouts.tuned_lens import _CrossEntropyToFinal

    gen = torch.Generator().manual_seed(0)
    p = torch.softmax(3 * torch.randn(5, 40, generator=gen), -1)
    y = (3 * torch.randn(5, 40, generator=gen)).requires_grad_(True)
    kl = (p * (p.log() - torch.log_softmax(y, -1))).sum()
    (expected,) = torch.autograd.grad(kl, y)
    loss = _CrossEntropyToFinal.apply(y, p) + (p * p.log()).sum()
    assert float(loss) == pytest.approx(float(kl), rel=1e-5)
    loss.backward()
    torch.testing.assert_close(y.grad, expected)


def test_lens_files_refuse_other_models(tiny_llama, tmp_path):
    path = TunedLens.zeros(tiny_llama).save(tmp_path / "lens")
    assert path.name == "lens.safetensors" and json.loads(path.with_suffix(".json").read_text())["model"]
    other = load_model("random:llama", seed=1)
    with pytest.raises(HeadscopeError, match="trained for 'random:llama'.*not for 'random:llama'"):
        load_tuned_lens(other, path)
    with pytest.raises(HeadscopeError, match="trained for"):
        logit_lens(other, PROMPT, lens=TunedLens.zeros(tiny_llama))
    same = load_model("random:llama", dtype="bfloat16")  # the same weights in another dtype: accepted
    load_tuned_lens(same, path)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a lens")
    with pytest.raises(HeadscopeError, match="not a headscope tuned lens"):
        load_tuned_lens(tiny_llama, junk)
    with pytest.raises(HeadscopeError, match="no tuned lens at .*lens-train"):
        load_tuned_lens(other)


def test_corpus_splits_and_chunks(tiny_llama, tmp_path):
    train, test = passages("train"), passages("test")
    assert len(test) >= 40 and abs(len(train) - 4 * len(test)) <= 4
    assert not set(train) & set(test)
    ids = token_chunks(tiny_llama, train[:20], 32)
    eos = tiny_llama.tokenizer.eos_token_id
    assert ids.shape[1] == 32 and (ids[:, 0] == eos).all()
    text = tmp_path / "t.txt"
    text.write_text("first paragraph\n\nsecond one\n")
    assert read_texts(text) == ["first paragraph", "second one"]
    with pytest.raises(HeadscopeError, match="less than one sequence"):
        token_chunks(tiny_llama, ["short"], 64)
    with pytest.raises(HeadscopeError, match="unknown split"):
        passages("dev")


@pytest.mark.parametrize("kwargs,message", [
    ({"tokens": 0}, "tokens 0"),
    ({"tokens": 10, "steps": 20}, "at least steps"),
    ({"seq_len": 1}, "sequence length 1"),
    ({"text": "/no/such/file.txt"}, "text file not found"),
])
def test_training_bad_input(tiny_llama, kwargs, message):
    with pytest.raises(HeadscopeError, match=message):
        train_tuned_lens(tiny_llama, **{"tokens": 64, "steps": 2, **kwargs}, progress=False)


def test_cli_lens_train_and_tuned_lens(tmp_path):
    out = cli("lens-train", "--model", "random:qwen2", "--tokens", "256", "--steps", "4", "--seq-len", "32",
              "--eval-tokens", "64", "--out", str(tmp_path / "q"))
    assert out.returncode == 0, out.stderr
    assert "logit -> tuned" in out.stdout and (tmp_path / "q.safetensors").is_file()
    out = cli("lens", "--model", "random:qwen2", "--prompt", PROMPT, "--lens", "tuned", "--lens-file",
              str(tmp_path / "q.safetensors"), "--out", str(tmp_path / "l"))
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "l" / "meta.json").read_text())["lens"] == "tuned"
    out = cli("lens", "--model", "random:llama", "--prompt", PROMPT, "--lens", "tuned", "--lens-file",
              str(tmp_path / "q.safetensors"), "--out", str(tmp_path / "m"))
    assert out.returncode == 2 and "trained for 'random:qwen2'" in out.stderr and not (tmp_path / "m").exists()
