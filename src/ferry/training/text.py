"""TF-IDF for free-text columns, restricted to what its ONNX graph reproduces exactly.

ONNX Runtime lowercases with a C++ locale (``en_US.UTF-8`` by default, absent from slim images)
and tokenizes with RE2, whose classes are not Python's. So both sides are pinned to what they
share: ASCII-only lowercasing (the graph's ``StringNormalizer`` runs in the always-present "C"
locale) and tokens that are runs of ASCII letters, digits and ``_`` joined by inner apostrophes
("don't"). Every other character separates tokens: "café" gives "caf", emoji give nothing.
Missing text is the empty document, whose TF-IDF row is all zeros. Paths that spell a missing
string as the categorical placeholder ``__missing__`` (retraining's scoring, batch files) get the
same row: it is one token, which real text does not hold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer

from ferry.core.spec import TextSpec

TOKEN_PATTERN = r"[a-z0-9_]+(?:'[a-z0-9_]+)*"
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """Lowercase A-Z only, as the graph's StringNormalizer does in the "C" locale."""
    return text.translate(_ASCII_LOWER)


def text_values(values: object) -> np.ndarray:
    """Strings as an object array; None, NaN and pandas' NA become the empty document."""
    array = np.asarray(values, dtype=object).reshape(-1)
    out = np.empty(array.shape[0], dtype=object)
    for i, value in enumerate(array):
        missing = value is None or value is pd.NA or (isinstance(value, float) and value != value)
        out[i] = "" if missing else str(value)
    return out


class TextVectorizer(TfidfVectorizer):  # type: ignore[misc]
    """``TfidfVectorizer`` with the ONNX-reproducible preprocessing and token pattern, float32.

    Only the settings of ``features.text`` are parameters; the rest is fixed.
    """

    def __init__(
        self,
        max_features: int | None = 20_000,
        ngram_range: tuple[int, int] = (1, 2),
        min_df: int = 2,
        max_df: float = 1.0,
        sublinear_tf: bool = True,
    ) -> None:
        super().__init__(
            lowercase=False,  # ascii_lower below; str.lower would map "K" (Kelvin) to "k"
            token_pattern=TOKEN_PATTERN,
            max_features=max_features,
            ngram_range=ngram_range,
            min_df=min_df,
            max_df=max_df,
            sublinear_tf=sublinear_tf,
            dtype=np.float32,
        )

    def build_preprocessor(self) -> Callable[[str], str]:
        return ascii_lower

    def fit(self, raw_documents: Any, y: Any = None) -> TextVectorizer:
        super().fit(_documents(raw_documents), y)
        return self

    def fit_transform(self, raw_documents: Any, y: Any = None) -> Any:
        return super().fit_transform(_documents(raw_documents), y)

    def transform(self, raw_documents: Any) -> Any:
        return super().transform(_documents(raw_documents))

    def ngrams(self) -> list[tuple[str, ...]]:
        """The vocabulary as token tuples in column order (tokens never hold spaces)."""
        ordered = sorted(self.vocabulary_.items(), key=lambda item: item[1])
        return [tuple(term.split(" ")) for term, _ in ordered]


def _documents(raw: Any) -> np.ndarray:
    """One document per row from a Series, a 1-D array or a one-column frame or array."""
    if isinstance(raw, pd.DataFrame):
        raw = raw.iloc[:, 0]
    return text_values(raw)


def vectorizer(spec: TextSpec | None) -> TextVectorizer:
    """The vectorizer ``features.text`` asks for (defaults when it is unset)."""
    if spec is None:
        return TextVectorizer()
    return TextVectorizer(
        max_features=spec.max_features,
        ngram_range=spec.ngram_range,
        min_df=spec.min_df,
        max_df=spec.max_df,
        sublinear_tf=spec.sublinear_tf,
    )
