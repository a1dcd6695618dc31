"""Reference baseline for the sentiment model: char 1–3-gram TF-IDF + logistic regression.

Measurement only (scikit-learn, in the ``train`` extra since the shipped sentiment model's linear branch,
``training/ngram_linear.py``, is trained with it; that branch uses hashed n-grams of the token ids computed in
the graph, this reference raw-character n-grams):

    python -m training.tfidf_baseline --data ../shared/data

Trains on exactly the rows ``training.recipes.sentiment`` uses (``load_sentiment_corpora``, same seed; whole texts,
not cut to 256 tokens) and prints accuracy on every dev split for each ``C``. ``--with-fruit`` adds the
held-out fruit reviews back to training (the training set of the models before the fruit hold-out).
"""

from __future__ import annotations

import argparse
import time

from training import data as D


def main() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--c", type=float, nargs="+", default=[1.0, 4.0, 16.0])
    parser.add_argument("--max-features", type=int, default=2_000_000)
    parser.add_argument("--with-fruit", action="store_true", help="train on the fruit reviews too")
    args = parser.parse_args()
    corpora = D.load_sentiment_corpora(args.data)
    if args.with_fruit:
        corpora.train = corpora.train + corpora.dev.pop("unseen_fruit")
    started = time.time()
    vectorizer = TfidfVectorizer(
        analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2, max_features=args.max_features
    )
    x_train = vectorizer.fit_transform([r["text"] for r in corpora.train])
    y_train = [r["label"] for r in corpora.train]
    print(f"{len(corpora.train)} training rows, {x_train.shape[1]} features ({time.time() - started:.0f} s)")
    for c in args.c:
        model = LogisticRegression(C=c, max_iter=2000, solver="liblinear")
        model.fit(x_train, y_train)
        scores = {}
        for name, rows in corpora.dev.items():
            predicted = model.predict(vectorizer.transform([r["text"] for r in rows]))
            scores[name] = sum(p == r["label"] for p, r in zip(predicted, rows, strict=True)) / len(rows)
        print(f"C={c}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()), flush=True)


if __name__ == "__main__":
    main()
