"""Average indirect effects over facts: position buckets as in the reference, and the averages equal
the mean of the per-fact traces."""

import numpy as np
from scipy import stats
import pytest

from headscope.circuits.causal.fact_effects import BUCKETS, average_indirect_effects, position_buckets, read_facts
from headscope.circuits.causal.tracing import noise_scale, trace
from headscope.data import DATA_DIR, read_jsonl
from headscope.probes import HeadscopeError


def test_position_buckets():
    assert position_buckets([1, 2, 3], 8) == [
        (1, BUCKETS[0]), (2, BUCKETS[1]), (3, BUCKETS[2]), (4, BUCKETS[3]), (5, BUCKETS[4]), (6, BUCKETS[4]),
        (7, BUCKETS[5])]
    # a one-token subject is its first and last token; a subject followed by one token: first subsequent = last
    assert position_buckets([0], 2) == [(0, BUCKETS[0]), (0, BUCKETS[2]), (1, BUCKETS[3]), (1, BUCKETS[5])]


def test_shipped_fact_set():
    facts = read_jsonl("facts.jsonl")
    assert len(facts) >= 200 and len({f["relation"] for f in facts}) >= 5
    for f in facts:
        assert f["subject"] in f["prompt"] and f["target"].startswith(" ")
        assert f["target"].strip().lower() not in f["prompt"].lower()


def test_average_equals_mean_of_traces(smol):
    facts = read_facts(DATA_DIR / "facts.jsonl")
    known = facts[:6]  # six capitals; the model knows most; a seeded sample of two of the known ones is traced
    result = average_indirect_effects(smol, known, kinds=("resid",), samples=2, max_facts=2, seed=1, progress=False)
    meta = result.meta
    assert meta["n_facts"] == 2 and meta["n_known"] + meta["n_dropped"] == 6
    scale = noise_scale(smol, "3sd", [f["subject"] for f in known])
    assert meta["noise_scale"] == pytest.approx(scale)
    # redo by hand: trace each used fact, bucket its positions, average
    from headscope.circuits.causal.fact_effects import known_facts
    import random

    kept = known_facts(smol, known)
    picked = sorted(random.Random(1).sample(range(len(kept)), 2))
    values = {}
    for f in (kept[i] for i in picked):
        t = trace(smol, f["prompt"], f["subject"], f["target"], kinds=("resid",), samples=2, noise=scale, seed=1,
                  progress=False)
        effect = t.frame.set_index(["kind", "layer", "position"])["indirect_effect"]
        for pos, bucket in position_buckets(t.meta["subject_positions"], t.meta["last_position"] + 1):
            values.setdefault(bucket, []).append(effect[("resid", 12, pos)])
    got = result.frame[(result.frame["layer"] == 12)].set_index("bucket")
    for bucket, vals in values.items():
        assert got.loc[bucket, "effect"] == pytest.approx(np.mean(vals), abs=1e-6)
        assert got.loc[bucket, "n"] == len(vals)
        if len(vals) > 1:  # the Student-t interval over the bucket's values (two facts: t with >= 1 dof)
            half = stats.t.ppf(0.975, len(vals) - 1) * np.std(vals, ddof=1) / np.sqrt(len(vals))
            assert got.loc[bucket, "ci_high"] - got.loc[bucket, "effect"] == pytest.approx(half, rel=1e-3, abs=1e-9)
    assert meta["interval"] == {"method": "student-t", "level": 0.95, "n": 2}
    assert len(result.plot().data) == 1


def test_fact_file_errors(tmp_path, tiny_llama):
    bad = tmp_path / "f.jsonl"
    bad.write_text('{"subject": "Paris", "template": "no placeholder", "target": " x"}\n')
    with pytest.raises(HeadscopeError, match="neither 'prompt' nor a 'template'"):
        read_facts(bad)
    bad.write_text('{"subject": "Paris", "prompt": "Rome is", "target": " x"}\n')
    with pytest.raises(HeadscopeError, match="subject 'Paris' not in its prompt"):
        read_facts(bad)
    bad.write_text('{"subject": "Paris", "prompt": "Paris is", "target": " x"}\nnot json\n')
    with pytest.raises(HeadscopeError, match="f.jsonl:2: not valid JSON"):
        read_facts(bad)
