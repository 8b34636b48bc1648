"""The image-model and export sections of ferry.yaml, and the manifest's preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ferry.core.bundle import BundleManifest, ImagePreprocessing
from ferry.core.signature import InputSpec, OutputSpec, Signature
from ferry.core.spec import parse_spec
from ferry.errors import SpecError

DIGITS = {
    "name": "digits",
    "task": "classification",
    "data": {"source": "builtin:digits"},
    "model": {"kind": "cnn", "epochs": 3},
}


def spec_error(data: dict) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    return str(info.value)


def test_digits_cnn_gets_defaults_and_a_label_target() -> None:
    spec = parse_spec(DIGITS)
    assert spec.model is not None
    assert spec.model.epochs == 3
    assert spec.model.size(8) == (8, 8)
    assert spec.data.target == "label"
    assert spec.export.max_quantization_drop == 0.01
    assert spec.export.quantization_metric == "accuracy"


def test_an_image_folder_implies_a_cnn(tmp_path: Path) -> None:
    spec = parse_spec(
        {"name": "pets", "task": "classification", "data": {"source": f"folder:{tmp_path}"}}
    )
    assert spec.model is not None and spec.model.kind == "cnn"


def test_digits_without_a_model_stays_tabular() -> None:
    spec = parse_spec(
        {
            "name": "d",
            "task": "classification",
            "data": {"source": "builtin:digits", "target": "target"},
        }
    )
    assert spec.model is None


def test_image_size_accepts_a_side_or_height_and_width() -> None:
    spec = parse_spec({**DIGITS, "model": {"kind": "cnn", "image_size": [12, 16]}})
    assert spec.model is not None and spec.model.size(8) == (12, 16)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"task": "regression"}, "task: a cnn classifies images"),
        ({"data": {"source": "data.csv", "target": "y"}}, "data.source: a cnn trains on images"),
        ({"model": {"kind": "cnn", "epochs": 0}}, "model.epochs"),
        ({"model": {"kind": "cnn", "image_size": 2}}, "model.image_size"),
        ({"model": {"kind": "cnn", "epoch": 3}}, "model.epoch: unknown key"),
        ({"model": {"kind": "rnn"}}, "model.kind"),
        ({"split": {"valid_size": 0}}, "split.valid_size: a cnn stops early"),
        ({"export": {"quantization_metric": "rmse"}}, "export.quantization_metric"),
        ({"export": {"max_quantization_drop": 2}}, "export.max_quantization_drop"),
    ],
)
def test_errors_name_the_key(change: dict, key: str) -> None:
    assert key in spec_error({**DIGITS, **change})


def test_export_and_an_absent_model_leave_the_spec_hash_alone() -> None:
    tabular = {
        "name": "w",
        "task": "classification",
        "data": {"source": "builtin:wine", "target": "target"},
    }
    stricter = {**tabular, "export": {"max_quantization_drop": 0.0}}
    assert parse_spec(tabular).spec_hash() == parse_spec(stricter).spec_hash()
    assert (
        parse_spec(DIGITS).spec_hash() != parse_spec({**DIGITS, "model": {"epochs": 4}}).spec_hash()
    )


def test_manifest_without_preprocessing_still_reads() -> None:
    signature = Signature(
        inputs=[InputSpec(name="x", dtype="float32")],
        outputs=[OutputSpec(name="prediction", dtype="float32", shape=[-1, 1])],
    )
    old = BundleManifest(name="m", task="regression", signature=signature).model_dump(mode="json")
    del old["preprocessing"]
    del old["metrics"]["quantization"]
    manifest = BundleManifest.model_validate(json.loads(json.dumps(old)))
    assert manifest.preprocessing is None
    assert manifest.metrics.quantization == {}


def test_preprocessing_round_trips_with_channels() -> None:
    prep = ImagePreprocessing(
        input="image", height=8, width=8, color="rgb", mean=[0.1] * 3, std=[0.2] * 3
    )
    again = ImagePreprocessing.model_validate_json(prep.model_dump_json())
    assert again == prep
    assert again.channels == 3
    assert again.formats == ["PNG", "JPEG"]
