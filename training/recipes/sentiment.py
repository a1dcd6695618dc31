"""The sentiment recipe: a char + hashed n-gram CNN classifier (negative/positive), optionally pretrained by
masked-character prediction, ensembled in one ONNX graph with a hashed char 1–3-gram TF-IDF linear model.

:func:`train_sentiment` trains the CNN with the epoch loop of :mod:`training.loop` (best epoch on the
review dev only: the unseen domains stay unseen), fits the linear branch and the ensemble weight on a
validation slice of the training rows, and ships the ensemble.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn

from deployments.runtime.model_dir import Manifest, OnnxSpec, TokenizerSpec
from deployments.runtime.tokenizer import BertChineseTokenizer
from training import data as D
from training import loop
from training.config import SentimentRecipe, Settings
from training.layers import SplitOptimizer, count_parameters, mark_sparse
from training.mlm import MaskedCharLM, TokenMasker
from training.onnx_io import export_onnx, quantize_int8, run_texts, session
from training.recipes.batches import sentiment_batch
from training.recipes.common import (
    RecipeRun,
    describe_embedding_and_encoder,
    init_char_embedding,
    trained_provenance,
    truncate_to_tokens,
)
from training.report import (
    Evaluation,
    LinearBranch,
    Pretraining,
    SentimentEvaluation,
    SentimentReport,
    history_rows,
)
from training.sentiment_model import SentimentConfig, SentimentNet
from training.ship import ShipSpec, ship
from training.vocab import write_vocab

log = logging.getLogger("zhserve.train")

MAX_SEQ_LENGTH = 512
WARMUP_STEPS = 200
PRETRAIN_WARMUP_STEPS = 500
SELECTION_SPLIT = "review_chnsenticorp"  # the only dev split that picks the epoch
COMMAND = "zhserve-train sentiment"


def describe_architecture(config: SentimentConfig) -> str:
    """The manifest's and the card's one-line architecture (of the CNN; the ensemble adds its part)."""
    ngrams, encoder = describe_embedding_and_encoder(config)
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


def sentiment_ensemble(
    recipe: SentimentRecipe,
    threads: int,
    net: SentimentNet,
    tokenizer: BertChineseTokenizer,
    train_rows: Sequence[dict],
    validation_rows: Sequence[dict],
    dev: dict[str, list[dict]],
    run_dir: Path,
) -> tuple[nn.Module, LinearBranch]:
    """Train the linear branch (C on the validation rows), pick the ensemble mode/weight on the same rows,
    score each branch alone on the dev splits; returns the one-graph ensemble and a report."""
    from training import ngram_linear as L

    started = time.time()
    max_tokens = MAX_SEQ_LENGTH - 2
    label_index = {label: i for i, label in enumerate(D.SENTIMENT_LABELS)}

    def encode(rows: Sequence[dict]) -> tuple[list[list[int]], list[int]]:
        ids = [ids[:max_tokens] for ids, _ in tokenizer.tokenize([r["text"] for r in rows])]
        return ids, [label_index[r["label"]] for r in rows]

    train_ids, train_labels = encode(train_rows)
    val_ids, val_labels = encode(validation_rows)
    config = L.LinearConfig(vocab_size=tokenizer.vocab_size, **recipe.linear_features)
    model, c_trials = L.train_linear(
        config, train_ids, train_labels, val_ids, val_labels, cs=recipe.linear_c, log=log.info
    )
    np.savez(run_dir / "sentiment_linear.npz", idf=model.idf, weight=model.weight, bias=model.bias, c=model.c)
    linear_seconds = time.time() - started

    cnn_fp32, cnn_int8 = run_dir / "sentiment_cnn_fp32.onnx", run_dir / "sentiment_cnn_int8.onnx"
    export_onnx(net, cnn_fp32, output_name="logits")
    quantize_int8(cnn_fp32, cnn_int8)
    cnn_sessions = {"cnn_fp32": session(cnn_fp32, threads=threads), "cnn_int8": session(cnn_int8, threads=threads)}

    def cnn_margin(sess, rows: Sequence[dict]) -> np.ndarray:
        texts = [truncate_to_tokens(tokenizer, r["text"], max_tokens) for r in rows]
        logits = np.stack(run_texts(sess, tokenizer, texts, max_length=MAX_SEQ_LENGTH))
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
    # For offline analysis of the ensemble (the ignore: numpy's stub lets ** reach ``allow_pickle: bool``).
    np.savez(run_dir / "sentiment_margins.npz", **margins)  # type: ignore[arg-type]
    mode_text = (
        f"softmax = {best['alpha']:.2f}·p_cnn + {1 - best['alpha']:.2f}·p_linear"
        if best["mode"] == "prob"
        else f"logit = {best['alpha']:.2f}·CNN margin + {1 - best['alpha']:.2f}·linear logit"
    )
    report = LinearBranch(
        config=config.to_dict(),
        C=model.c,
        C_trials=c_trials,
        live_buckets=int((model.idf > 0).sum()),
        ensemble=best,
        ensemble_trials=[t for t in trials if t["alpha"] in (0.0, 0.25, 0.5, 0.75, 1.0) or t == best],
        validation=validation,
        branches=branches,
        seconds=round(linear_seconds, 1),
        architecture=f"; ensembled in the same graph with a {L.describe(config)} (C {model.c:g}): {mode_text}",
    )
    ensemble = L.SentimentEnsemble(net, L.HashedNgramLinear(model), mode=best["mode"], alpha=best["alpha"])
    return ensemble.eval(), report


class _PretrainCallbacks:
    """Masked-character prediction: the loss and the masked tokens' accuracy of one batch."""

    def __init__(self, model: MaskedCharLM, rows: list[list[int]], tokenizer, masker, generator) -> None:
        self.model, self.rows, self.tokenizer = model, rows, tokenizer
        self.masker, self.generator = masker, generator

    def loss(self, indices: list[int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ids, mask = (torch.from_numpy(a) for a in D.pad_batch([self.rows[i] for i in indices], self.tokenizer))
        corrupted, chosen = self.masker(ids, mask, self.generator)
        loss, accuracy = self.model.loss(corrupted, mask, ids, chosen)
        return loss, {"masked_accuracy": accuracy}

    def evaluate(self) -> dict[str, float]:
        return {}

    def select(self, scores: dict[str, float]) -> float:
        return 0.0

    def on_best(self, epoch: int, history: list[dict]) -> None:
        pass


def pretrain_sentiment_encoder(
    recipe: SentimentRecipe,
    settings: Settings,
    net: SentimentNet,
    tokenizer: BertChineseTokenizer,
    texts: Sequence[str],
    run_dir: Path,
) -> Pretraining:
    """Masked-character pretraining of ``net.encoder`` on unlabelled ``texts`` (:mod:`training.mlm`), in place;
    the encoder is saved as ``run_dir/sentiment_pretrained.pt``."""
    started = time.time()
    rows = [ids[: recipe.train_tokens] for ids, _ in tokenizer.tokenize(list(texts)) if ids]
    lengths = [len(r) for r in rows]
    model = MaskedCharLM(net.encoder, net.config.hidden, net.config.vocab_size)
    mark_sparse(model)
    optimizer = SplitOptimizer([(list(model.parameters()), recipe.pretrain_lr)])
    batch_rng = random.Random(settings.seed + 1)
    generator = torch.Generator().manual_seed(settings.seed + 1)
    masker = TokenMasker(
        mask_id=tokenizer.vocab["[MASK]"],
        special_ids={tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.unk_id},
        vocab_size=net.config.vocab_size,
    )
    spec = loop.epoch_spec(
        name="sentiment pretraining",
        network=model,
        optimizer=optimizer,
        parameters=list(model.parameters()),
        lengths=lengths,
        batch_tokens=settings.batch_tokens,
        epochs=recipe.pretrain_epochs,
        warmup=PRETRAIN_WARMUP_STEPS,
        batch_rng=batch_rng,
        progress_interval=settings.progress_interval,
        started=started,
        loss_name="loss",
    )
    result = loop.train(spec, _PretrainCallbacks(model, rows, tokenizer, masker, generator), evaluate=False)
    report = Pretraining(
        texts=len(rows),
        tokens=sum(lengths),
        epochs=recipe.pretrain_epochs,
        history=result.history,
        seconds=round(time.time() - started, 1),
    )
    torch.save(
        {"encoder": net.encoder.state_dict(), "config": net.config.to_dict(), "report": report.model_dump()},
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


def pretraining_texts(recipe: SentimentRecipe, settings: Settings, train_rows: Sequence[dict]) -> list[str]:
    """The unlabelled text for pretraining: the sentiment training rows (never a dev or validation row),
    plus the NER training sentences with ``--sentiment-pretrain-text all``."""
    texts = [r["text"] for r in train_rows]
    if recipe.pretrain_text == "all":
        texts += [r["text"] for r in D.load_ner_corpora(settings.data, seed=settings.dev_seed).train]
    return texts


class _SentimentCallbacks:
    """The loop's callbacks for the CNN: cross-entropy (label smoothing 0.05), dev accuracy, review accuracy."""

    def __init__(
        self,
        net: SentimentNet,
        config: SentimentConfig,
        examples: list[D.Example],
        dev_examples: dict[str, list[D.Example]],
        tokenizer: BertChineseTokenizer,
        average: int,
        checkpoint: Path,
        started: float,
    ) -> None:
        self.net, self.config, self.examples, self.dev_examples = net, config, examples, dev_examples
        self.tokenizer, self.average, self.checkpoint, self.started = tokenizer, average, checkpoint, started
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
        self.state: dict[str, torch.Tensor] = {}
        self.epoch_states: list[dict[str, torch.Tensor]] = []  # the last ``average`` epochs' weights
        self.best_state: dict[str, torch.Tensor] | None = None

    def loss(self, indices: list[int]) -> torch.Tensor:
        ids, mask, targets = sentiment_batch(self.examples, indices, self.tokenizer)
        return self.net.training_losses(ids, mask, targets, self.loss_fn)

    def evaluate(self) -> dict[str, float]:
        net, tokenizer = self.net, self.tokenizer
        accuracy = {name: sentiment_torch_dev_accuracy(net, ex, tokenizer) for name, ex in self.dev_examples.items()}
        if net.fasttext is not None:
            review = self.dev_examples[SELECTION_SPLIT]
            branches = {f"branch {b}": sentiment_torch_dev_accuracy(net, review, tokenizer, b) for b in (0, 1)}
            log.info("sentiment: review dev accuracy, CNN (0) / fastText (1) alone: %s", branches)
        self.state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        if self.average > 1:
            self.epoch_states = [*self.epoch_states, self.state][-self.average :]
        return accuracy

    def select(self, scores: dict[str, float]) -> float:
        # Select on the in-domain review dev only: the unseen domains must stay unseen.
        return scores[SELECTION_SPLIT]

    def on_best(self, epoch: int, history: list[dict]) -> None:
        self.best_state = self.state
        torch.save(
            {
                "net": self.best_state,
                "config": self.config.to_dict(),
                "history": history,
                "seconds": time.time() - self.started,
            },
            self.checkpoint,
        )


@dataclass(frozen=True)
class SentimentData:
    """The prepared corpora: training rows (the validation slice taken out), their examples, the dev splits."""

    tokenizer: BertChineseTokenizer
    corpora: D.SentimentCorpora
    train_rows: list[dict]
    validation_rows: list[dict]  # held out of both branches: picks the linear C and the ensemble weight
    train_examples: list[D.Example]
    dev_examples: dict[str, list[D.Example]]


@dataclass
class CnnFit:
    net: SentimentNet
    config: SentimentConfig
    history: list[dict]
    embedding_init: str
    pretraining: Pretraining | None
    resumed_seconds: float | None  # with --sentiment-resume: the earlier run's training time


def _prepare(run: RecipeRun, recipe: SentimentRecipe, out: Path) -> SentimentData:
    settings = run.settings
    write_vocab(run.vocab_tokens, out / "vocab.txt")
    tokenizer = BertChineseTokenizer.from_vocab_file(out / "vocab.txt", lowercase=True)
    corpora = D.load_sentiment_corpora(settings.data, seed=settings.dev_seed, hold_out_fruit=recipe.hold_out == "fruit")
    train_rows = corpora.train
    if settings.subset < 1.0:
        train_rows = train_rows[: round(len(train_rows) * settings.subset)]
    # A validation slice of the training rows (the last N after the seeded shuffle) is held out of both
    # the CNN and the linear branch; it picks the linear branch's C and the ensemble weight.
    validation_rows: list[dict] = []
    if recipe.linear == "on":
        if not recipe.validation_rows < len(train_rows):
            raise ValueError(
                f"--sentiment-validation-rows is {recipe.validation_rows}; it must be below the "
                f"{len(train_rows)} training rows"
            )
        validation_rows = train_rows[-recipe.validation_rows :]
        train_rows = train_rows[: -recipe.validation_rows]
    train_examples = D.sentiment_examples(train_rows, tokenizer, max_tokens=recipe.train_tokens)
    dev_examples = {
        name: D.sentiment_examples(rows, tokenizer, max_tokens=MAX_SEQ_LENGTH - 2) for name, rows in corpora.dev.items()
    }
    log.info("sentiment: %d training texts", len(train_examples))
    return SentimentData(tokenizer, corpora, train_rows, validation_rows, train_examples, dev_examples)


def _fit_cnn(run: RecipeRun, recipe: SentimentRecipe, data: SentimentData, started: float) -> CnnFit:
    """The CNN (after optional pretraining, or reused with --sentiment-resume) at its best epoch, in eval mode."""
    settings, tokenizer = run.settings, data.tokenizer
    config = SentimentConfig(vocab_size=len(run.vocab_tokens), **recipe.net)
    net = SentimentNet(config)
    embedding_init = init_char_embedding(net, run.vocab_tokens, settings.init_embeddings)
    mark_sparse(net)
    pretraining = None
    if recipe.pretrained:
        saved = load_sentiment_checkpoint(recipe.pretrained, config)
        net.encoder.load_state_dict(saved["encoder"])
        pretraining = Pretraining(**{**saved["report"], "reused": recipe.pretrained})
        log.info("sentiment: pretrained encoder from %s", recipe.pretrained)
    elif recipe.pretrain_epochs > 0 and not recipe.resume:
        texts = pretraining_texts(recipe, settings, data.train_rows)
        log.info("sentiment: masked-character pretraining on %d unlabelled texts", len(texts))
        pretraining = pretrain_sentiment_encoder(recipe, settings, net, tokenizer, texts, run.run_dir)
    fasttext_params = list(net.fasttext.parameters()) if net.fasttext is not None else []
    fasttext_ids = {id(p) for p in fasttext_params}
    groups = [([p for p in net.parameters() if id(p) not in fasttext_ids], settings.lr)]
    if fasttext_params:
        groups.append((fasttext_params, settings.lr * recipe.fasttext_lr_scale))
    optimizer = SplitOptimizer(groups, weight_decay=recipe.weight_decay)
    callbacks = _SentimentCallbacks(
        net,
        config,
        data.train_examples,
        data.dev_examples,
        tokenizer,
        recipe.average,
        run.run_dir / "sentiment_best.pt",
        started,
    )
    if recipe.resume:
        # Reuse the CNN of an earlier run of this recipe (its sentiment_best.pt): no epochs are run.
        resumed = load_sentiment_checkpoint(recipe.resume, config)
        log.info("sentiment: CNN weights from %s, no epochs run", recipe.resume)
        net.load_state_dict(resumed["net"])
        net.eval()
        return CnnFit(net, config, list(resumed["history"]), embedding_init, pretraining, resumed["seconds"])
    spec = loop.epoch_spec(
        name="sentiment",
        network=net,
        optimizer=optimizer,
        parameters=list(net.parameters()),
        lengths=[len(e.ids) for e in data.train_examples],
        batch_tokens=settings.batch_tokens,
        epochs=recipe.epochs,
        warmup=WARMUP_STEPS,
        batch_rng=random.Random(settings.seed),
        progress_interval=settings.progress_interval,
        started=started,
        max_minutes=settings.max_minutes,
    )
    result = loop.train(spec, callbacks)
    history = result.history
    if len(callbacks.epoch_states) > 1:
        # Checkpoint averaging: the mean of the last epochs' weights, kept if it beats the best epoch.
        states = callbacks.epoch_states
        # (cast: ``sum`` of an empty iterable would be 0; ``states`` has at least two.)
        averaged = {k: cast(torch.Tensor, sum(s[k] for s in states)) / len(states) for k in states[0]}
        net.load_state_dict(averaged)
        accuracy = {name: sentiment_torch_dev_accuracy(net, ex, tokenizer) for name, ex in data.dev_examples.items()}
        label = f"mean of last {len(states)}"
        history.append({"epoch": label, "train_loss": "", **{k: round(v, 4) for k, v in accuracy.items()}})
        log.info("sentiment %s: dev accuracy %s", label, accuracy)
        if accuracy[SELECTION_SPLIT] > result.best:
            callbacks.best_state = averaged
    assert callbacks.best_state is not None
    net.load_state_dict(callbacks.best_state)
    net.eval()
    return CnnFit(net, config, history, embedding_init, pretraining, None)


def _manifest(run: RecipeRun, architecture: str, data: SentimentData) -> Manifest:
    corpora = data.corpora
    return Manifest(
        name="zhserve-sentiment",
        version=run.settings.version,
        task="sentiment",
        architecture=architecture,
        labels=list(D.SENTIMENT_LABELS),
        max_seq_length=MAX_SEQ_LENGTH,
        tokenizer=TokenizerSpec(vocab="vocab.txt", lowercase=True),
        onnx=OnnxSpec(model="model.onnx", inputs=["input_ids", "attention_mask"], output="logits"),
        quantization="int8-weight-only",
        provenance=trained_provenance(run, "sentiment", COMMAND, corpora, len(data.train_rows)),
    )


def train_sentiment(run: RecipeRun) -> SentimentReport:
    """The sentiment recipe of ``run.config``, from the corpora to ``<out>/sentiment``."""
    recipe = run.config.sentiment
    assert recipe is not None
    settings = run.settings
    started = time.time()
    loop.seed_everything(settings.seed)
    out = Path(settings.out) / "sentiment"
    out.mkdir(parents=True, exist_ok=True)
    data = _prepare(run, recipe, out)
    fit = _fit_cnn(run, recipe, data, started)
    train_seconds = fit.resumed_seconds if fit.resumed_seconds is not None else time.time() - started
    exported: nn.Module = fit.net
    linear = None
    if recipe.linear == "on":
        exported, linear = sentiment_ensemble(
            recipe,
            settings.threads,
            fit.net,
            data.tokenizer,
            data.train_rows,
            data.validation_rows,
            data.corpora.dev,
            run.run_dir,
        )
    architecture = describe_architecture(fit.config) + (linear.architecture if linear else "")

    def report(evaluation: Evaluation) -> SentimentReport:
        assert isinstance(evaluation, SentimentEvaluation)
        return SentimentReport(
            config=fit.config.to_dict(),
            parameters=count_parameters(exported),
            embedding_init=fit.embedding_init,
            train_rows=len(data.train_rows),
            validation_rows=len(data.validation_rows),
            linear=linear,
            pretraining=fit.pretraining,
            resumed_from=recipe.resume or None,
            train_max_tokens=recipe.train_tokens,
            epochs=sum(isinstance(row["epoch"], int) for row in fit.history),
            history=history_rows(fit.history),
            train_seconds=round(train_seconds, 1),
            total_seconds=round(time.time() - started, 1),
            threads=settings.threads,
            evaluation=evaluation,
        )

    spec = ShipSpec(
        network=exported,
        manifest=_manifest(run, architecture, data),
        out=out,
        run_dir=run.run_dir,
        dev=data.corpora.dev,
        sources=data.corpora.sources,
        command=COMMAND,
        threads=settings.threads,
    )
    _, shipped = ship(spec, report)
    assert isinstance(shipped, SentimentReport)
    return shipped
