"""``headscope lens``, ``lens-train`` and ``probe``: reading the residual stream."""

from __future__ import annotations

from ...probes.readouts.lens import LENSES
from ...probes.readouts.linear_probe import CONTROLS, TASKS
from .base import Command
from .options import emit, load


def lens_arguments(p) -> None:
    p.add_argument("--prompt", required=True, help="the prompt to read")
    p.add_argument("--target", default=None, help="token to follow (default: the model's top-1 at each position)")
    p.add_argument("--lens", default="logit", choices=LENSES, help="logit, or tuned (a lens trained with lens-train)")
    p.add_argument("--lens-file", default=None, help="tuned lens file (default: this model's lens in the cache)")
    p.add_argument("--top-k", type=int, default=5, help="top tokens kept per layer and position")


def lens(args) -> None:
    from ...probes.readouts.lens import logit_lens, tuned_lens

    model = load(args)
    if args.lens == "tuned":
        result = tuned_lens(model, args.prompt, args.lens_file, target=args.target, top_k=args.top_k)
    else:
        result = logit_lens(model, args.prompt, target=args.target, top_k=args.top_k)
    result.save(args.out, overwrite=args.overwrite)
    last = result.frame[result.frame["position"] == result.frame["position"].max()].sort_values("layer")
    emit(args, {"out": args.out, "target": last["target"].iloc[0], "target_prob_by_layer": last["target_prob"].tolist(),
                "notes": result.meta["notes"]},
         "".join(f"note: {note}\n" for note in result.meta["notes"])
         + f"last position, target {last['target'].iloc[0]!r}: probability by layer "
         + " ".join(f"{p:.2f}" for p in last["target_prob"]) + f" -> {args.out}")


def train_arguments(p) -> None:
    p.add_argument("--tokens", type=int, default=2**14, help="training tokens in all (steps x tokens per step)")
    p.add_argument("--steps", type=int, default=250, help="optimizer steps (the reference's 250)")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per training sequence")
    p.add_argument("--text", default=None, help="training text: .jsonl (field text) or a text file "
                                                "(default: the shipped passages)")
    p.add_argument("--eval-tokens", type=int, default=2**12, help="held-out tokens to compare the lenses on")
    p.add_argument("--out", default=None, help="lens file (default: the cache, where --lens tuned finds it)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier lens file of headscope's at --out")


def train(args) -> None:
    from ...probes.readouts.tuned_lens import check_lens_path, default_path, lens_kl, train_tuned_lens

    if args.out:
        check_lens_path(args.out, args.overwrite)  # before the model loads and trains
    model = load(args)
    lens_ = train_tuned_lens(model, args.text, tokens=args.tokens, steps=args.steps, seq_len=args.seq_len,
                             seed=args.seed)
    path = lens_.save(args.out, args.overwrite) if args.out else lens_.save(default_path(model), overwrite=True)
    kl = lens_kl(model, lens_, tokens=args.eval_tokens, seq_len=args.seq_len).frame.pivot(
        index="layer", columns="lens", values="kl")
    emit(args, {"lens": str(path), "kl": {int(layer): {"logit": row["logit"], "tuned": row["tuned"]}
                                          for layer, row in kl.iterrows()}},
         "held-out KL(final || lens), nats/token, layer: logit -> tuned\n"
         + "  ".join(f"{layer}: {row['logit']:.2f}->{row['tuned']:.2f}" for layer, row in kl.iterrows())
         + f"\ntuned lens -> {path}")


def probe_arguments(p) -> None:
    p.add_argument("--prompts", required=True, help="JSONL records with 'prompt' and the label field")
    p.add_argument("--label", required=True, help="the record field to decode")
    p.add_argument("--position", default="last", help="last, or a token index")
    p.add_argument("--task", default="auto", choices=TASKS, help="classification or regression (auto: by the labels)")
    p.add_argument("--control", default="token", choices=CONTROLS, help="token (Hewitt & Liang) or shuffle")
    p.add_argument("--test-fraction", type=float, default=0.25, help="held-out share of the records")


def probe(args) -> None:
    from ...probes.readouts.linear_probe import linear_probe

    position = int(args.position) if args.position.lstrip("-").isdigit() else args.position
    result = linear_probe(load(args), args.prompts, args.label, position=position, task=args.task,
                          control=args.control, test_fraction=args.test_fraction, seed=args.seed,
                          batch_size=args.batch_size)
    result.save(args.out, overwrite=args.overwrite)
    best = result.frame.loc[result.frame["accuracy"].idxmax()]
    emit(args, {"out": args.out, "task": result.meta["task"], "best_layer": int(best["layer"]),
                **{k: float(best[k]) for k in ("accuracy", "control_accuracy", "selectivity")}},
         f"best layer {int(best['layer'])}: {result.meta['task']} {best['accuracy']:.3f}, control "
         f"{best['control_accuracy']:.3f}, selectivity {best['selectivity']:.3f} -> {args.out}")


COMMANDS = [Command("lens", "logit lens of one prompt: every layer's residual stream read as tokens", lens_arguments,
                    lens),
            Command("lens-train", "train a tuned lens and report its held-out KL against the logit lens",
                    train_arguments, train, writes=False),
            Command("probe", "linear probes for a label at every layer, with a control task", probe_arguments, probe)]
