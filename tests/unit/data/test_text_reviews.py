"""The generated review corpus: deterministic, balanced, text-like, learnable but not perfectly."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from ferry.data.builtin import load_builtin
from ferry.data.reviews import LABELS, PRODUCTS, reviews
from ferry.data.schema import infer_schema
from ferry.errors import DataError


@pytest.fixture(scope="module")
def corpus() -> pd.DataFrame:
    return reviews(rows=4_000, seed=0)


def test_same_seed_gives_the_same_corpus_and_another_seed_does_not() -> None:
    pd.testing.assert_frame_equal(reviews(rows=500, seed=3), reviews(rows=500, seed=3))
    assert not reviews(rows=500, seed=3).equals(reviews(rows=500, seed=4))


def test_builtin_name_gives_the_default_corpus(corpus: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(load_builtin("reviews"), corpus)
    assert len(load_builtin("reviews", rows=120, seed=1)) == 120


def test_columns_labels_and_products(corpus: pd.DataFrame) -> None:
    assert list(corpus.columns) == ["review", "product", "target"]
    assert set(corpus["target"]) == set(LABELS)
    assert set(corpus["product"]) == set(PRODUCTS)


def test_classes_are_balanced(corpus: pd.DataFrame) -> None:
    shares = corpus["target"].value_counts(normalize=True)
    assert shares.min() >= 0.28 and shares.max() <= 0.38


def test_reviews_are_short_varied_text_with_some_empty_ones(corpus: pd.DataFrame) -> None:
    texts = corpus["review"]
    assert texts.str.len().between(1, 300).mean() > 0.95
    assert 0.002 < (texts == "").mean() < 0.03  # an empty review is valid data
    assert texts.nunique() > 0.8 * len(texts)
    assert texts.str.contains(r"\bnot\b").mean() > 0.05  # negations
    assert texts.str.contains(r"\b[A-Z]{3,}\b").mean() > 0.02  # shouting
    kinds = {info.name: info.kind for info in infer_schema(corpus, "target")}
    assert kinds == {"review": "text", "product": "categorical", "target": "categorical"}


def test_a_bag_of_bigrams_learns_it_well_but_not_perfectly(corpus: pd.DataFrame) -> None:
    train, test = corpus.iloc[:3_000], corpus.iloc[3_000:]

    def accuracy(ngrams: tuple[int, int]) -> float:
        model = make_pipeline(
            TfidfVectorizer(ngram_range=ngrams, min_df=2), LogisticRegression(C=10, max_iter=2000)
        )
        model.fit(train["review"], train["target"])
        return float((model.predict(test["review"]) == test["target"]).mean())

    bigrams = accuracy((1, 2))
    assert 0.84 <= bigrams <= 0.95  # label noise and mixed reviews keep it below 1
    assert bigrams > accuracy((1, 1)) + 0.03  # negations need bigrams


def test_rows_must_be_positive() -> None:
    with pytest.raises(DataError, match="rows must be at least 1"):
        reviews(rows=0)
