"""The ONNX graph of ``TextVectorizer``: strings in, the TF-IDF row scikit-learn computes out.

skl2onnx's own TF-IDF converter is not used: it lowercases in the ``en_US.UTF-8`` locale (ONNX
Runtime cannot load it where the language pack is missing), computes sublinear TF as
``log(1 + tf)`` where scikit-learn computes ``1 + log(tf)``, and guesses how an n-gram splits
into tokens. Here the n-grams come from the vocabulary's tokens, which never hold spaces.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto
from skl2onnx import update_registered_converter
from skl2onnx.common.data_types import FloatTensorType

from ferry.training.text import TOKEN_PATTERN, TextVectorizer

# Fills the tokenizer's output past a row's last token; the token pattern never matches it.
PAD = "#"
# Always present, unlike en_US.UTF-8; lowercases A-Z only, as ``training.text.ascii_lower``.
LOCALE = "C"


def _shape(operator: Any) -> None:
    rows = operator.inputs[0].get_first_dimension()
    width = len(operator.raw_operator.vocabulary_)
    operator.outputs[0].type = FloatTensorType([rows, width])


class _Nodes:
    """Adds nodes and constants to the container under unique names."""

    def __init__(self, scope: Any, container: Any) -> None:
        self.scope, self.container = scope, container

    def const(self, values: np.ndarray) -> str:
        name = self.scope.get_unique_variable_name("text_const")
        kind = TensorProto.INT64 if values.dtype == np.int64 else TensorProto.FLOAT
        self.container.add_initializer(name, kind, list(values.shape), values.ravel().tolist())
        return name

    def add(self, op: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        out = out or self.scope.get_unique_variable_name(f"text_{op.lower()}")
        domain = attrs.pop("op_domain", "")
        name = self.scope.get_unique_operator_name(op)
        self.container.add_node(op, inputs, out, name=name, op_domain=domain, **attrs)
        return out


def ngram_pool(ngrams: list[tuple[str, ...]]) -> dict[str, Any]:
    """``TfIdfVectorizer`` attributes: n-grams grouped by length, each with its output column."""
    order = sorted(range(len(ngrams)), key=lambda i: (len(ngrams[i]), i))
    lengths = [len(ngrams[i]) for i in order]
    pool: list[str] = []
    starts: list[int] = []
    for n in range(1, max(lengths) + 1):
        starts.append(len(pool))
        for i in order:
            if len(ngrams[i]) == n:
                pool.extend(ngrams[i])
    return {
        "min_gram_length": min(lengths),
        "max_gram_length": max(lengths),
        "max_skip_count": 0,
        "mode": "TF",
        "pool_strings": pool,
        "ngram_counts": starts,
        "ngram_indexes": order,
    }


def _term_counts(nodes: _Nodes, column: str, vectorizer: TextVectorizer) -> str:
    flat = nodes.add("Reshape", [column, nodes.const(np.array([-1], dtype=np.int64))])
    lower = nodes.add("StringNormalizer", [flat], case_change_action="LOWER", locale=LOCALE)
    tokens = nodes.add(
        "Tokenizer",
        [lower],
        op_domain="com.microsoft",
        mark=0,
        mincharnum=1,
        pad_value=PAD,
        tokenexp=TOKEN_PATTERN,
    )
    return nodes.add("TfIdfVectorizer", [tokens], **ngram_pool(vectorizer.ngrams()))


def _sublinear(nodes: _Nodes, tf: str) -> str:
    # scikit-learn: 1 + log(tf) where tf > 0, and 0 elsewhere.
    one, zero = nodes.const(np.array([1.0], np.float32)), nodes.const(np.array([0.0], np.float32))
    logged = nodes.add("Log", [nodes.add("Max", [tf, one])])
    present = nodes.add("Cast", [nodes.add("Greater", [tf, zero])], to=TensorProto.FLOAT)
    return nodes.add("Add", [logged, present])


def _l2_rows(nodes: _Nodes, x: str, out: str) -> str:
    # Rows without a known token stay all zeros, as in scikit-learn's normalize().
    squares = nodes.add("Mul", [x, x])
    axis = nodes.const(np.array([1], dtype=np.int64))
    norm = nodes.add("Sqrt", [nodes.add("ReduceSum", [squares, axis], keepdims=1)])
    zero, one = nodes.const(np.array([0.0], np.float32)), nodes.const(np.array([1.0], np.float32))
    safe = nodes.add("Where", [nodes.add("Equal", [norm, zero]), one, norm])
    return nodes.add("Div", [x, safe], out)


def _convert(scope: Any, operator: Any, container: Any) -> None:
    vectorizer: TextVectorizer = operator.raw_operator
    nodes = _Nodes(scope, container)
    tf = _term_counts(nodes, operator.inputs[0].full_name, vectorizer)
    if vectorizer.sublinear_tf:
        tf = _sublinear(nodes, tf)
    idf = nodes.const(np.asarray(vectorizer.idf_, dtype=np.float32))
    _l2_rows(nodes, nodes.add("Mul", [tf, idf]), operator.outputs[0].full_name)


def register_text_converter() -> None:
    update_registered_converter(TextVectorizer, "FerryTextVectorizer", _shape, _convert)
