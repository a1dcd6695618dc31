"""Linear sentiment branch: hashed char n-gram TF-IDF features computed in the graph + logistic regression.

The features are those of scikit-learn's ``TfidfVectorizer(analyzer="char", sublinear_tf=True)`` over the
*token ids* the server feeds the model (not over the raw text), hashed like ``HashingVectorizer``:

* n-grams of orders ``orders`` (default 1–3) over the real tokens of a row — [PAD], [CLS] and [SEP]
  are never part of an n-gram; an n-gram is counted at each start position where all its n tokens are real;
* unigram bucket = the token id itself (no hashing); an n-gram of order n ≥ 2 goes to
  ``offset[n] + h mod buckets[n]`` with the polynomial hash ``h = n; h = (h·A + id) mod M`` over its ids, so
  the orders never share a bucket;
* per bucket: ``tf = 1 + ln(count in the row)``, times ``idf = ln((1 + N) / (1 + df)) + 1`` (0 for buckets seen
  in fewer than ``min_df`` training rows), L2-normalised over the row, then ``w·x + b``.

:func:`features` computes the sparse matrix in numpy/scipy (for training with scikit-learn);
:class:`HashedNgramLinear` computes the same logit in torch (exported to ONNX; counting equal buckets
in a row uses a [T, T] equality matrix per order). :class:`SentimentEnsemble` puts the CNN and this
branch into one graph with the served interface (``input_ids``, ``attention_mask`` → ``logits`` [B, 2]).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from training.layers import shift_ids

HASH_A = 16_777_619  # < 2**31: h·A + id stays far below 2**63
HASH_M = 2_147_483_647  # 2**31 - 1
EXCLUDED_IDS = (0, 2, 3)  # [PAD], [CLS], [SEP] (vocab.txt order); another vocabulary names its own


@dataclass
class LinearConfig:
    vocab_size: int
    orders: list[int] = field(default_factory=lambda: [1, 2, 3])
    # hash buckets per order >= 2 (order 1 uses the token id: vocab_size buckets)
    buckets: dict[str, int] = field(default_factory=lambda: {"2": 2**20, "3": 2**21})
    min_df: int = 2
    # NB-LR (Wang & Manning 2012): each feature is scaled by |r|^nb_power, r its smoothed log-count
    # ratio between the classes, before the regression; the scale is folded into the weights, so the
    # graph is the same. 0 = plain TF-IDF.
    nb_power: float = 0.0
    # ids that are never part of an n-gram (padding and the sequence markers of the model's vocabulary)
    excluded_ids: list[int] = field(default_factory=lambda: list(EXCLUDED_IDS))

    def to_dict(self) -> dict:
        return asdict(self)

    def offsets(self) -> dict[int, int]:
        """First bucket of each order in the one weight table."""
        result, start = {}, 0
        for n in self.orders:
            result[n] = start
            start += self.vocab_size if n == 1 else self.buckets[str(n)]
        return result

    @property
    def total_buckets(self) -> int:
        return sum(self.vocab_size if n == 1 else self.buckets[str(n)] for n in self.orders)


# --------------------------------------------------------------------------- numpy (training side)


def _flat(sequences: Sequence[Sequence[int]], separator: int) -> tuple[np.ndarray, np.ndarray]:
    """All rows' ids in one array, each row followed by separators (an excluded id); the row index of each position."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    pad = 4
    flat = np.full(int(lengths.sum()) + pad * len(sequences), separator, dtype=np.int64)
    rows = np.full(flat.shape, -1, dtype=np.int64)
    position = 0
    for row, ids in enumerate(sequences):
        n = len(ids)
        flat[position : position + n] = ids
        rows[position : position + n] = row
        position += n + pad
    return flat, rows


def bucket_counts(config: LinearConfig, sequences: Sequence[Sequence[int]]):
    """CSR ``[rows, total_buckets]`` of n-gram counts (float64) of token-id sequences (no [CLS]/[SEP])."""
    from scipy import sparse

    flat, rows = _flat(sequences, config.excluded_ids[0])
    valid = ~np.isin(flat, config.excluded_ids)
    offsets = config.offsets()
    all_rows, all_cols = [], []
    size = len(flat)
    for n in config.orders:
        if n == 1:
            ok, bucket = valid, flat
        else:
            ok = valid.copy()
            h = np.full(size, n, dtype=np.int64)
            for k in range(n):
                shifted = np.zeros(size, dtype=np.int64)
                shifted[: size - k] = flat[k:]
                shifted_valid = np.zeros(size, dtype=bool)
                shifted_valid[: size - k] = valid[k:]
                ok &= shifted_valid
                h = (h * HASH_A + shifted) % HASH_M
            bucket = offsets[n] + h % config.buckets[str(n)]
        all_rows.append(rows[ok])
        all_cols.append(bucket[ok])
    r = np.concatenate(all_rows)
    c = np.concatenate(all_cols)
    matrix = sparse.csr_matrix(
        (np.ones(len(r), dtype=np.float64), (r, c)), shape=(len(sequences), config.total_buckets)
    )
    matrix.sum_duplicates()
    return matrix


def fit_idf(config: LinearConfig, counts) -> np.ndarray:
    """sklearn's smooth idf per bucket; 0 for buckets in fewer than ``min_df`` rows (they drop out).

    Rounded to the 256-level grid ``k · max / 255`` that INT8 (uint8, zero point 0) quantisation of the
    table uses, so the FP32 and INT8 graphs see the same idf values the weights were trained with.
    """
    df = np.bincount(counts.indices, minlength=config.total_buckets)
    n = counts.shape[0]
    idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
    idf[df < config.min_df] = 0.0
    step = float(idf.max()) / 255.0
    return (np.round(idf / step) * step).astype(np.float32)


def tfidf(counts, idf: np.ndarray):
    """Sublinear tf × idf, L2-normalised per row (rows without features stay zero)."""
    from scipy import sparse

    x = counts.copy().astype(np.float64)
    x.data = 1.0 + np.log(x.data)
    x = x @ sparse.diags(idf.astype(np.float64))
    x.eliminate_zeros()
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sparse.diags(1.0 / norms) @ x


def features(config: LinearConfig, sequences: Sequence[Sequence[int]], idf: np.ndarray):
    return tfidf(bucket_counts(config, sequences), idf).tocsr()


@dataclass
class LinearModel:
    config: LinearConfig
    idf: np.ndarray  # [total_buckets] float32
    weight: np.ndarray  # [total_buckets] float32
    bias: float
    c: float

    def logits(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """The positive-minus-negative logit ``w·x + b`` of each sequence."""
        return (
            np.asarray(features(self.config, sequences, self.idf) @ self.weight.astype(np.float64)).ravel() + self.bias
        )


def nb_scale(counts, labels: np.ndarray, idf: np.ndarray, power: float) -> np.ndarray:
    """``|r|^power`` per bucket with ``r = log((p / |p|₁) / (q / |q|₁))``, ``p``/``q`` the number of positive /
    negative training rows containing the bucket plus 1; 0 for dead buckets (idf 0); all ones for power 0."""
    if power == 0:
        return np.ones(len(idf), dtype=np.float64)
    present = counts.copy()
    present.data = np.ones_like(present.data)
    p = np.asarray(present[labels == 1].sum(axis=0)).ravel() + 1.0
    q = np.asarray(present[labels == 0].sum(axis=0)).ravel() + 1.0
    ratio = np.log((p / p.sum()) / (q / q.sum()))
    return np.where(idf > 0, np.abs(ratio) ** power, 0.0)


def train_linear(
    config: LinearConfig,
    train_sequences: Sequence[Sequence[int]],
    train_labels: Sequence[int],
    validation_sequences: Sequence[Sequence[int]],
    validation_labels: Sequence[int],
    *,
    cs: Sequence[float] = (2.0, 4.0, 8.0, 16.0, 32.0),
    log=print,
) -> tuple[LinearModel, list[dict]]:
    """Logistic regression (liblinear) on the hashed TF-IDF features; ``C`` picked on the validation rows."""
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    started = time.time()
    counts = bucket_counts(config, train_sequences)
    idf = fit_idf(config, counts)
    y_train, y_val = np.asarray(train_labels), np.asarray(validation_labels)
    scale = nb_scale(counts, y_train, idf, config.nb_power)
    x_train = (tfidf(counts, idf) @ sparse.diags(scale)).tocsr()
    x_val = (features(config, validation_sequences, idf) @ sparse.diags(scale)).tocsr()
    log(f"linear: {x_train.shape[0]} rows, {int((idf > 0).sum())} live buckets ({time.time() - started:.0f} s)")
    best, trials = None, []
    for c in cs:
        model = LogisticRegression(C=c, solver="liblinear", max_iter=1000)
        model.fit(x_train, y_train)
        accuracy = float((model.predict(x_val) == y_val).mean())
        trials.append({"C": c, "validation_accuracy": round(accuracy, 4)})
        log(f"linear: C={c} validation accuracy {accuracy:.4f} ({time.time() - started:.0f} s)")
        if best is None or accuracy > best[0]:
            best = (accuracy, c, model)
    assert best is not None
    _, c, model = best
    weight = (model.coef_[0] * scale).astype(np.float32)  # the NB scale folded in: w·(s∘x) = (w∘s)·x
    weight[idf == 0] = 0.0
    return LinearModel(config, idf, weight, float(model.intercept_[0]), c), trials


# --------------------------------------------------------------------------- torch / ONNX (serving side)


class HashedNgramLinear(nn.Module):
    """``(input_ids, attention_mask) → w·x + b`` [B] with ``x`` the row's hashed n-gram TF-IDF vector."""

    bias: torch.Tensor  # a buffer (register_buffer)

    def __init__(self, model: LinearModel) -> None:
        super().__init__()
        config = model.config
        self.orders = list(config.orders)
        self.offsets = config.offsets()
        self.buckets = {n: int(config.buckets[str(n)]) for n in self.orders if n > 1}
        # One weight and one idf Gather table per order (quantised to INT8 with the CNN's embedding tables,
        # each with its own scale). The weights are stored companded, u = sign(w)·sqrt(|w|), and the graph
        # uses u·|u|: INT8's uniform grid then resolves the many small weights finely.
        self.weight = nn.ModuleDict()
        self.idf = nn.ModuleDict()
        for n in self.orders:
            begin = self.offsets[n]
            size = config.vocab_size if n == 1 else config.buckets[str(n)]
            w = model.weight[begin : begin + size].astype(np.float32)
            companded = np.sign(w) * np.sqrt(np.abs(w))
            weight_table, idf_table = nn.Embedding(size, 1), nn.Embedding(size, 1)
            self.weight[str(n)] = weight_table
            self.idf[str(n)] = idf_table
            with torch.no_grad():
                weight_table.weight.copy_(torch.from_numpy(companded).unsqueeze(1))
                idf_table.weight.copy_(torch.from_numpy(model.idf[begin : begin + size]).unsqueeze(1))
        self.excluded_ids = [int(i) for i in config.excluded_ids]
        self.register_buffer("bias", torch.tensor(float(model.bias)))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        valid = attention_mask > 0
        for excluded in self.excluded_ids:
            valid = valid & (input_ids != excluded)
        valid_ids = valid.to(torch.int64)
        score: torch.Tensor | float = 0.0
        square: torch.Tensor | float = 0.0
        for n in self.orders:
            if n == 1:
                ok, bucket = valid, input_ids
            else:
                ok = valid
                h = torch.full_like(input_ids, n)
                for k in range(n):
                    # token t + k ([PAD], invalid, beyond the end)
                    shifted = shift_ids(input_ids, -k)
                    ok = ok & (shift_ids(valid_ids, -k) > 0)
                    h = (h * HASH_A + shifted) % HASH_M
                bucket = h % self.buckets[n]  # within this order's tables (offset[n] in the Python matrix)
            bucket = bucket * ok.to(torch.int64)  # invalid positions read bucket 0 (and count for nothing)
            okf = ok.to(torch.float32)
            same = (bucket.unsqueeze(2) == bucket.unsqueeze(1)).to(torch.float32) * okf.unsqueeze(1)
            count = same.sum(dim=2).clamp(min=1.0)  # valid n-grams of the row in this position's bucket
            share = okf / count  # each bucket's positions sum to 1
            tf = 1.0 + torch.log(count)
            idf = self.idf[str(n)](bucket).squeeze(-1)
            companded = self.weight[str(n)](bucket).squeeze(-1)
            value = tf * idf
            score = score + (share * value * companded * companded.abs()).sum(dim=1)
            square = square + (share * value * value).sum(dim=1)
        assert isinstance(score, torch.Tensor) and isinstance(square, torch.Tensor)
        norm = torch.sqrt(square)
        norm = torch.where(norm > 0, norm, torch.ones_like(norm))
        return score / norm + self.bias


class SentimentEnsemble(nn.Module):
    """The CNN and the linear branch in one graph; output ``logits`` [B, 2] (negative, positive).

    ``mode`` ``prob``: log of ``α·p_cnn + (1 − α)·p_linear`` per class (softmax of it is the weighted mean of
    the two models' probabilities); ``logit``: ``[0, α·d_cnn + (1 − α)·z]`` with ``d_cnn`` the CNN's
    positive-minus-negative logit and ``z`` the linear logit.
    """

    def __init__(self, cnn: nn.Module, linear: HashedNgramLinear, *, mode: str, alpha: float) -> None:
        super().__init__()
        if mode not in ("prob", "logit"):
            raise ValueError(mode)
        self.cnn, self.linear, self.mode, self.alpha = cnn, linear, mode, float(alpha)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = self.cnn(input_ids, attention_mask)
        d = logits[:, 1] - logits[:, 0]
        z = self.linear(input_ids, attention_mask)
        if self.mode == "logit":
            combined = self.alpha * d + (1.0 - self.alpha) * z
            return torch.stack([torch.zeros_like(combined), combined], dim=1)
        p = self.alpha * torch.sigmoid(d) + (1.0 - self.alpha) * torch.sigmoid(z)
        p = p.clamp(1e-7, 1.0 - 1e-7)
        return torch.stack([torch.log(1.0 - p), torch.log(p)], dim=1)


def combine(d_cnn: np.ndarray, z: np.ndarray, mode: str, alpha: float) -> np.ndarray:
    """The ensemble's positive probability (numpy twin of :class:`SentimentEnsemble`)."""

    def sigmoid(v):
        return 1.0 / (1.0 + np.exp(-v))

    if mode == "logit":
        return sigmoid(alpha * d_cnn + (1.0 - alpha) * z)
    return alpha * sigmoid(d_cnn) + (1.0 - alpha) * sigmoid(z)


def pick_ensemble(d_cnn: np.ndarray, z: np.ndarray, labels: np.ndarray, *, step: float = 0.05) -> tuple[dict, list]:
    """The (mode, α) with the best validation accuracy (ties: lower log loss).

    (Picking by log loss instead was tried: it put more weight on the CNN and did worse on the review dev,
    see run ens2 in training/experiments/sentiment.md.)
    """
    trials: list[dict[str, Any]] = []
    for mode in ("prob", "logit"):
        for i in range(round(1 / step) + 1):
            alpha = round(i * step, 4)
            p = np.clip(combine(d_cnn, z, mode, alpha), 1e-7, 1 - 1e-7)
            accuracy = float(((p > 0.5).astype(int) == labels).mean())
            loss = float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
            trials.append({"mode": mode, "alpha": alpha, "accuracy": round(accuracy, 4), "log_loss": round(loss, 4)})
    best = max(trials, key=lambda t: (t["accuracy"], -t["log_loss"]))
    return best, trials


def describe(config: LinearConfig) -> str:
    parts = []
    for n in config.orders:
        parts.append("token id" if n == 1 else f"{n}-grams → {config.buckets[str(n)]:,} buckets")
    return (
        f"hashed char {min(config.orders)}–{max(config.orders)}-gram TF-IDF over the real tokens "
        f"({'; '.join(parts)}; sublinear tf, idf, min_df {config.min_df}, L2"
        + (f", NB log-count-ratio scale |r|^{config.nb_power:g}" if config.nb_power else "")
        + ") → logistic regression, all in the graph"
    )
