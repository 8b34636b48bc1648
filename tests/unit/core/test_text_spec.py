"""``features.text`` in ferry.yaml: defaults, and the checks that name the key and the fix."""

from __future__ import annotations

from typing import Any

import pytest

from ferry.core.spec import TEXT_FAMILIES, parse_spec
from ferry.errors import SpecError


def spec(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "reviews",
        "task": "classification",
        "data": {"source": "builtin:reviews", "target": "target"},
        "features": {"text": {}},
    }
    return {**base, **over}


def test_text_defaults_and_a_linear_search() -> None:
    parsed = parse_spec(spec())
    text = parsed.features.text
    assert text is not None and text.columns is None
    assert (text.max_features, text.ngram_range, text.min_df, text.sublinear_tf) == (
        20_000,
        (1, 2),
        2,
        True,
    )
    assert parsed.search.families == ["logistic"]  # the tabular default holds tree families


def test_families_that_cannot_take_text_are_named() -> None:
    with pytest.raises(SpecError, match=r"search\.families: \['hist_gb'\].*features\.text") as info:
        parse_spec(spec(search={"families": ["logistic", "hist_gb"]}))
    assert str(list(TEXT_FAMILIES)) in str(info.value)
    assert parse_spec(spec(search={"families": ["mlp", "linear"]})).search.families == [
        "mlp",
        "linear",
    ]


@pytest.mark.parametrize("key", ["pca_components", "interactions"])
def test_dense_feature_steps_are_refused_with_text(key: str) -> None:
    value = 5 if key == "pca_components" else True
    with pytest.raises(SpecError, match=rf"features\.{key}: not available with features\.text"):
        parse_spec(spec(features={"text": {}, key: value}))


@pytest.mark.parametrize("ngrams", [[0, 1], [2, 1], [1, 4]])
def test_ngram_range_is_checked(ngrams: list[int]) -> None:
    with pytest.raises(SpecError, match=r"features\.text\.ngram_range: expected \[low, high\]"):
        parse_spec(spec(features={"text": {"ngram_range": ngrams}}))


def test_unknown_text_key_is_named() -> None:
    with pytest.raises(SpecError, match=r"features\.text\.lowercase: unknown key"):
        parse_spec(spec(features={"text": {"lowercase": False}}))


def test_specs_without_text_keep_their_hash() -> None:
    plain = parse_spec(spec(features={}))
    assert "text" not in plain.model_dump(mode="json")["features"]
    assert plain.search.families == ["logistic", "hist_gb", "lightgbm"]
    assert plain.spec_hash() != parse_spec(spec()).spec_hash()
