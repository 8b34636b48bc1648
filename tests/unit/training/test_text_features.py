"""Text columns as features: which columns, how they are typed and vectorized."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.base import clone

from ferry.core.spec import FeatureSpec, TextSpec
from ferry.data.schema import feature_columns, infer_schema
from ferry.errors import DataError
from ferry.training.features import build_preprocessor, model_frame, plan_layout
from ferry.training.text import TextVectorizer, ascii_lower, text_values

REVIEWS = [
    "Great kettle, the lid is not flimsy",
    "The handle broke after a week and support never replied",
    "It does the job, nothing special about this one really",
    "Don't buy this: the coating peels off after two washes",
] * 20


@pytest.fixture
def frame() -> pd.DataFrame:
    rows = len(REVIEWS)
    return pd.DataFrame(
        {
            "review": REVIEWS,
            "note": ["short words only here and there"] * rows,
            "price": np.linspace(5, 50, rows),
            "label": ["a", "b"] * (rows // 2),
        }
    )


def test_only_ascii_letters_are_lowercased() -> None:
    # str.lower maps the Kelvin sign to "k" and "İ" to "i̇"; the graph's "C" locale does not.
    assert ascii_lower("ÉCOLE Kelvin \u212a \u0130 STOP") == "École kelvin \u212a \u0130 stop"


def test_tokens_are_ascii_words_with_inner_apostrophes() -> None:
    analyze = TextVectorizer(ngram_range=(1, 1)).build_analyzer()
    assert analyze("Don't STOP, 'quoted' café 😀 x_y 3rd \u212a") == [
        "don't",
        "stop",
        "quoted",
        "caf",
        "x_y",
        "3rd",
    ]


def test_missing_text_is_the_empty_document() -> None:
    values = ["a", None, float("nan"), pd.NA, "", 5]
    assert text_values(values).tolist() == ["a", "", "", "", "", "5"]
    vectors = TextVectorizer(min_df=1).fit(["good", "bad"]).transform([None, "good"])
    assert vectors[0].nnz == 0 and vectors[1].nnz == 1


def test_vectorizer_settings_survive_clone() -> None:
    original = TextVectorizer(max_features=10, ngram_range=(1, 3), min_df=1, sublinear_tf=False)
    copy = clone(original)
    assert copy.get_params() == original.get_params()
    assert copy.token_pattern == original.token_pattern and copy.lowercase is False


def test_text_columns_only_when_asked(frame: pd.DataFrame) -> None:
    schema = infer_schema(frame, "label")
    assert "text" not in feature_columns(schema, "label")
    assert feature_columns(schema, "label", text=True)["text"] == ["review", "note"]
    picked = feature_columns(schema, "label", text=["review"])
    assert picked["text"] == ["review"] and "note" not in str(picked)


def test_text_column_names_are_checked(frame: pd.DataFrame) -> None:
    schema = infer_schema(frame, "label")
    with pytest.raises(DataError, match=r"\['reveiw'\] are not in the data"):
        feature_columns(schema, "label", text=["reveiw"])
    with pytest.raises(DataError, match=r"features\.text\.columns \['review'\] are also"):
        feature_columns(schema, "label", drop=["review"], text=["review"])


def test_text_keeps_the_features_sparse(frame: pd.DataFrame) -> None:
    layout = plan_layout(frame, {"numeric": ["price"], "text": ["review"]}, 30)
    typed = model_frame(frame.assign(review=[None, *REVIEWS[1:]]), layout)
    assert typed["review"].iloc[0] == ""
    spec = FeatureSpec(text=TextSpec(min_df=1, ngram_range=(1, 1)))
    features = build_preprocessor(layout, spec).fit_transform(typed)
    vocabulary = features.shape[1] - 1  # one numeric column, no missing values
    assert sparse.issparse(features) and vocabulary > 20
    assert features[0, 1:].nnz == 0  # the empty review
    plain = plan_layout(frame, {"numeric": ["price"]}, 30)
    assert isinstance(build_preprocessor(plain, spec).fit_transform(typed), np.ndarray)


def test_asking_for_text_where_there_is_none_says_how_to_name_it() -> None:
    frame = pd.DataFrame({"code": ["a", "b"] * 30, "label": [0, 1] * 30})
    with pytest.raises(DataError, match=r"no column looks like free text.*features\.text\.columns"):
        feature_columns(infer_schema(frame, "label"), "label", text=True)
    assert feature_columns(infer_schema(frame, "label"), "label", text=["code"])["text"] == ["code"]
