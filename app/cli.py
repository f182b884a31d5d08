"""The ``headscope`` command line.

Every subcommand shares ``--model --device --dtype --seed --batch-size`` and writes results with
``--out DIR``. A user mistake (``HeadscopeError``) prints one line to stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys


def _common(parser: argparse.ArgumentParser, several_models: bool = False) -> None:
    spec = "alias, random:<arch>, .gguf file, model dir or hub name"
    if several_models:
        parser.add_argument("--model", nargs="+", default=["default"], help=f"one or more model specs ({spec})")
    else:
        parser.add_argument("--model", default="default", help=spec)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    parser.add_argument("--seed", type=int, default=0, help="seed for random weights and stochastic analyses")
    parser.add_argument("--batch-size", type=int, default=None, help="rows per forward (default: fit memory)")


def _out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="new output directory (an existing one is refused, "
                                                     "unless it is a headscope result and --overwrite is given)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the headscope result at --out (only its own files are removed)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headscope", description="A mechanistic-interpretability workbench.")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="print a model's structure as JSON")
    _common(info)

    cap = sub.add_parser("capture", help="capture activations of a prompt file to a directory")
    _common(cap)
    cap.add_argument("--prompts", required=True, help="text file (one prompt per line) or JSONL with 'prompt'")
    cap.add_argument("--hooks", required=True, help="hook names or glob patterns, comma-separated")
    cap.add_argument("--layers", default=None, help="comma-separated layers to keep (default: all matched)")
    cap.add_argument("--heads", default=None, help="comma-separated heads for per-head hooks (default: all)")
    cap.add_argument("--positions", default="last", help="last, all, or START:END token span")
    cap.add_argument("--shard-rows", type=int, default=4096, help="rows per safetensors shard")
    _out(cap)

    tr = sub.add_parser("trace", help="causal tracing (ROME) of one prompt, or averaged over a fact file")
    _common(tr)
    tr.add_argument("--prompt", help="the prompt to trace")
    tr.add_argument("--subject", help="the subject to corrupt, as it appears in the prompt")
    tr.add_argument("--target", default=None, help="target token (default: the model's top prediction)")
    tr.add_argument("--facts", default=None, help="JSONL facts (subject, prompt or template, target) to average over")
    tr.add_argument("--max-facts", type=int, default=None, help="trace a seeded sample of this many known facts")
    tr.add_argument("--kinds", default="resid,mlp,attn", help="comma-separated: resid, mlp, attn")
    tr.add_argument("--samples", type=int, default=10, help="noised copies of the prompt")
    tr.add_argument("--noise", default="3sd", help="noise scale: a multiple of the embedding std (3sd) or a number")
    tr.add_argument("--window", type=int, default=None, help="layers restored around each layer (default n_layers/5)")
    _out(tr)

    pa = sub.add_parser("patch", help="activation (or attribution) patching of a clean into a corrupted prompt")
    _common(pa)
    pa.add_argument("--clean", required=True)
    pa.add_argument("--corrupted", required=True)
    pa.add_argument("--target", required=True)
    pa.add_argument("--foil", default=None, help="with a foil the metric is the logit difference target - foil")
    pa.add_argument("--kinds", default="resid,attn,mlp,heads", help="comma-separated: resid, attn, mlp, heads, heads_by_pos")
    pa.add_argument("--method", default="activation", help="activation (exact) or attribution (gradient estimate)")
    _out(pa)
    hd = sub.add_parser("heads", help="head ablation, importance and detectors for prompt sets: a batch report")
    _common(hd, several_models=True)
    hd.add_argument("--prompts", nargs="+", required=True, help="JSONL prompt sets (prompt, target, foil, corrupted)")
    hd.add_argument("--ablation", default="zero", help="zero, mean or resample")
    hd.add_argument("--metric", default="logprob", help="logprob, prob, logit_diff, kl or loss")
    hd.add_argument("--positions", default="all", help="all or last")
    hd.add_argument("--gradient", action="store_true", help="add gradient importance (Michel et al.)")
    hd.add_argument("--pruning-curve", action="store_true", help="add the pruning curve with random controls")
    hd.add_argument("--chunk-size", type=int, default=16, help="prompts per resumable chunk")
    _out(hd)
    le = sub.add_parser("lens", help="logit lens of one prompt: every layer's residual stream read as tokens")
    _common(le)
    le.add_argument("--prompt", required=True)
    le.add_argument("--target", default=None, help="token to follow (default: the model's top-1 at each position)")
    le.add_argument("--lens", default="logit", help="logit, or tuned (a lens trained with lens-train)")
    le.add_argument("--lens-file", default=None, help="tuned lens file (default: this model's lens in the cache)")
    le.add_argument("--top-k", type=int, default=5)
    _out(le)
    lt = sub.add_parser("lens-train", help="train a tuned lens and report its held-out KL against the logit lens")
    _common(lt)
    lt.add_argument("--tokens", type=int, default=2**14, help="training tokens in all (steps x tokens per step)")
    lt.add_argument("--steps", type=int, default=250, help="optimizer steps (the reference's 250)")
    lt.add_argument("--seq-len", type=int, default=256, help="tokens per training sequence")
    lt.add_argument("--text", default=None, help="training text: .jsonl (field text) or a text file "
                                                   "(default: the shipped passages)")
    lt.add_argument("--eval-tokens", type=int, default=2**12, help="held-out tokens to compare the lenses on")
    lt.add_argument("--out", default=None, help="lens file (default: the cache, where --lens tuned finds it)")
    lt.add_argument("--overwrite", action="store_true", help="replace an earlier lens file of headscope's at --out")
    rt = sub.add_parser("retrieval", help="retrieval-head scores from needle-in-a-haystack tests")
    _common(rt)
    _needle_tests(rt)
    rt.add_argument("--mode", default="greedy", help="greedy (the reference's score) or teacher-forced")
    rt.add_argument("--threshold", type=float, default=0.1, help="score above which a head is a retrieval head")
    _out(rt)
    rm = sub.add_parser("retrieval-mask", help="mask the top-k retrieval heads vs k random other heads")
    _common(rm)
    _needle_tests(rm, lengths="512,1024", depths="0.1,0.5,0.9")
    rm.add_argument("--heads", required=True, help="retrieval_heads.json ({\"layer-head\": [scores]}) or its run dir")
    rm.add_argument("--k", default="1,5,10,20", help="comma-separated numbers of heads to mask")
    rm.add_argument("--modes", default="uniform,zero", help="uniform (query zeroed, the reference's) and/or zero")
    rm.add_argument("--seeds", type=int, default=3, help="random head sets per k")
    rm.add_argument("--threshold", type=float, default=0.1, help="heads above it are not drawn as random heads")
    _out(rm)
    ar = sub.add_parser("arithmetic", help="arithmetic heads per operation, with layer and neuron analysis")
    _common(ar)
    ar.add_argument("--ops", default="add,sub,mul,div", help="comma-separated operations: add, sub, mul, div")
    ar.add_argument("--digits", type=int, default=1, help="digits of the operands (1 to 3)")
    ar.add_argument("--template", default="fewshot", help="fewshot, bare, or a template file with {a} {op} {b}")
    ar.add_argument("--n", type=int, default=40, help="prompts per operation before filtering to solved ones")
    ar.add_argument("--modes", default="zero,mean", help="ablation modes: zero and/or mean")
    ar.add_argument("--k", default="1,2,4,8", help="numbers of top heads masked in the control")
    ar.add_argument("--control-seeds", type=int, default=3, help="random head sets per k")
    ar.add_argument("--neuron-prompts", type=int, default=8, help="solved prompts per operation for the neuron "
                                                                  "analysis (0: none)")
    ar.add_argument("--neuron-layers", default=None, help="comma-separated layers whose neurons are scored "
                                                          "(default: all)")
    ar.add_argument("--cna-heads", default="1", help="a number k (each operation's top k heads) or heads "
                                                     "'layer-head,...' ablated for comparative neuron analysis")
    _out(ar)
    sv = sub.add_parser("svd", help="composition scores between heads, low-rank channels and the head graph")
    _common(sv)
    sv.add_argument("--kinds", default="q,k,v", help="comma-separated composition kinds: q, k, v")
    sv.add_argument("--top", type=int, default=50, help="pairs per kind (by z-score) whose channels are listed")
    sv.add_argument("--components", type=int, default=4, help="components listed per pair")
    sv.add_argument("--no-fold-norm", action="store_true", help="use the raw weights (TransformerLens's scores)")
    sv.add_argument("--min-z", type=float, default=5.0, help="graph edges: pairs at least this many sd above chance")
    sv.add_argument("--importance", default=None, help="a run dir (heads.parquet) whose head scores size the nodes")
    _out(sv)
    la = sub.add_parser("laundry", help="list recall by list length, optionally scaling a writer head's subspace")
    _common(la)
    la.add_argument("--lengths", default="2,3,4,5,6,8", help="comma-separated list lengths")
    la.add_argument("--n", type=int, default=40, help="prompts per length")
    la.add_argument("--position", default="random", help="the answer's index in the list, or random")
    la.add_argument("--writer", default=None, help="layer-head whose components are scaled, e.g. 14-3")
    la.add_argument("--components", default=None, help="comma-separated component indices of the writer")
    la.add_argument("--scales", default="1,0", help="comma-separated scales of the subspace (1 = unchanged)")
    _out(la)
    ap = sub.add_parser("app", help="start the dashboard (binds to 127.0.0.1 unless --host says otherwise)")
    ap.add_argument("--model", default="default", help="model to load at start (the page can load others)")
    ap.add_argument("--runs", default="runs", help="directory of saved results to browse")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8050)
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    ap.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    pr = sub.add_parser("probe", help="linear probes for a label at every layer, with a control task")
    _common(pr)
    pr.add_argument("--prompts", required=True, help="JSONL records with 'prompt' and the label field")
    pr.add_argument("--label", required=True, help="the record field to decode")
    pr.add_argument("--position", default="last", help="last, or a token index")
    pr.add_argument("--task", default="auto", help="auto, classify or regress")
    pr.add_argument("--control", default="token", help="token (Hewitt & Liang) or shuffle")
    pr.add_argument("--test-fraction", type=float, default=0.25)
    _out(pr)
    return parser


def _needle_tests(parser: argparse.ArgumentParser, lengths: str = "256,512,1024,2048",
                  depths: str = "0,0.25,0.5,0.75,1") -> None:
    parser.add_argument("--lengths", default=lengths, help="comma-separated prompt lengths in tokens")
    parser.add_argument("--depths", default=depths, help="comma-separated needle depths in [0, 1]")
    parser.add_argument("--needles", default=None, help="JSONL needles (needle, question, real_needle); "
                                                         "default: the shipped ones")
    parser.add_argument("--needles-per-cell", type=int, default=1, help="needles tested at each length and depth")
    parser.add_argument("--template", default="auto", help="chat (the model's chat template), plain, or auto "
                                                            "(chat when the model has one)")
    parser.add_argument("--max-new-tokens", type=int, default=50)


def _grid(args, model):
    from headscope.circuits.haystack import needle_grid, read_needles
    from headscope.probes import HeadscopeError

    if args.template not in ("auto", "chat", "plain"):
        raise HeadscopeError(f"--template {args.template!r} must be auto, chat or plain")
    chat = None if args.template == "auto" else args.template == "chat"
    return needle_grid(model, _int_list(args.lengths, "lengths"), _float_list(args.depths, "depths"),
                       read_needles(args.needles), seed=args.seed, chat=chat, needles_per_cell=args.needles_per_cell)


def _float_list(text: str, what: str) -> list[float]:
    from headscope.probes import HeadscopeError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise HeadscopeError(f"--{what} {text!r} must be comma-separated numbers") from None


def _kinds(text: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in text.split(",") if k.strip())


def _noise(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _int_list(text: str | None, what: str) -> list[int] | None:
    from headscope.probes import HeadscopeError

    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise HeadscopeError(f"--{what} {text!r} must be comma-separated integers") from None


def _positions(text: str):
    from headscope.probes import HeadscopeError

    if text in ("last", "all"):
        return text
    try:
        start, end = (int(x) for x in text.split(":"))
    except ValueError:
        raise HeadscopeError(f"--positions {text!r} must be last, all or START:END") from None
    return (start, end)


def _load(args):
    from headscope.probes import load_model

    return load_model(args.model, device=args.device, dtype=args.dtype, seed=args.seed)


def cmd_info(args) -> None:
    print(json.dumps(_load(args).info(), indent=2))


def cmd_capture(args) -> None:
    from headscope.probes import capture, read_prompts

    prompts = read_prompts(args.prompts)
    model = _load(args)
    result = capture(model, prompts, args.hooks, layers=_int_list(args.layers, "layers"),
                     heads=_int_list(args.heads, "heads"), positions=_positions(args.positions),
                     batch_size=args.batch_size, out=args.out, shard_rows=args.shard_rows,
                     overwrite=args.overwrite)
    print(f"captured {len(result.frame)} rows of {len(result.meta['hooks'])} hooks to {args.out}")


def cmd_trace(args) -> None:
    from headscope.probes import HeadscopeError

    if args.facts:
        from headscope.circuits.fact_effects import average_indirect_effects, read_facts

        facts = read_facts(args.facts)
        result = average_indirect_effects(_load(args), facts, kinds=_kinds(args.kinds), samples=args.samples,
                                          noise=_noise(args.noise), window=args.window, max_facts=args.max_facts,
                                          seed=args.seed, batch_size=args.batch_size)
        result.save(args.out, overwrite=args.overwrite)
        print(f"averaged over {result.meta['n_facts']} known facts ({result.meta['n_dropped']} of "
              f"{result.meta['n_facts_given']} dropped as unknown) -> {args.out}")
        return
    if not args.prompt or args.subject is None:
        raise HeadscopeError("trace needs --prompt and --subject (or --facts FILE.jsonl)")
    from headscope.circuits.tracing import trace

    result = trace(_load(args), args.prompt, args.subject, args.target, kinds=_kinds(args.kinds), samples=args.samples,
                   noise=_noise(args.noise), window=args.window, seed=args.seed, batch_size=args.batch_size)
    result.save(args.out, overwrite=args.overwrite)
    meta = result.meta
    for note in meta["notes"]:
        print(f"note: {note}")
    print(f"target {meta['target']!r}: clean {meta['high_score']:.4f}, corrupted {meta['low_score']:.4f} -> {args.out}")


def cmd_patch(args) -> None:
    from headscope.circuits.patching import activation_patching, attribution_patching
    from headscope.probes import HeadscopeError

    if args.method not in ("activation", "attribution"):
        raise HeadscopeError(f"--method {args.method!r} must be activation or attribution")
    model = _load(args)
    if args.method == "activation":
        result = activation_patching(model, args.clean, args.corrupted, args.target, args.foil, kinds=_kinds(args.kinds),
                                     batch_size=args.batch_size)
    else:
        result = attribution_patching(model, args.clean, args.corrupted, args.target, args.foil, kinds=_kinds(args.kinds))
    result.save(args.out, overwrite=args.overwrite)
    print(f"{args.method} patching, {result.meta['metric']}: clean {result.meta['clean_metric']:.4f}, "
          f"corrupted {result.meta['corrupted_metric']:.4f} -> {args.out}")


def cmd_heads(args) -> None:
    from headscope.circuits.head_report import head_report

    out = head_report(args.model, args.prompts, args.out, mode=args.ablation, metric=args.metric,
                      positions=args.positions, gradient=args.gradient, pruning=args.pruning_curve, seed=args.seed,
                      device=args.device, dtype=args.dtype, batch_size=args.batch_size, chunk_size=args.chunk_size,
                      overwrite=args.overwrite)
    print(f"head report -> {out}/report.html")


def cmd_lens(args) -> None:
    from headscope.probes import HeadscopeError
    from headscope.probes.lens import logit_lens, tuned_lens

    if args.lens not in ("logit", "tuned"):
        raise HeadscopeError(f"--lens {args.lens!r} must be logit or tuned")
    model = _load(args)
    if args.lens == "tuned":
        result = tuned_lens(model, args.prompt, args.lens_file, target=args.target, top_k=args.top_k)
    else:
        result = logit_lens(model, args.prompt, target=args.target, top_k=args.top_k)
    result.save(args.out, overwrite=args.overwrite)
    for note in result.meta["notes"]:
        print(f"note: {note}")
    last = result.frame[result.frame["position"] == result.frame["position"].max()].sort_values("layer")
    print(f"last position, target {last['target'].iloc[0]!r}: probability by layer "
          + " ".join(f"{p:.2f}" for p in last["target_prob"]) + f" -> {args.out}")


def cmd_lens_train(args) -> None:
    from headscope.probes.tuned_lens import check_lens_path, default_path, lens_kl, train_tuned_lens

    if args.out:
        check_lens_path(args.out, args.overwrite)  # before the model loads and trains
    model = _load(args)
    lens = train_tuned_lens(model, args.text, tokens=args.tokens, steps=args.steps, seq_len=args.seq_len, seed=args.seed)
    path = lens.save(args.out, args.overwrite) if args.out else lens.save(default_path(model), overwrite=True)
    kl = lens_kl(model, lens, tokens=args.eval_tokens, seq_len=args.seq_len).frame.pivot(
        index="layer", columns="lens", values="kl")
    print("held-out KL(final || lens), nats/token, layer: logit -> tuned")
    print("  ".join(f"{layer}: {row['logit']:.2f}->{row['tuned']:.2f}" for layer, row in kl.iterrows()))
    print(f"tuned lens -> {path}")


def cmd_probe(args) -> None:
    from headscope.probes.linear_probe import linear_probe

    position = int(args.position) if args.position.lstrip("-").isdigit() else args.position
    result = linear_probe(_load(args), args.prompts, args.label, position=position, task=args.task,
                          control=args.control, test_fraction=args.test_fraction, seed=args.seed,
                          batch_size=args.batch_size)
    result.save(args.out, overwrite=args.overwrite)
    best = result.frame.loc[result.frame["accuracy"].idxmax()]
    print(f"best layer {int(best['layer'])}: {result.meta['task']} {best['accuracy']:.3f}, control "
          f"{best['control_accuracy']:.3f}, selectivity {best['selectivity']:.3f} -> {args.out}")


def cmd_retrieval(args) -> None:
    from headscope.circuits.haystack import read_needles
    from headscope.circuits.retrieval import MODES, retrieval_heads
    from headscope.probes import HeadscopeError

    if args.mode not in MODES:
        raise HeadscopeError(f"unknown mode {args.mode!r}; use {' or '.join(MODES)}")
    read_needles(args.needles)  # a malformed needle file stops here, before the model loads
    model = _load(args)
    result = retrieval_heads(model, _grid(args, model), mode=args.mode, max_new_tokens=args.max_new_tokens,
                             threshold=args.threshold)
    result.save(args.out, overwrite=args.overwrite)
    heads = result.heads()
    top = ", ".join(f"L{l}H{h} {s:.2f}" for l, h, s in heads[["layer", "head", "score"]].head(5).itertuples(index=False))
    print(f"{result.meta['n_kept']} of {result.meta['n_tests']} tests counted; "
          f"{(heads['score'] > args.threshold).mean():.1%} of heads above {args.threshold}; top: {top} -> {args.out}")


def cmd_retrieval_mask(args) -> None:
    from headscope.circuits.haystack import read_needles
    from headscope.circuits.retrieval_masking import masking_test, read_head_scores

    scores = read_head_scores(args.heads)
    read_needles(args.needles)
    model = _load(args)
    result = masking_test(model, _grid(args, model), scores, _int_list(args.k, "k"), modes=_kinds(args.modes),
                          seeds=args.seeds, threshold=args.threshold, max_new_tokens=args.max_new_tokens,
                          seed=args.seed)
    result.save(args.out, overwrite=args.overwrite)
    f = result.frame
    print(f"no heads masked: {f[f['kind'] == 'none']['accuracy'].iloc[0]:.3f}")
    for (mode, k), part in f[f["kind"] != "none"].groupby(["mode", "k"]):
        top = part[part["kind"] == "top"]["accuracy"].iloc[0]
        print(f"{mode} k={k}: top {top:.3f}, random {part[part['kind'] == 'random']['accuracy'].mean():.3f}")
    print(f"-> {args.out}")


def cmd_arithmetic(args) -> None:
    from headscope.circuits.arithmetic import Unsolved, arithmetic_heads
    from headscope.circuits.arithmetic_prompts import check_ops, operand_pairs, read_template
    from headscope.probes import HeadscopeError
    from headscope.probes.result import Result

    ops = check_ops(_kinds(args.ops))  # bad options stop here, before the model loads
    operand_pairs(ops[0], args.digits), read_template(args.template)
    cna = _heads_option(args.cna_heads)
    model = _load(args)
    try:
        result = arithmetic_heads(model, ops, digits=args.digits, template=args.template, n=args.n, seed=args.seed,
                                  modes=_kinds(args.modes), ks=tuple(_int_list(args.k, "k")), seeds=args.control_seeds,
                                  neuron_prompts=args.neuron_prompts, neuron_layers=_int_list(args.neuron_layers, "neuron-layers"),
                                  cna_heads=cna, batch_size=args.batch_size)
    except Unsolved as err:
        Result(err.accuracy, {"model": model.spec, "unsolved": str(err)}).save(args.out, overwrite=args.overwrite)
        raise HeadscopeError(f"{err} (accuracy table -> {args.out}/result.parquet)") from None
    result.save(args.out, overwrite=args.overwrite)
    acc = result.accuracy[result.accuracy["template"] == result.meta["template"]]
    print("accuracy: " + ", ".join(f"{r.op} {r.accuracy:.2f}" for r in acc.itertuples()))
    zero = result.frame[result.frame["mode"] == result.meta["modes"][0]]
    for op, part in zero.groupby("op", sort=False):
        top = part.nlargest(3, "effect")
        print(f"{op}: top heads " + ", ".join(f"L{r.layer}H{r.head} {r.effect:.2f}" for r in top.itertuples()))
    print(f"-> {args.out}")


def _heads_option(text: str, option: str = "--cna-heads"):
    """A number, or comma-separated ``layer-head`` pairs."""
    from headscope.probes import HeadscopeError

    if text.strip().isdigit():
        return int(text)
    try:
        heads = [tuple(int(x) for x in part.split("-")) for part in text.split(",") if part.strip()]
        if not heads or any(len(h) != 2 for h in heads):
            raise ValueError
        return heads
    except ValueError:
        raise HeadscopeError(f"{option} {text!r} must be a number or heads like 14-3,15-0") from None


def cmd_svd(args) -> None:
    from headscope.circuits.circuit_graph import circuit_graph
    from headscope.circuits.composition import check_kinds, composition
    from headscope.probes.outputs import output_dir

    kinds = check_kinds(_kinds(args.kinds))
    importance = _importance(args.importance)
    result = composition(_load(args), kinds, top=args.top, components=args.components,
                         fold_norm=not args.no_fold_norm, seed=args.seed)
    graph = circuit_graph(result, importance, min_z=args.min_z)
    with output_dir(args.out, args.overwrite) as tmp:
        result.save(tmp / "composition")
        graph.save(tmp / "graph")
        for name in ("composition.parquet", "channels.parquet", "meta.json"):
            (tmp / "composition" / name).rename(tmp / name)
        (tmp / "composition").rmdir()
        (tmp / "graph" / "graph.json").rename(tmp / "graph.json")
        (tmp / "report.html").write_text(result.report(), encoding="utf-8")
    for kind in kinds:
        best = result.pairs(kind, 3)
        print(f"{kind}: " + ", ".join(f"L{r.writer_layer}H{r.writer_head}->L{r.reader_layer}H{r.reader_head} "
                                      f"{r.score:.3f} (z {r.z:.1f}, top component {r.top1_share:.0%})"
                                      for r in best.itertuples()))
    print(f"graph: {len(graph.nodes)} heads, {len(graph.frame)} edges -> {args.out}")


def _importance(path):
    from pathlib import Path

    import pandas as pd

    from headscope.probes import HeadscopeError

    if path is None:
        return None
    file = Path(path) / "heads.parquet" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise HeadscopeError(f"no head scores at {path} (a run dir with heads.parquet, or a Parquet file)")
    return pd.read_parquet(file)


def cmd_laundry(args) -> None:
    from headscope.circuits.laundry import laundry_task
    from headscope.probes import HeadscopeError

    heads = _heads_option(args.writer, "--writer") if args.writer else None
    if isinstance(heads, int) or (heads and len(heads) != 1):
        raise HeadscopeError(f"--writer {args.writer!r} must be one head like 14-3")
    writer = heads[0] if heads else None
    components = _int_list(args.components, "components") or []
    scales = _float_list(args.scales, "scales") if writer else [1.0]
    if args.position != "random" and not args.position.isdigit():
        raise HeadscopeError(f"--position {args.position!r} must be 'random' or an index in the list")
    position = args.position if args.position == "random" else int(args.position)
    result = laundry_task(_load(args), _int_list(args.lengths, "lengths"), n=args.n, position=position,
                          seed=args.seed, writer=writer, components=components, scales=scales,
                          batch_size=args.batch_size)
    result.save(args.out, overwrite=args.overwrite)
    acc = result.accuracy()
    for scale, part in acc.groupby("scale"):
        print(f"scale {scale:g}: accuracy among items by length " + ", ".join(
            f"{r.length}: {r.among_items:.2f}" for r in part.itertuples()))
    print(f"-> {args.out}")


def cmd_app(args) -> None:
    from headscope.app.dashboard import serve
    from headscope.probes.loading import resolve_device, resolve_dtype

    resolve_device(args.device), resolve_dtype(args.dtype)  # a bad value stops here, before the server starts
    serve(args.model, args.runs, host=args.host, port=args.port, device=args.device, dtype=args.dtype)


COMMANDS = {"info": cmd_info, "capture": cmd_capture, "trace": cmd_trace, "patch": cmd_patch, "heads": cmd_heads,
            "lens": cmd_lens, "lens-train": cmd_lens_train, "probe": cmd_probe, "app": cmd_app,
            "retrieval": cmd_retrieval, "retrieval-mask": cmd_retrieval_mask, "arithmetic": cmd_arithmetic,
            "svd": cmd_svd, "laundry": cmd_laundry}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from headscope.probes import HeadscopeError

    try:
        if getattr(args, "out", None) and args.command != "lens-train":
            from headscope.probes.outputs import check_output_dir

            check_output_dir(args.out, args.overwrite)  # before any model loads or work starts
        COMMANDS[args.command](args)
    except HeadscopeError as err:
        print(f"headscope: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("headscope: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
