"""Text in the graph: ONNX Runtime computes scikit-learn's TF-IDF rows and the whole pipeline's
probabilities from raw strings, including the strings that tokenizers disagree on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import StringTensorType
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline

from ferry.core.spec import FeatureSpec, TextSpec
from ferry.data.reviews import LABELS, reviews
from ferry.export.converters import register_converters
from ferry.export.onnx import OPSETS, to_onnx
from ferry.export.parity import check_parity, session
from ferry.export.text import ngram_pool
from ferry.training.features import build_preprocessor, model_frame, plan_layout
from ferry.training.text import TextVectorizer

# Each twice, so min_df=2 keeps their tokens: "k", "i", "caf", "don't", "x_y", "__missing__".
CRAFTED = [
    "k is for kelvin, i is for ink",
    "caf au lait at the caf",
    "don't stop, don't",
    "x_y and __missing__ tokens",
] * 2
TRICKY = [
    "",
    "!!!",
    "   \t\n  ",
    "KELVIN \u212a k K",  # Kelvin sign: str.lower() makes it "k", the graph's "C" locale does not
    "\u0130stanbul i I",  # dotted capital I: str.lower() adds a combining dot
    "café Café CAFÉ",
    "Don't DON'T don't 'quoted' it's",
    "emoji 😀👍 only 日本語",
    "__missing__",
    "x_y X_Y",
    "not good not good not good, NOT GOOD",
    "The LID is NOT flimsy!!! Love it... 5 stars",
    "the " * 300,
]


@pytest.fixture(scope="module")
def corpus() -> pd.DataFrame:
    return reviews(rows=1_500, seed=1)


def vectorizer_graph(vectorizer: TextVectorizer) -> bytes:
    register_converters()
    model = convert_sklearn(
        vectorizer, initial_types=[("review", StringTensorType([None, 1]))], target_opset=OPSETS
    )
    return bytes(model.SerializeToString())


@pytest.mark.parametrize("ngrams", [(1, 1), (1, 2), (1, 3), (2, 3)])
@pytest.mark.parametrize("sublinear", [True, False])
def test_tfidf_rows_match_scikit_learn(
    corpus: pd.DataFrame, ngrams: tuple[int, int], sublinear: bool
) -> None:
    documents = [*corpus["review"], *CRAFTED]
    vectorizer = TextVectorizer(ngram_range=ngrams, sublinear_tf=sublinear).fit(documents)
    sess = session(vectorizer_graph(vectorizer))
    texts = [*TRICKY, *corpus["review"].iloc[:200]]
    (onnx_rows,) = sess.run(None, {"review": np.asarray(texts, dtype=object).reshape(-1, 1)})
    expected = vectorizer.transform(texts).toarray()
    assert onnx_rows.shape == expected.shape
    np.testing.assert_allclose(onnx_rows, expected, atol=1e-6)
    for text in TRICKY:  # one row at a time too: a batch of one pads nothing
        (row,) = sess.run(None, {"review": np.asarray([[text]], dtype=object)})
        np.testing.assert_allclose(row, vectorizer.transform([text]).toarray(), atol=1e-6)


def test_tricky_strings_hit_the_vocabulary(corpus: pd.DataFrame) -> None:
    vectorizer = TextVectorizer().fit([*corpus["review"], *CRAFTED])
    wanted = {"k", "i", "caf", "don't", "x_y", "__missing__", "not good"}
    assert wanted <= set(vectorizer.vocabulary_)
    assert vectorizer.transform(["\u212a \u0130"]).nnz == 0  # neither is an ASCII letter
    assert vectorizer.transform(["K I"]).nnz == 2


def test_ngram_pool_groups_by_length_and_keeps_columns() -> None:
    pool = ngram_pool([("b",), ("a", "b"), ("a",), ("c", "a", "b")])
    assert pool["pool_strings"] == ["b", "a", "a", "b", "c", "a", "b"]
    assert pool["ngram_counts"] == [0, 2, 4]
    assert pool["ngram_indexes"] == [0, 2, 1, 3]
    assert (pool["min_gram_length"], pool["max_gram_length"]) == (1, 3)
    only_pairs = ngram_pool([("a", "b"), ("b", "c")])
    assert only_pairs["ngram_counts"] == [0, 0] and only_pairs["min_gram_length"] == 2


@pytest.mark.parametrize(
    "estimator",
    [
        LogisticRegression(C=10, max_iter=2000),
        MLPClassifier((16,), early_stopping=True, random_state=0),
    ],
    ids=["logistic", "mlp"],
)
def test_pipeline_with_text_and_a_category_is_one_graph_in_parity(
    corpus: pd.DataFrame, estimator: object
) -> None:
    layout = plan_layout(corpus, {"categorical": ["product"], "text": ["review"]}, 30)
    features = build_preprocessor(layout, FeatureSpec(text=TextSpec()))
    pipeline = Pipeline([("features", features), ("model", estimator)])
    target = corpus["target"].map({label: i for i, label in enumerate(LABELS)}).to_numpy()
    train, test = corpus.iloc[:1_200], corpus.iloc[1_200:]
    pipeline.fit(model_frame(train, layout), target[:1_200])

    model_bytes = to_onnx(pipeline, layout, "multiclass", len(LABELS))
    inputs = {i.name: i.type for i in session(model_bytes).get_inputs()}
    assert inputs == {"product": "tensor(string)", "review": "tensor(string)"}
    tricky = pd.DataFrame({"review": [*TRICKY, None], "product": "books"})
    rows = pd.concat([test, tricky], ignore_index=True)
    parity = check_parity(model_bytes, pipeline, model_frame(rows, layout), "multiclass")
    assert parity["max_abs_diff"] <= 1e-5 and parity["label_mismatches"] == 0
