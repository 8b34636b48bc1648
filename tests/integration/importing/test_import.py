"""``ferry import`` end to end for each format: build a model here, import it, check the bundle
verifies and registers, and serve a request in-process whose answers equal the native model's."""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper

from ferry.core.bundle import verify_bundle
from ferry.data.load import load_dataset
from ferry.errors import DataError, ExportError
from ferry.importing import ImportOutcome, ImportRequest, import_model
from ferry.registry import Registry

sys.path.insert(0, str(Path(__file__).parent))
from import_support import pickled, predict, records, served, torch_or_skip

pytestmark = pytest.mark.anyio
TARGET = "target"
ROWS = 5  # rows per served request


@pytest.fixture(autouse=True)
def _quiet() -> None:
    warnings.simplefilter("ignore")  # converters' and sklearn's version chatter


def features(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[TARGET])


def imported(registry: Registry, tmp_path: Path, path: Path, **options: Any) -> ImportOutcome:
    name = options.pop("name", "imported")
    outcome = import_model(
        ImportRequest(name, path, **options), tmp_path / "bundle", registry=registry, actor="t"
    )
    manifest = verify_bundle(outcome.bundle_dir)
    assert outcome.version is not None and outcome.version.version == 1
    assert registry.resolve(f"{name}:1").manifest["lineage"] == manifest.lineage.model_dump(
        mode="json"
    )
    return outcome


async def answers(registry: Registry, tmp_path: Path, rows: pd.DataFrame) -> list[Any]:
    async with served(registry, "imported:1", tmp_path / "cache") as app:
        return await predict(app.client, "imported", records(rows))


def assert_classes(got: list[Any], labels: list[str], proba: np.ndarray, index: np.ndarray) -> None:
    served_proba = np.asarray([[a["probabilities"][k] for k in labels] for a in got])
    np.testing.assert_allclose(served_proba, proba, atol=1e-5)
    assert [a["label"] for a in got] == [labels[i] for i in index]


# ---- each format ------------------------------------------------------------------------


async def test_sklearn_pipeline_with_categories(registry: Registry, tmp_path: Path) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = load_dataset("builtin:fraud", rows=3000, seed=1)
    x = frame.drop(columns=["is_fraud", "transaction_id", "timestamp"])
    categorical = ["merchant_category", "country", "device", "customer_segment"]
    numeric = [c for c in x.columns if c not in categorical]
    columns = ColumnTransformer(
        [
            ("n", make_pipeline(SimpleImputer(), StandardScaler()), numeric),
            ("c", OneHotEncoder(handle_unknown="ignore"), categorical),
        ]
    )
    model = make_pipeline(columns, LogisticRegression(max_iter=500)).fit(x, frame["is_fraud"])
    path = tmp_path / "pipeline.pkl"
    digest = pickled(model, path)
    outcome = imported(
        registry,
        tmp_path,
        path,
        trust=True,
        sha256=digest,
        sample="builtin:fraud",
        target="is_fraud",
        rows=2000,
    )
    manifest = outcome.manifest
    assert manifest.task == "binary" and manifest.labels == ["0", "1"]
    kinds = {s.name: s.kind for s in manifest.signature.inputs}
    assert kinds["country"] == "categorical" and kinds["amount"] == "numeric"
    assert manifest.parity["max_abs_diff"] <= 1e-5 and manifest.metrics.test["roc_auc"] > 0.6
    assert manifest.reference is not None and "country" in manifest.reference.categorical
    assert manifest.lineage.params["sha256"] == digest
    rows = x.dropna().iloc[:ROWS]
    got = await answers(registry, tmp_path, rows)
    assert_classes(got, ["0", "1"], model.predict_proba(rows), model.predict(rows))


async def test_pipeline_of_ferrys_own_transformers(registry: Registry, tmp_path: Path) -> None:
    """NumericPrep and DatetimeParts go through Ferry's converters; without a sample, the
    pipeline's encoders alone say which columns are categories and which are datetimes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from ferry.core.spec import FeatureSpec
    from ferry.data.schema import feature_columns, infer_schema
    from ferry.training.features import build_preprocessor, model_frame, plan_layout

    frame = load_dataset("builtin:fraud", rows=3000, seed=2)
    kinds = feature_columns(infer_schema(frame, "is_fraud"), "is_fraud")
    layout = plan_layout(frame, {str(k): v for k, v in kinds.items()}, 30)
    typed = model_frame(frame, layout)
    model = Pipeline(
        [("prep", build_preprocessor(layout, FeatureSpec())), ("model", LogisticRegression())]
    ).fit(typed, frame["is_fraud"])
    path = tmp_path / "ferry.joblib"
    digest = pickled(model, path)
    outcome = imported(registry, tmp_path, path, trust=True, sha256=digest)
    kinds_seen = {s.name: s.kind for s in outcome.manifest.signature.inputs}
    assert kinds_seen["timestamp"] == "datetime" and kinds_seen["device"] == "categorical"
    assert outcome.manifest.reference is None
    rows = frame.dropna().iloc[:ROWS].drop(columns=["is_fraud", "transaction_id"])
    sent = records(rows.assign(timestamp=rows["timestamp"].map(lambda t: t.isoformat())))
    async with served(registry, "imported:1", tmp_path / "cache") as app:
        got = await predict(app.client, "imported", sent)
    expected = model_frame(rows, layout)
    assert_classes(got, ["0", "1"], model.predict_proba(expected), model.predict(expected))


async def test_lightgbm_booster_text_file(
    registry: Registry, tmp_path: Path, cancer: pd.DataFrame
) -> None:
    import lightgbm

    x = features(cancer)
    booster = lightgbm.train(
        {"objective": "binary", "verbose": -1}, lightgbm.Dataset(x, cancer[TARGET]), 40
    )
    path = tmp_path / "model.txt"
    booster.save_model(path)
    outcome = imported(registry, tmp_path, path, sample="builtin:breast_cancer", target=TARGET)
    assert outcome.manifest.parity["label_mismatches"] == 0
    assert all(s.nullable for s in outcome.manifest.signature.inputs)  # boosters take NaN
    rows = x.iloc[:ROWS]
    p1 = booster.predict(rows)
    got = await answers(registry, tmp_path, rows)
    assert_classes(got, ["0", "1"], np.column_stack([1 - p1, p1]), (p1 > 0.5).astype(int))


async def test_xgboost_multiclass_booster_with_labels(registry: Registry, tmp_path: Path) -> None:
    import xgboost

    wine = load_dataset("builtin:wine")
    x = features(wine)
    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 3}
    booster = xgboost.train(params, xgboost.DMatrix(x, wine[TARGET]), 20)
    path = tmp_path / "model.json"
    booster.save_model(path)
    names = ["barolo", "grignolino", "barbera"]
    outcome = imported(registry, tmp_path, path, sample="builtin:wine", labels=names)
    assert outcome.manifest.task == "multiclass" and outcome.manifest.labels == names
    assert outcome.manifest.parity["max_abs_diff"] <= 1e-5
    rows = x.iloc[[0, 70, 150, 1, 100]]
    proba = booster.predict(xgboost.DMatrix(rows))
    got = await answers(registry, tmp_path, rows)
    assert_classes(got, names, proba, np.argmax(proba, axis=1))
    assert {a["label"] for a in got} == set(names)


async def test_onnx_file_from_skl2onnx_named_by_the_sample(
    registry: Registry, tmp_path: Path, cancer: pd.DataFrame
) -> None:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = features(cancer)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    model.fit(x.to_numpy(), cancer[TARGET])
    # A ZipMap output and one [n, 30] matrix input: both reshaped to the bundle's conventions.
    graph = convert_sklearn(model, initial_types=[("X", FloatTensorType([None, 30]))])
    path = tmp_path / "model.onnx"
    path.write_bytes(graph.SerializeToString())
    outcome = imported(registry, tmp_path, path, sample="builtin:breast_cancer", target=TARGET)
    manifest = outcome.manifest
    assert [s.name for s in manifest.signature.inputs] == list(x.columns)
    assert manifest.labels == ["0", "1"] and manifest.metrics.test["roc_auc"] > 0.95
    assert manifest.parity == {}
    assert any("parity not checked" in note for note in outcome.notes)
    rows = x.iloc[:ROWS]
    got = await answers(registry, tmp_path, rows)
    assert_classes(got, ["0", "1"], model.predict_proba(rows.to_numpy()), model.predict(rows))


async def test_lightgbm_regression(registry: Registry, tmp_path: Path) -> None:
    import lightgbm

    diabetes = load_dataset("builtin:diabetes")
    x = features(diabetes)
    booster = lightgbm.train(
        {"objective": "regression", "verbose": -1}, lightgbm.Dataset(x, diabetes[TARGET]), 30
    )
    path = tmp_path / "model.txt"
    booster.save_model(path)
    outcome = imported(registry, tmp_path, path, sample="builtin:diabetes", target=TARGET)
    assert outcome.manifest.task == "regression" and outcome.manifest.labels is None
    assert {"rmse", "mae", "r2"} <= set(outcome.manifest.metrics.test)
    rows = x.iloc[:ROWS]
    got = await answers(registry, tmp_path, rows)
    served_values = np.asarray([a["prediction"] for a in got])
    np.testing.assert_allclose(served_values, booster.predict(rows), rtol=1e-5, atol=1e-3)


def _net(torch: Any, x: pd.DataFrame) -> Any:
    """A small classifier that standardises its inputs in its first layer, as trained nets do
    (raw inputs in the thousands would make float32 rounding, not the export, the difference)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(30, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    mean = torch.tensor(x.mean().to_numpy(), dtype=torch.float32)
    std = torch.tensor(x.std().to_numpy(), dtype=torch.float32)
    with torch.no_grad():
        net[0].bias -= (net[0].weight / std) @ mean
        net[0].weight /= std
    return net.eval()


async def test_torchscript_module_with_logits(
    registry: Registry, tmp_path: Path, cancer: pd.DataFrame
) -> None:
    torch = torch_or_skip()
    net = _net(torch, features(cancer))
    path = tmp_path / "model.pt"
    torch.jit.script(net).save(str(path))
    outcome = imported(
        registry,
        tmp_path,
        path,
        input_shape=[30],
        task="classification",
        scores="logits",
        sample="builtin:breast_cancer",
        target=TARGET,
    )
    assert outcome.manifest.parity["label_mismatches"] == 0
    rows = features(cancer).iloc[:ROWS]
    with torch.no_grad():
        proba = torch.softmax(net(torch.tensor(rows.to_numpy(), dtype=torch.float32)), 1)
    got = await answers(registry, tmp_path, rows)
    assert_classes(got, ["0", "1"], proba.numpy(), proba.numpy().argmax(axis=1))


def test_pickled_torch_module_needs_trust(tmp_path: Path, cancer: pd.DataFrame) -> None:
    torch = torch_or_skip()
    path = tmp_path / "module.pt"
    torch.save(_net(torch, features(cancer)), path)
    request = ImportRequest("net", path, input_shape=[30], task="classification")
    with pytest.raises(ExportError, match=r"pickled torch module.*--trust and --sha256"):
        import_model(request, tmp_path / "refused")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    trusted = ImportRequest(
        "net",
        path,
        input_shape=[30],
        task="classification",
        trust=True,
        sha256=digest,
        sample="builtin:breast_cancer",
        target=TARGET,
    )
    outcome = import_model(trusted, tmp_path / "bundle")
    assert outcome.manifest.parity["label_mismatches"] == 0


# ---- trust ------------------------------------------------------------------------------


class Tripwire:
    """A pickle that makes a directory when it loads: proof of whether loading happened."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.mkdir, (str(self.marker),)


def test_pickles_load_only_with_trust_and_the_right_hash(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "model.pkl"
    digest = pickled(Tripwire(marker), path)
    refusals = [
        ({}, r"runs any code it contains.*--trust and --sha256 HEX.*sha256sum"),
        ({"trust": True}, r"only with --sha256 HEX"),
        ({"trust": True, "sha256": "0" * 64}, rf"--sha256 does not match.*the file has {digest}"),
        ({"sha256": digest}, r"--trust and --sha256"),
    ]
    for options, message in refusals:
        with pytest.raises(ExportError, match=message):
            import_model(ImportRequest("m", path, **options), tmp_path / "out")
        assert not marker.exists()
    with pytest.raises(ExportError, match="not a fitted scikit-learn estimator"):
        import_model(ImportRequest("m", path, trust=True, sha256=digest.upper()), tmp_path / "out")
    assert marker.exists()  # vouched for: it loaded (and ran)


# ---- failures ---------------------------------------------------------------------------


def _disagreeing_graph() -> onnx.ModelProto:
    """A hand-built classifier graph: sigmoid of each row's mean, nothing like the model."""
    mean = helper.make_node("ReduceMean", ["input"], ["m"], axes=[1], keepdims=1)
    score = helper.make_node("Sigmoid", ["m"], ["score"])
    graph = helper.make_graph(
        [mean, score],
        "wrong",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 30])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_parity_failure_is_reported_with_the_difference(
    registry: Registry, tmp_path: Path, cancer: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn.linear_model import LogisticRegression

    from ferry.importing import pipeline

    model = LogisticRegression(max_iter=3000).fit(features(cancer), cancer[TARGET])
    path = tmp_path / "model.pkl"
    digest = pickled(model, path)
    monkeypatch.setattr(pipeline, "_convert", lambda *_: _disagreeing_graph())
    request = ImportRequest("bc", path, trust=True, sha256=digest, sample="builtin:breast_cancer")
    with pytest.raises(ExportError, match=r"parity check failed on 569 rows: max \|Δprobability\|"):
        import_model(request, tmp_path / "bundle", registry=registry, actor="t")
    assert registry.list_models() == []
    assert not (tmp_path / "bundle" / "manifest.json").exists()


def test_errors_name_the_flag_and_the_fix(tmp_path: Path, cancer: pd.DataFrame) -> None:
    import lightgbm

    booster = lightgbm.train(
        {"objective": "binary", "verbose": -1},
        lightgbm.Dataset(features(cancer), cancer[TARGET]),
        5,
    )
    path = tmp_path / "model.txt"
    booster.save_model(path)
    odd = tmp_path / "model.bin"
    odd.write_bytes(b"\0")
    signature = tmp_path / "sig.json"
    signature.write_text('{"inputs": [{"name": "a", "dtype": "float32"}]}')
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"path": odd}, ExportError, r"suffix.*pass --format"),
        (
            {"sample": "builtin:wine"},
            DataError,
            r"--sample 'builtin:wine' lacks column.*--signature",
        ),
        (
            {"signature": signature},
            ExportError,
            r"--signature lists 1 inputs but the model takes 30",
        ),
        ({"task": "regression"}, ExportError, r"--task regression does not fit.*classification"),
        ({"target": TARGET}, DataError, r"--target names a column of --sample; pass --sample"),
        ({"sample": "builtin:breast_cancer", "target": "y"}, DataError, r"--target 'y' is not"),
        ({"format": "keras"}, ExportError, r"--format 'keras' is not one of"),
    ]
    for options, error, message in cases:
        request = ImportRequest("m", **{"path": path, **options})
        with pytest.raises(error, match=message):
            import_model(request, tmp_path / "out")


# ---- no sample --------------------------------------------------------------------------


async def test_without_a_sample_drift_is_off_and_the_server_still_monitors(
    registry: Registry, tmp_path: Path, cancer: pd.DataFrame
) -> None:
    import xgboost

    from ferry.monitoring.metrics import Metrics, scrape
    from ferry.monitoring.monitor import Monitor, MonitorConfig
    from ferry.monitoring.predlog import LogConfig, PredictionLog

    x = features(cancer)
    booster = xgboost.train(
        {"objective": "binary:logistic"}, xgboost.DMatrix(x, cancer[TARGET]), 10
    )
    path = tmp_path / "model.ubj"
    booster.save_model(path)
    outcome = imported(registry, tmp_path, path)
    manifest = outcome.manifest
    assert manifest.reference is None and manifest.parity == {}
    assert manifest.lineage.params["drift"].startswith("off: imported without --sample")
    assert any("drift monitoring is off" in note for note in outcome.notes)
    async with served(registry, "imported:1", tmp_path / "cache") as app:
        metrics = Metrics()
        log = PredictionLog(LogConfig(tmp_path / "predictions"))
        monitor = Monitor(metrics, MonitorConfig(), log)
        app.plane.on_infer.append(monitor.on_infer)
        for _ in range(3):
            got = await predict(app.client, "imported", records(x.iloc[:ROWS]))
        await monitor.flush()
        text = scrape(metrics)[0].decode()
    p1 = booster.predict(xgboost.DMatrix(x.iloc[:ROWS]))
    assert_classes(got, ["0", "1"], np.column_stack([1 - p1, p1]), (p1 > 0.5).astype(int))
    assert 'ferry_prediction_class_total{label="0",model="imported",version="1"} 15.0' in text
    assert 'model="imported"' not in "".join(
        line for line in text.splitlines() if line.startswith("ferry_drift")
    )
