"""Retrieval heads: the credit rule on a hand-made case, haystacks and needles, the fast scorers
against plain eager loops on the default model, the masking test, the CLI and bad input."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from headscope.circuits.retrieval.haystack import SENTENCE_ENDS, build_test, needle_grid, read_needles
from headscope.circuits.retrieval.scores import (RetrievalHeads, _argmax_rows, agreement, copy_credit, has_newline,
                                          retrieval_heads, rouge1_recall, score_greedy, score_teacher_forced)
from headscope.circuits.retrieval.masking import MaskingTest, masking_test, read_head_scores
from headscope.probes import HeadscopeError, load_result, run

from test_loading import cli


def test_credit_rule_on_a_hand_made_case():
    ids = torch.tensor([5, 7, 9, 7, 3, 4])  # the needle's answer span is positions 1..3 (tokens 7 9 7)
    span = (1, 4)
    # 2 layers x 2 heads x 2 queries; the queries produce tokens 7, then 3
    top = torch.tensor([[[1, 4], [3, 2]],    # L0H0: 7 at 1 (in span, same token), 3 at 4 (outside): 1 hit
                        [[0, 3], [2, 1]]])   # L1H0: 5 at 0 (outside); L1H1: 9 at 2 (other token), 7 at 1 (other)
    got = copy_credit(top, ids, torch.tensor([7, 3]), span)
    assert got.flatten().tolist() == pytest.approx([1 / 3, 1 / 3, 0.0, 0.0])  # L0H1: 7 at 3 (in span, same token)
    # ties: the earliest key wins (torch.argmax), e.g. equal weights on positions 2 and 4
    weights = torch.tensor([[[[0.1, 0.2, 0.3, 0.1, 0.3]]]])
    assert _argmax_rows(0, weights).item() == 2


def test_rouge_recall_and_newline_stop():
    assert rouge1_recall("blue heron seventeen", "The password is blue heron seventeen.") == 1.0
    assert rouge1_recall("a slice of lemon peel", "lemon slices") == pytest.approx(0.4)  # stemmed: slice = slices
    assert has_newline("\n") and has_newline(".\n\n") and not has_newline(" Paris")


def test_haystack_tests(smol):
    needles = read_needles()
    assert len(needles) >= 10 and all(n.real_needle in n.needle for n in needles)
    for depth in (0.0, 0.4, 1.0):
        test = build_test(smol, 600, depth, needles[1], seed=3, chat=False)
        assert abs(test.n_tokens - 600) <= 3
        assert "".join(test.tokens.strings[test.span[0]:test.span[1]]).strip() == needles[1].real_needle
        fraction = test.span[0] / test.n_tokens
        assert depth - 0.1 <= fraction <= depth + 0.1 if depth < 1 else fraction > 0.8
        before = test.prompt[:test.prompt.index(needles[1].needle)].rstrip()
        assert depth in (0.0, 1.0) or before.endswith(SENTENCE_ENDS)  # inside, the needle starts a sentence
    again = build_test(smol, 600, 0.4, needles[1], seed=3, chat=False)
    assert again.prompt == build_test(smol, 600, 0.4, needles[1], seed=3, chat=False).prompt
    assert again.prompt != build_test(smol, 600, 0.4, needles[1], seed=4, chat=False).prompt
    chat = build_test(smol, 600, 0.4, needles[1], seed=3)  # the default model has a chat template
    assert "<|im_start|>user" in chat.prompt
    grid = needle_grid(smol, [300, 400], [0.0, 0.5, 1.0], needles, needles_per_cell=2)
    assert len(grid) == 12 and len({t.needle for t in grid}) == 12


@pytest.mark.parametrize("args,message", [
    ((10**6, 0.5), "over this model's context"),
    ((40, 0.5), "too short"),
    ((600, 1.5), "depth 1.5"),
])
def test_haystack_bad_input(smol, args, message):
    with pytest.raises(HeadscopeError, match=message):
        build_test(smol, *args, read_needles()[0])


def test_needle_file_errors(tmp_path):
    bad = tmp_path / "n.jsonl"
    bad.write_text('{"needle": "The key is red.", "question": "What colour?", "real_needle": "red"}\n'
                   '{"needle": "x", "question": "y"}\n')
    with pytest.raises(HeadscopeError, match=r"n.jsonl:2: field 'real_needle'"):
        read_needles(bad)
    bad.write_text('{"needle": "The key is red.", "question": "What colour?", "real_needle": "blue"}\n')
    with pytest.raises(HeadscopeError, match="not part of its needle"):
        read_needles(bad)


def eager_greedy(model, test, steps=50):
    """The plain loop: a full eager forward per step, the last row of every pattern."""
    ids, score, new = list(test.tokens.ids), torch.zeros(model.n_layers, model.n_heads), []
    eos = model.tokenizer.eos_token_id
    for _ in range(steps):
        out = run(model, model.batch_of_ids(torch.tensor([ids])), record="blocks.*.attn.hook_pattern")
        token = int(out.logits[0, -1].argmax())
        if token == eos:
            break
        top = torch.stack([out.cache[f"blocks.{l}.attn.hook_pattern"][0, :, -1].argmax(-1)
                           for l in range(model.n_layers)]).cpu()[..., None]
        score += copy_credit(top, torch.tensor(ids), torch.tensor([token]), test.span)
        ids.append(token)
        new.append(token)
        if has_newline(model.tokenizer.decode([token])):
            break
    return score, new


def test_fast_scorers_equal_plain_eager_loops(smol):
    test = build_test(smol, 300, 0.5, read_needles()[1], seed=1)
    score, new = score_greedy(smol, test)
    oracle, oracle_new = eager_greedy(smol, test)
    assert new == oracle_new and len(new) > 3
    torch.testing.assert_close(score, oracle)
    assert score.max() > 0.5  # some head copies the needle
    forced = score_teacher_forced(smol, test)
    answer = smol.tokenize(test.prompt + " " + test.needle.real_needle).ids[len(test.tokens):]
    ids = list(test.tokens.ids) + answer
    out = run(smol, smol.batch_of_ids(torch.tensor([ids[:-1]])), record="blocks.*.attn.hook_pattern")
    top = torch.stack([out.cache[f"blocks.{l}.attn.hook_pattern"][0, :, -len(answer):].argmax(-1)
                       for l in range(smol.n_layers)]).cpu()
    torch.testing.assert_close(forced, copy_credit(top, torch.tensor(ids), torch.tensor(answer), test.span))


def test_retrieval_heads_and_masking_on_the_default_model(smol, tmp_path):
    tests = needle_grid(smol, [300, 400], [0.2, 0.8], read_needles())
    greedy = retrieval_heads(smol, tests, progress=False)
    assert greedy.meta["n_kept"] >= 3 and set(greedy.tests.columns) >= {"length", "depth", "needle", "answer",
                                                                          "recall", "kept"}
    heads = greedy.heads()
    assert heads["score"].iloc[0] > 0.5 and (heads["score"] > 0.1).mean() < 0.2  # a few heads copy
    forced = retrieval_heads(smol, tests, mode="teacher-forced", progress=False)
    assert agreement(greedy, forced)["spearman"] > 0.3
    greedy.save(tmp_path / "r")
    saved = json.loads((tmp_path / "r" / "retrieval_heads.json").read_text())
    assert len(saved) == smol.n_layers * smol.n_heads and all(len(v) == greedy.meta["n_kept"] for v in saved.values())
    loaded = load_result(tmp_path / "r")
    assert isinstance(loaded, RetrievalHeads) and loaded.heads().equals(heads)
    assert (tmp_path / "r" / "report.html").stat().st_size > 100_000  # plotly inlined
    scores = read_head_scores(tmp_path / "r")
    masked = masking_test(smol, tests[:2], scores, [1], modes=("uniform",), seeds=2, progress=False)
    f = masked.frame
    assert list(f["kind"]) == ["none", "top", "random", "random"]
    top = heads[["layer", "head"]].iloc[0]
    assert f[f["kind"] == "top"]["heads"].item() == f"L{top['layer']}H{top['head']}"
    retrieval = {f"L{l}H{h}" for l, h, s in heads[["layer", "head", "score"]].itertuples(index=False) if s > 0.1}
    assert not retrieval & set(" ".join(f[f["kind"] == "random"]["heads"]).split())
    masked.save(tmp_path / "m")
    assert isinstance(load_result(tmp_path / "m"), MaskingTest)
    masked.plot()


def test_masking_bad_input(tiny_llama, tmp_path):
    tests = needle_grid(tiny_llama, [200], [0.5], read_needles())
    with pytest.raises(HeadscopeError, match="must be between 1 and the number of heads"):
        masking_test(tiny_llama, tests, {(0, 0): 0.5}, [17], progress=False)
    with pytest.raises(HeadscopeError, match="L9H0 of the score file is not a head"):
        masking_test(tiny_llama, tests, {(9, 0): 0.5}, [1], progress=False)
    bad = tmp_path / "h.json"
    bad.write_text('{"zero": [1]}')
    with pytest.raises(HeadscopeError, match="is not a"):
        read_head_scores(bad)


def t_band(values, level=0.95):
    """scipy's Student-t interval on the mean; scipy refuses a zero scale, which is a zero-width interval."""
    values = np.asarray(values, float)
    mean, sem = values.mean(), stats.sem(values)
    return (mean, mean) if sem == 0 else stats.t.interval(level, len(values) - 1, loc=mean, scale=sem)


def test_masking_curve_intervals_match_scipy(tiny_llama, tmp_path):
    tests = needle_grid(tiny_llama, [200], [0.2, 0.5, 0.8], read_needles())
    scores = {(0, 0): 0.9, (1, 3): 0.5}
    masked = masking_test(tiny_llama, tests, scores, [1, 2], modes=("uniform",), seeds=3, max_new_tokens=4,
                          progress=False)
    assert masked.meta["interval"] == {"method": "student-t", "level": 0.95, "n": 3}  # the random curve: seeds
    assert masked.meta["interval_over_tests"] == {"method": "student-t", "level": 0.95, "n": 3}
    f, recalls = masked.frame, masked.recalls
    for i, row in f.iterrows():  # each row's band: over the needle tests
        values = recalls[recalls["row"] == i].sort_values("test")["recall"]
        assert len(values) == 3 and row["accuracy"] == pytest.approx(values.mean())
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(t_band(values), abs=1e-12)
    curves = masked.curves()
    assert len(curves) == 1 + 2 * 2 and set(curves["over"]) == {"seeds", "tests"}
    for _, c in curves[curves["kind"] == "random"].iterrows():
        acc = f[(f["kind"] == "random") & (f["k"] == c["k"])]["accuracy"]
        assert c["n"] == 3 and (c["accuracy"], c["ci_low"], c["ci_high"]) == pytest.approx(
            (acc.mean(), *t_band(acc)), abs=1e-12)
    # a random model rarely retrieves anything: spread the seeds' accuracies to compare a real width
    spread = f.copy()
    rand = spread["kind"] == "random"
    spread.loc[rand, "accuracy"] = np.random.default_rng(5).uniform(0, 1, rand.sum())
    for level in (0.9, 0.95):
        result = MaskingTest(spread, {**masked.meta, "interval": {**masked.meta["interval"], "level": level}},
                             {"recalls": recalls})
        for _, c in result.curves()[lambda c: c["kind"] == "random"].iterrows():
            acc = spread[rand & (spread["k"] == c["k"])]["accuracy"].to_numpy()
            low, high = t_band(acc, level)
            assert high - low > 0.05 and (c["ci_low"], c["ci_high"]) == pytest.approx((low, high), rel=1e-10)
        fig = result.plot()
        assert f"{level:.0%} Student-t" in fig.layout.title.text
        bands = [t for t in fig.data if t.fill == "toself"]  # the band traces: ci_high out, ci_low back
        random_band = next(t for t in bands if "random" in t.name)
        c = result.curves()[lambda c: c["kind"] == "random"].sort_values("k")
        assert list(random_band.y) == pytest.approx(list(c["ci_high"]) + list(c["ci_low"])[::-1])
    boot = MaskingTest(spread, {**masked.meta, "interval": {**masked.meta["interval"], "method": "bootstrap-bca"}})
    for _, c in boot.curves()[lambda c: c["kind"] == "random"].iterrows():
        acc = spread[rand & (spread["k"] == c["k"])]["accuracy"].to_numpy()
        ref = stats.bootstrap((acc,), np.mean, method="BCa", n_resamples=2000, rng=np.random.default_rng(0))
        assert (c["ci_low"], c["ci_high"]) == pytest.approx(tuple(ref.confidence_interval), rel=1e-10)
    assert "BCa bootstrap" in boot.plot().layout.title.text
    masked.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert saved["interval"]["method"] == "student-t" and saved["interval"]["n"] == 3
    assert pd.read_parquet(tmp_path / "m" / "curves.parquet").equals(curves)
    # one seed, one test: the interval is undefined (NaN), never zero width
    one = masking_test(tiny_llama, tests[:1], scores, [1], modes=("zero",), seeds=1, max_new_tokens=2,
                       interval="bootstrap", level=0.9, progress=False)
    assert one.meta["interval"] == {"method": "bootstrap-bca", "level": 0.9, "n": 1}
    assert one.frame[["ci_low", "ci_high"]].isna().all().all() and one.curves()[["ci_low", "ci_high"]].isna().all().all()
    one.plot()
    with pytest.raises(HeadscopeError, match="unknown interval method"):
        masking_test(tiny_llama, tests, scores, [1], interval="normal", progress=False)
    with pytest.raises(HeadscopeError, match="must be between 0 and 1"):
        masking_test(tiny_llama, tests, scores, [1], level=95, progress=False)


def test_retrieval_head_summary_intervals_match_scipy(tiny_llama):
    tests = needle_grid(tiny_llama, [200], [0.3, 0.7], read_needles(), needles_per_cell=2)
    result = retrieval_heads(tiny_llama, tests, mode="teacher-forced", progress=False)  # every test counts
    assert result.meta["interval"] == {"method": "student-t", "level": 0.95, "n": 4}
    heads = result.heads()
    for _, row in heads.head(6).iterrows():
        values = result.frame[(result.frame["layer"] == row["layer"]) & (result.frame["head"] == row["head"])]["score"]
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(t_band(values), abs=1e-12)


def test_cli_retrieval_and_mask(tmp_path, capsys):
    out = cli("retrieval", "--model", "random:qwen2", "--lengths", "200,260", "--depths", "0,1", "--max-new-tokens",
              "8", "--out", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    heads = pd.read_parquet(tmp_path / "r" / "heads.parquet")
    assert {"layer", "head", "score", "n_tests"} <= set(heads.columns) and len(heads) == 16
    assert {"length", "depth", "needle", "answer", "recall", "kept"} <= set(
        pd.read_parquet(tmp_path / "r" / "tests.parquet").columns)
    out = cli("retrieval-mask", "--model", "random:qwen2", "--heads", str(tmp_path / "r"), "--lengths", "200",
              "--depths", "0.5", "--k", "1,2", "--seeds", "1", "--max-new-tokens", "4", "--level", "0.9",
              "--out", str(tmp_path / "m"))
    assert out.returncode == 0, out.stderr
    assert set(pd.read_parquet(tmp_path / "m" / "masking.parquet")["kind"]) == {"none", "top", "random"}
    assert json.loads((tmp_path / "m" / "meta.json").read_text())["interval"] == {"method": "student-t", "level": 0.9,
                                                                                "n": 1}
    for args, message in [(["--lengths", "5000"], "over this model's context of 512"),
                          (["--depths", "1.5"], "depth 1.5"),
                          (["--mode", "beam"], "invalid choice: 'beam'"),
                          (["--interval", "normal"], "invalid choice: 'normal'"),
                          (["--level", "95"], "confidence level between 0 and 1")]:
        code = in_process("retrieval", "--model", "random:qwen2", *args, "--out", str(tmp_path / "x"))
        assert code == 2 and message in capsys.readouterr().err and not (tmp_path / "x").exists()
    code = in_process("retrieval-mask", "--model", "random:qwen2", "--heads", str(tmp_path / "r"), "--k", "99",
                      "--lengths", "200", "--depths", "0.5", "--out", str(tmp_path / "y"))
    assert code == 2 and "k values [99]" in capsys.readouterr().err


def in_process(*args) -> int:
    """The command's exit status, run in this process (no interpreter start per mistake)."""
    from headscope.app.cli import main

    try:
        return main(list(args))
    except SystemExit as stop:  # argparse's own usage errors
        return stop.code
