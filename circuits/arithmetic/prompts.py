"""Arithmetic prompt suites: operations over operand ranges, templates, answers, and which the model solves.

- **Operations** ``add`` (``+``), ``sub`` (``-``), ``mul`` (``*``), ``div`` (``/``). With ``digits`` d,
  operands run over the d-digit numbers (1-9 for d = 1: zero would make addition and multiplication
  trivial and division undefined). Subtraction keeps ``a >= b`` so answers are non-negative;
  division draws the divisor and the quotient from the range and asks ``b * q / b``, so every answer
  is an integer by construction (the dividend may have more digits).
- **Templates**: ``bare`` (``"{a} + {b} ="``), ``fewshot`` (three solved examples of the same
  operation, one per line, then the question; the examples are drawn once per suite and never asked),
  or a text file with ``{a}``, ``{op}`` and ``{b}`` placeholders.
- **Answers, tokenization-aware**: the answer follows ``" "``; the prompt is cut at the start of the
  token that holds the answer's first character when prompt and answer are tokenized together, so
  the target is exactly the next token (with SmolLM2's tokenizer the space is its own token and the
  target is the first digit; with GPT-2's it is ``" 8"``). ``answer_ids`` are all the answer's
  tokens: ``answer_logprob`` scores the whole answer, teacher-forced.
- **Solved**: greedy decoding reproduces every answer token and the next token does not continue
  the number. ``accuracy`` tables this per operation and template before anything is filtered.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ...probes import HeadscopeError, Model, Result, Tokens, run
from ...probes.engine.batching import chunks
from ...probes.engine.generate import generate
from ...probes.text.prompts import read_text_file

OPS = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
TEMPLATES = ("fewshot", "bare")
BARE = "{a} {op} {b} ="


@dataclass(frozen=True)
class ArithmeticPrompt:
    """One question: the prompt (cut before the answer's first token), the answer and its tokens."""

    op: str
    template: str
    a: int
    b: int
    answer: str
    prompt: str
    target: str  # the answer's text as its tokens spell it (the prompt's cut may move a space into it)
    answer_ids: tuple[int, ...]
    spans: dict  # character spans of the asked question's a, op and b in the prompt

    def record(self) -> dict:
        """The ablation machinery's prompt record (``prompt``, ``target``)."""
        return {"prompt": self.prompt, "target": self.target}


def check_ops(ops) -> list[str]:
    ops = [ops] if isinstance(ops, str) else list(ops)
    if not ops:
        raise HeadscopeError("no operation given; use some of " + ", ".join(OPS))
    for op in ops:
        if op not in OPS:
            raise HeadscopeError(f"unknown operation {op!r}; use some of {', '.join(OPS)}")
    return list(dict.fromkeys(ops))


def operand_pairs(op: str, digits: int) -> list[tuple[int, int]]:
    """Every question of ``op`` over ``digits``-digit numbers (module docstring)."""
    if isinstance(digits, bool) or not isinstance(digits, int) or digits < 1:
        raise HeadscopeError(f"digits {digits!r} must be a positive integer")
    if digits > 3:
        raise HeadscopeError(f"digits {digits} is more than 3; the suites go up to 3-digit operands")
    low, high = (1 if digits == 1 else 10 ** (digits - 1)), 10 ** digits - 1
    numbers = range(low, high + 1)
    if op == "sub":
        return [(a, b) for a in numbers for b in numbers if a >= b]
    if op == "div":
        return [(b * q, b) for b in numbers for q in numbers]
    return [(a, b) for a in numbers for b in numbers]


def answer_of(op: str, a: int, b: int) -> int:
    return {"add": a + b, "sub": a - b, "mul": a * b, "div": a // b}[op]


def read_template(template: str) -> tuple[str, str]:
    """(name, template text) of a built-in name or a template file."""
    if template in TEMPLATES:
        return template, BARE
    path = Path(template)
    if not path.is_file():
        raise HeadscopeError(f"unknown template {template!r}: use fewshot, bare or a template file")
    text = read_text_file(path).rstrip()
    for field in ("{a}", "{op}", "{b}"):
        if field not in text:
            raise HeadscopeError(f"template file {template} has no {field} placeholder")
    try:
        text.format(a=1, op="+", b=2)
    except (KeyError, IndexError, ValueError) as err:
        raise HeadscopeError(f"template file {template}: only {{a}}, {{op}} and {{b}} may be placeholders ({err})")
    return path.stem, text


def arithmetic_prompts(model: Model, ops=tuple(OPS), *, digits: int = 1, template: str = "fewshot", n: int = 40,
                       seed: int = 0) -> list[ArithmeticPrompt]:
    """Up to ``n`` seeded questions per operation, in one template (module docstring)."""
    ops = check_ops(ops)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise HeadscopeError(f"n {n!r} must be a positive number of prompts per operation")
    name, text = read_template(template)
    out = []
    for op in ops:
        pairs = operand_pairs(op, digits)
        rng = random.Random(f"{seed}-{op}-{digits}")
        rng.shuffle(pairs)
        shots = pairs[:3] if name == "fewshot" else []
        for a, b in pairs[len(shots):len(shots) + n]:
            out.append(_question(model, op, name, text, shots, a, b))
    return out


def _question(model: Model, op: str, name: str, text: str, shots, a: int, b: int) -> ArithmeticPrompt:
    sym = OPS[op]
    head = "".join(f"{BARE.format(a=x, op=sym, b=y)} {answer_of(op, x, y)}\n" for x, y in shots)
    question, spans = _fill(text, {"a": str(a), "op": sym, "b": str(b)}, len(head))
    answer = str(answer_of(op, a, b))
    full = head + question + " " + answer
    tokens = model.tokenize(full)
    k = tokens.positions_of(len(full) - len(answer), len(full) - len(answer) + 1)[0]
    cut = tokens.spans[k][0]
    prompt = full[:cut]
    if model.tokenize(prompt).ids != tokens.ids[:k]:
        raise HeadscopeError(f"{prompt!r} tokenizes differently alone than before its answer {answer!r}")
    return ArithmeticPrompt(op, name, a, b, answer, prompt, full[cut:], tuple(tokens.ids[k:]), spans)


def _fill(text: str, values: dict[str, str], offset: int) -> tuple[str, dict]:
    """``text`` with its placeholders filled, and each value's character span (shifted by ``offset``)."""
    out, spans, at = [], {}, 0
    for match in re.finditer(r"\{(a|op|b)\}", text):
        out.append(text[at:match.start()])
        start = offset + sum(map(len, out))
        out.append(values[match.group(1)])
        spans[match.group(1)] = (start, start + len(values[match.group(1)]))
        at = match.end()
    out.append(text[at:])
    return "".join(out), spans


def score_prompts(model: Model, prompts: list[ArithmeticPrompt], *, batch_size: int = 32) -> pd.DataFrame:
    """One row per prompt: the question, whether greedy decoding solves it, the first answer token's
    and the whole answer's log-probability (teacher-forced)."""
    longest = max(len(p.answer_ids) for p in prompts)
    new = generate(model, [p.prompt for p in prompts], longest + 1, batch_size=batch_size, stop_at_eos=False)
    first, whole = _answer_logprobs(model, prompts, batch_size)
    rows = []
    for p, ids, lp1, lp in zip(prompts, new, first, whole):
        m = len(p.answer_ids)
        after = model.tokenizer.decode(ids[m:m + 1])
        rows.append({"op": p.op, "template": p.template, "a": p.a, "b": p.b, "answer": p.answer,
                     "prompt": p.prompt, "target": p.target, "n_answer_tokens": m,
                     "output": model.tokenizer.decode(ids),
                     "correct": tuple(ids[:m]) == p.answer_ids and not after[:1].isdigit(),
                     "first_logprob": lp1, "answer_logprob": lp})
    return pd.DataFrame(rows)


def _answer_logprobs(model: Model, prompts: list[ArithmeticPrompt], batch_size: int) -> tuple[list, list]:
    """Teacher-forced log-probabilities of each answer's first token and of all its tokens."""
    first, whole = [], []
    for sl in chunks(len(prompts), batch_size):
        part = prompts[sl]
        toks = [model.tokenize(p.prompt) for p in part]
        full = [Tokens("", t.ids + list(p.answer_ids), [], []) for t, p in zip(toks, part)]
        batch = model.batch(full)
        with torch.no_grad():
            logp = torch.log_softmax(run(model, batch).logits.float(), -1)
        for i, (t, p) in enumerate(zip(toks, part)):
            pos = torch.arange(len(t) - 1, len(t) - 1 + len(p.answer_ids))
            lps = logp[i, pos, torch.tensor(p.answer_ids)].cpu()
            first.append(float(lps[0]))
            whole.append(float(lps.sum()))
    return first, whole


def accuracy_table(scored: pd.DataFrame) -> pd.DataFrame:
    """Accuracy and mean log-probabilities per operation and template."""
    return scored.groupby(["op", "template"], as_index=False, sort=False).agg(
        n=("correct", "size"), accuracy=("correct", "mean"), first_logprob=("first_logprob", "mean"),
        answer_logprob=("answer_logprob", "mean"))


class AccuracyTable(Result):
    """Accuracy per operation and template (``accuracy_table``): what an arithmetic run saves when the
    model solves none of the prompts, so the failure can be read."""

    kind = "arithmetic-accuracy"
    table = "accuracy"

    def plot(self):
        import plotly.express as px

        return px.bar(self.frame, x="op", y="accuracy", color="template", barmode="group",
                      title=f"greedy accuracy per operation, {self.meta.get('model')}", range_y=[0, 1])
