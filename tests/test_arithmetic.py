"""Arithmetic heads: the prompt suites, neuron scores against a plain per-neuron loop, head effects
against the head-ablation sweep, the CLI on the default model, and bad input."""

import json

import pandas as pd
import pytest
import torch

from headscope.circuits.heads.single_heads import head_ablation
from headscope.circuits.arithmetic.heads import Arithmetic, Unsolved, arithmetic_heads, operand_attention
from headscope.circuits.arithmetic.prompts import arithmetic_prompts, operand_pairs, score_prompts
from headscope.circuits.arithmetic.neurons import final_scale, last_state, neuron_attribution, neuron_scores, neuron_vectors
from headscope.probes import HeadscopeError, load_result, run
from headscope.probes.readouts.decompose import final_norm, unembed_matrix

from test_loading import cli


def test_operand_ranges():
    assert len(operand_pairs("add", 1)) == 81 and min(min(p) for p in operand_pairs("add", 1)) == 1
    assert all(a >= b for a, b in operand_pairs("sub", 2)) and min(operand_pairs("sub", 2))[0] == 10
    assert all(a % b == 0 and 1 <= a // b <= 9 for a, b in operand_pairs("div", 1))
    assert len(operand_pairs("mul", 3)) == 900 ** 2


def test_prompt_suite(smol):
    prompts = arithmetic_prompts(smol, ["add", "div"], digits=1, template="fewshot", n=12, seed=3)
    assert [p.op for p in prompts] == ["add"] * 12 + ["div"] * 12
    for p in prompts:
        value = {"add": p.a + p.b, "div": p.a / p.b}[p.op]
        assert float(p.answer) == value
        # the cut: prompt + target is the question with its answer, and the target starts the answer's tokens
        full = p.prompt + p.target
        assert full.endswith(" " + p.answer) and p.target.strip() == p.answer
        ids = smol.tokenize(full).ids
        assert tuple(ids[len(smol.tokenize(p.prompt).ids):]) == p.answer_ids
        assert smol.tokenizer.decode(p.answer_ids[:1]).strip() == p.answer[0]  # the target is the first digit
        # the spans point at the question asked, after the three solved examples
        q = p.prompt.splitlines()[-1]
        assert p.prompt[slice(*p.spans["a"])] == str(p.a) and p.prompt[slice(*p.spans["op"])] in "+/"
        assert p.spans["a"][0] == len(p.prompt) - len(q) and q.startswith(f"{p.a} ")
        shots = p.prompt.splitlines()[:-1]
        assert len(shots) == 3 and f"{p.a} {'+' if p.op == 'add' else '/'} {p.b} =" not in "\n".join(shots)
    again = arithmetic_prompts(smol, ["add", "div"], digits=1, template="fewshot", n=12, seed=3)
    assert again == prompts
    bare = arithmetic_prompts(smol, "add", template="bare", n=3)
    assert all(p.prompt == f"{p.a} + {p.b} = " for p in bare)


def test_scored_prompts_and_full_answer_logprob(smol):
    prompts = arithmetic_prompts(smol, ["add", "mul"], n=8)
    scored = score_prompts(smol, prompts)
    # teacher-forced log-probabilities of the whole answer equal a plain forward per prompt
    for p, row in zip(prompts, scored.itertuples()):
        ids = smol.tokenize(p.prompt).ids + list(p.answer_ids)
        with torch.no_grad():
            logp = torch.log_softmax(run(smol, smol.batch([p.prompt + p.target])).logits[0].float(), -1)
        k = len(smol.tokenize(p.prompt).ids)
        want = sum(logp[k - 1 + i, ids[k + i]].item() for i in range(len(p.answer_ids)))
        assert row.answer_logprob == pytest.approx(want, abs=1e-4)
        assert row.first_logprob == pytest.approx(logp[k - 1, ids[k]].item(), abs=1e-4)
        assert row.correct == (row.output.strip().startswith(p.answer) and not row.output.strip()[len(p.answer):][:1].isdigit())
    assert scored["correct"].any() and not scored["correct"].all()  # the model solves some, not all


@pytest.mark.parametrize("template, message", [
    ("nope", "unknown template 'nope'"), ("file-no-b", "no {b} placeholder")])
def test_bad_templates(smol, tmp_path, template, message):
    if template == "file-no-b":
        (tmp_path / "t.txt").write_text("Compute {a} {op} =")
        template = str(tmp_path / "t.txt")
    with pytest.raises(HeadscopeError, match=message.replace("{", r"\{").replace("}", r"\}")):
        arithmetic_prompts(smol, "add", template=template)


@pytest.mark.parametrize("kwargs, message", [
    (dict(ops=["pow"]), "unknown operation 'pow'"), (dict(digits=0), "digits 0 must be a positive integer"),
    (dict(n=0), "n 0 must be a positive number")])
def test_bad_suite_options(smol, kwargs, message):
    with pytest.raises(HeadscopeError, match=message):
        arithmetic_prompts(smol, **{"ops": ["add"], **kwargs})


def test_neuron_scores_equal_a_plain_loop(tiny):
    toks = [tiny.tokenize(t) for t in ["The cat sat on the mat", "One two three four five six"]]
    answers = torch.tensor([5, 17], device=tiny.device)
    state = last_state(tiny, toks)
    ablated = last_state(tiny, toks, ablate=[(0, 1), (1, 0)])
    scale = final_scale(tiny, state)
    scores, tops = neuron_scores(tiny, [state, ablated], answers, scale, chunk_elements=4096)  # many vocab chunks
    norm, (w_u, b_u) = final_norm(tiny), unembed_matrix(tiny)
    cap = getattr(tiny.hf_model.config, "final_logit_softcapping", None)

    def logprob(x, s, a):
        logits = norm.linear(x, s) + (0 if norm.bias is None else norm.bias.to(x.device))
        logits = logits @ w_u.to(x.device) + (0 if b_u is None else b_u.to(x.device))
        logits = torch.tanh(logits / cap) * cap if cap else logits
        return torch.log_softmax(logits, -1)[a]

    for s, st in enumerate([state, ablated]):
        for p in range(2):
            for layer in range(tiny.n_layers):
                raw = None if st.mlp_raw is None else st.mlp_raw[p, layer]
                vectors, bias = neuron_vectors(tiny, layer, st.post[p, layer], raw)
                # a layer's neurons plus its output bias are the MLP's write to the stream
                total = vectors.sum(0) + (0 if bias is None else bias)
                torch.testing.assert_close(total, st.mlp_out[p, layer], atol=2e-5, rtol=1e-4)
                x = st.resid_mid[p, layer]
                base = logprob(x, scale[p], answers[p])
                for i in range(0, vectors.shape[0], 5):
                    want = logprob(x + vectors[i], scale[p], answers[p]) - base
                    assert scores[s, p, layer, i].item() == pytest.approx(want.item(), abs=2e-5)
    if not hasattr(tiny.bridge.blocks[0], "ln2_post"):  # top tokens: those of the neuron's direct logits
        w_out = tiny.bridge.blocks[0].mlp.W_out.detach().float()
        direct = (norm.centered(w_out) * norm.weight) @ w_u
        assert torch.equal(tops[0, :, 0].cpu(), direct.topk(10, -1).indices.cpu())
        assert torch.equal(tops[0, :, 1].cpu(), (-direct).topk(10, -1).indices.cpu())


def test_grouped_attribution_equals_separate_calls(tiny_llama):
    prompts, answers = ["a b c", "one two", "x y z w", "red green"], [3, 4, 5, 6]
    groups = ["p", "q", "p", "q"]
    ablate = {"p": [(0, 1)], "q": [(1, 0), (2, 1)]}
    both = neuron_attribution(tiny_llama, prompts, answers, groups=groups, ablate=ablate, layers=[1, 3])
    for label in ("p", "q"):
        idx = [i for i, g in enumerate(groups) if g == label]
        alone = neuron_attribution(tiny_llama, [prompts[i] for i in idx], [answers[i] for i in idx],
                                   ablate=ablate[label], layers=[1, 3])
        mine = both.frame[both.frame["group"] == label].reset_index(drop=True)
        for column in ("score", "cna_score", "activation"):
            assert mine[column].to_numpy() == pytest.approx(alone.frame[column].to_numpy(), abs=1e-5)
        assert mine["top_tokens"].map(list).tolist() == alone.frame["top_tokens"].map(list).tolist()
        assert both.layers[both.layers["group"] == label]["score"].to_numpy() == pytest.approx(
            alone.layers["score"].to_numpy(), abs=1e-5)


def test_neuron_attribution_bad_input(tiny_llama):
    with pytest.raises(HeadscopeError, match="2 prompts and 1 answers"):
        neuron_attribution(tiny_llama, ["a b", "c d"], [3])
    with pytest.raises(HeadscopeError, match="layer 9 out of range"):
        neuron_attribution(tiny_llama, ["a b"], [3], ablate=[(9, 0)])


def test_arithmetic_on_the_default_model(smol, tmp_path):
    result = arithmetic_heads(smol, ["add"], n=5, modes=("zero", "mean"), ks=(1, 2), seeds=2, neuron_prompts=2,
                              neuron_layers=[20, 29], progress=False)
    solved = result.prompts[(result.prompts["template"] == "fewshot") & result.prompts["correct"]]
    assert len(solved) == result.meta["n_solved"]["add"] > 0
    assert set(result.accuracy["template"]) == {"fewshot", "bare"}
    # the effects are the head-ablation sweep's numbers on the same prompts
    records = [{"prompt": r.prompt, "target": r.target} for r in solved.itertuples()]
    some = [(0, 0), (5, 3), (16, 0), (23, 3), (29, 8)]
    for mode in ("zero", "mean"):
        assert (result.frame["mode"] == mode).sum() == smol.n_layers * smol.n_heads
        sweep = head_ablation(smol, records, mode=mode, metric="logprob", heads=some, progress=False).summary()
        mine = result.frame[result.frame["mode"] == mode].merge(sweep, on=["layer", "head"], suffixes=("", "_sweep"))
        assert len(mine) == len(some) and (mine["effect"] - mine["effect_sweep"]).abs().max() < 1e-5
    # attention to operands and operator: the last row's weights over those tokens
    prompts = arithmetic_prompts(smol, ["add"], n=5)
    solved_prompts = [p for p, ok in zip(prompts, result.prompts["correct"][:5]) if ok]
    attention = operand_attention(smol, solved_prompts[:1])[0]
    with torch.no_grad():
        pattern = run(smol, smol.batch([solved_prompts[0].prompt]), record="blocks.5.attn.hook_pattern").cache[
            "blocks.5.attn.hook_pattern"][0, :, -1]
    t = smol.tokenize(solved_prompts[0].prompt)
    operands = t.positions_of(*solved_prompts[0].spans["a"]) + t.positions_of(*solved_prompts[0].spans["b"])
    assert attention[5, :, 0] == pytest.approx(pattern[:, operands].sum(-1).numpy(), abs=1e-5)
    assert ((attention >= 0) & (attention <= 1 + 1e-5)).all()
    # neurons: every neuron of every layer, CNA against the top head
    top = result.frame[result.frame["mode"] == "zero"].nlargest(1, "effect")
    assert result.neurons["cna_heads"].iloc[0] == f"{top['layer'].iloc[0]}-{top['head'].iloc[0]}"
    assert len(result.neurons) == 2 * smol.bridge.blocks[0].mlp.W_out.shape[0]
    assert set(result.neurons["layer"]) == {20, 29} and set(result.layers["layer"]) == set(range(smol.n_layers))
    assert result.neurons["cna_score"].notna().all() and result.neurons["top_tokens"].map(len).eq(10).all()
    control = result.control
    assert set(control["control"]) == {"top", "random"} and set(control["k"]) == {1, 2}
    spec = result.specialisation()
    assert "specialised_to" in spec and len(spec) >= 5
    result.save(tmp_path / "run")
    loaded = load_result(tmp_path / "run")
    assert isinstance(loaded, Arithmetic)
    pd.testing.assert_frame_equal(loaded.frame, result.frame)
    pd.testing.assert_frame_equal(loaded.neurons, result.neurons)
    assert "Specialisation" in (tmp_path / "run" / "report.html").read_text()


def test_cli_arithmetic(tmp_path):
    out = tmp_path / "arith"
    proc = cli("arithmetic", "--model", "default", "--ops", "add", "--n", "4", "--modes", "zero", "--k", "1",
               "--control-seeds", "1", "--neuron-prompts", "1", "--neuron-layers", "29", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "add: top heads" in proc.stdout
    for name in ("heads", "neurons", "accuracy", "prompts", "control", "layers"):
        assert (out / f"{name}.parquet").exists()
    heads = pd.read_parquet(out / "heads.parquet")
    assert {"layer", "head", "op", "effect", "operand_attention", "operator_attention"} <= set(heads.columns)
    neurons = pd.read_parquet(out / "neurons.parquet")
    assert {"layer", "neuron", "op", "score", "cna_score", "top_tokens"} <= set(neurons.columns)
    assert json.loads((out / "meta.json").read_text())["kind"] == "arithmetic-heads"


def test_cli_arithmetic_bad_input(tmp_path):
    for args, message in [(["--ops", "add,pow"], "unknown operation 'pow'"), (["--digits", "0"], "digits 0"),
                          (["--cna-heads", "3-x"], "--cna-heads: '3-x'"),
                          (["--neuron-layers", "7"], "layer 7 out of range")]:
        proc = cli("arithmetic", "--model", "random:llama", *args, "--out", str(tmp_path / "x"))
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    # a model that solves nothing: say so, stop, and leave the accuracy table
    out = tmp_path / "unsolved"
    proc = cli("arithmetic", "--model", "random:llama", "--ops", "add", "--n", "5", "--out", str(out))
    assert proc.returncode == 2 and "answers none of the 5 fewshot prompts" in proc.stderr
    accuracy = pd.read_parquet(out / "accuracy.parquet")
    assert (accuracy["accuracy"] == 0).all() and set(accuracy["op"]) == {"add"}
    assert not (out / "heads.parquet").exists()


def test_unsolved_is_an_error(tiny_llama):
    with pytest.raises(Unsolved) as err:
        arithmetic_heads(tiny_llama, ["sub"], n=4, progress=False)
    assert err.value.accuracy["accuracy"].eq(0).all()
