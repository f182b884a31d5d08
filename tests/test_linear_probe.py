"""Linear probes: a label linearly present by construction is decoded, random labels are not,
the control tasks behave as Hewitt & Liang describe, regression, the CLI and bad input."""

import json
import random

import pandas as pd
import pytest

from headscope.probes import HeadscopeError, load_result
from headscope.probes.readouts.linear_probe import LinearProbe, linear_probe

from test_loading import cli

WORDS = ["river", "cat", "tower", "hill", "garden", "market", "sea", "window", "city", "teacher"]
STARTS = ["The old", "A small", "My", "Every", "The tall", "One green", "Her", "His", "Our", "That red",
          "This", "Some", "No", "A quiet", "The last", "Their", "Its", "A new", "The blue", "Any", "One more",
          "The other", "A fine", "The first", "Your", "A"]


def records(seed=0):
    rng = random.Random(seed)
    return [{"prompt": f"{s} {w}", "word": w, "noise": rng.choice(["x", "y", "z"]), "index": WORDS.index(w) * 1.5}
            for s in STARTS for w in WORDS]


def test_last_token_identity_is_decoded_and_random_labels_are_not(tiny):
    recs = records()
    word = linear_probe(tiny, recs, "word", control="shuffle", progress=False)
    # in the embeddings the last token's identity is there by construction; random blocks dilute it
    assert word.frame["accuracy"].iloc[0] == 1.0 and word.frame["accuracy"].mean() > 0.5, word.frame
    assert (word.frame["control_accuracy"] <= 0.3).all() and word.frame["selectivity"].iloc[0] >= 0.6
    noise = linear_probe(tiny, recs, "noise", progress=False)
    chance = noise.frame["chance"].iloc[0]
    assert 0.2 < chance < 0.5
    assert noise.frame["accuracy"].mean() < chance + 0.12, noise.frame


def test_token_control_task_is_as_easy_as_token_identity(tiny_llama):
    # Hewitt & Liang: labels assigned per token type are memorisable from the token, so probing the
    # token's identity has no selectivity
    word = linear_probe(tiny_llama, records(), "word", progress=False)
    assert word.meta["control"] == "token"
    layer0 = word.frame.iloc[0]
    assert layer0["accuracy"] == 1.0 and layer0["control_accuracy"] == 1.0 and layer0["selectivity"] == 0.0


def test_token_control_with_one_token_type_shuffles(tiny_llama):
    same_end = [{**r, "prompt": r["prompt"] + " is"} for r in records()]
    result = linear_probe(tiny_llama, same_end, "word", progress=False)
    assert result.meta["control"] == "shuffle" and "shuffles" in result.meta["notes"][0]
    assert result.frame["control_accuracy"].max() < 0.5  # not the trivial 1.0 of a constant label


def test_regression_and_position(tiny_llama, tmp_path):
    result = linear_probe(tiny_llama, records(), "index", progress=False)
    assert result.meta["task"] == "regress" and (result.frame["metric"] == "r2").all()
    assert result.frame["accuracy"].iloc[0] > 0.9
    first = linear_probe(tiny_llama, records(), "word", position=0, progress=False)
    assert first.frame["accuracy"].max() < 0.5  # the first token says nothing about the last word
    result.save(tmp_path / "p")
    loaded = load_result(tmp_path / "p")
    assert isinstance(loaded, LinearProbe) and loaded.frame.equals(result.frame)
    loaded.plot()


@pytest.mark.parametrize("kwargs,message", [
    ({"label": "colour"}, "no label field 'colour'"),
    ({"label": "word", "control": "none"}, "unknown control"),
    ({"label": "word", "task": "cluster"}, "unknown task"),
    ({"label": "word", "position": 9}, "past the end"),
    ({"label": "word", "position": -1}, "position -1"),
    ({"label": "word", "test_fraction": 1.5}, "test_fraction"),
    ({"label": "word", "task": "regress"}, "non-numeric"),
])
def test_probe_bad_input(tiny_llama, kwargs, message):
    with pytest.raises(HeadscopeError, match=message):
        linear_probe(tiny_llama, records()[:40], progress=False, **kwargs)


def test_single_valued_label_and_too_few_prompts(tiny_llama):
    with pytest.raises(HeadscopeError, match="single value"):
        linear_probe(tiny_llama, [{"prompt": "a b", "y": "1"}] * 8, "y", progress=False)
    with pytest.raises(HeadscopeError, match="too few"):
        linear_probe(tiny_llama, records()[:2], "word", progress=False)


def test_cli_probe(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records()))
    out = cli("probe", "--model", "random:gpt2", "--prompts", str(path), "--label", "word", "--out", str(tmp_path / "o"))
    assert out.returncode == 0, out.stderr
    frame = pd.read_parquet(tmp_path / "o" / "probe.parquet")
    assert {"layer", "accuracy", "control_accuracy", "selectivity"} <= set(frame.columns)
    out = cli("probe", "--model", "random:gpt2", "--prompts", str(path), "--label", "nope", "--out", str(tmp_path / "x"))
    assert out.returncode == 2 and "no label field 'nope'" in out.stderr and not (tmp_path / "x").exists()
