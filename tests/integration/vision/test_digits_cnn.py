"""Image models through the lab: builtin:digits and an image folder -> CNN -> ONNX bundle with
parity, report and registry; then INT8 quantization, accepted and refused, through the CLI."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from onnx import numpy_helper
from PIL import Image
from typer.testing import CliRunner, Result

from ferry.core.bundle import verify_bundle
from ferry.core.spec import parse_spec
from ferry.errors import DataError
from ferry.lab import TrainOutcome, holdout, train
from ferry.registry import Registry, open_registry
from ferry.serving.images import ImageInputs, to_input

if not os.environ.get("CI"):  # CI installs the dev extra (torch) and must run these
    pytest.importorskip("torch", reason="PyTorch is not installed: pip install -e '.[torch]'")

SPEC: dict[str, Any] = {
    "name": "digits",
    "task": "classification",
    "data": {"source": "builtin:digits", "rows": 900},
    "model": {"kind": "cnn", "epochs": 4, "patience": 2},
    "search": {"metric": "accuracy"},
}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vision-home")


@pytest.fixture(scope="module")
def registry(home: Path) -> Iterator[Registry]:
    reg = open_registry(f"sqlite:///{home}/registry.db", str(home / "artifacts"))
    yield reg
    reg.close()


@pytest.fixture(scope="module")
def digits(home: Path, registry: Registry) -> TrainOutcome:
    return train(parse_spec(SPEC), home / "run", registry=registry, actor="test")


def test_bundle_declares_an_image_input_and_its_preprocessing(digits: TrainOutcome) -> None:
    manifest = verify_bundle(digits.bundle_dir)
    (image,) = manifest.signature.inputs
    assert (image.kind, image.dtype, image.shape) == ("image", "float32", [-1, 1, 8, 8])
    assert manifest.task == "multiclass"
    assert manifest.labels == [str(d) for d in range(10)]
    prep = manifest.preprocessing
    assert prep is not None
    assert (prep.height, prep.width, prep.color, prep.input) == (8, 8, "grayscale", "image")
    assert 0 < prep.mean[0] < 1 and 0 < prep.std[0] < 1
    assert manifest.lineage.family == "cnn" and manifest.lineage.params["epochs_run"] <= 4
    assert digits.version is not None and digits.version.version == 1


def test_parity_and_accuracy(digits: TrainOutcome) -> None:
    parity = digits.manifest.parity
    assert parity["max_abs_diff"] <= 1e-4
    assert parity["label_mismatches"] == 0
    assert parity["rows"] == len(digits.evaluation.y_true)
    assert digits.evaluation.metrics["accuracy"] > 0.85
    assert digits.search.best is not None and digits.search.best.family == "cnn"


def test_served_pngs_are_the_inputs_the_model_was_tested_on(digits: TrainOutcome) -> None:
    from ferry.vision.data import load_images, split_images

    prep = digits.manifest.preprocessing
    assert prep is not None
    test = split_images(load_images(digits.spec, prep), digits.spec.split).test
    encoded = []
    for pixels in test.pixels[:20]:
        buffer = io.BytesIO()
        Image.fromarray(pixels[:, :, 0]).save(buffer, format="PNG")
        encoded.append(base64.b64encode(buffer.getvalue()).decode())
    tensor = {"name": "image", "datatype": "BYTES", "shape": [20], "data": encoded}
    feeds, _ = ImageInputs(prep).from_tensors([tensor], 10_000_000)
    np.testing.assert_array_equal(feeds["image"], to_input(test.pixels[:20], prep))


def test_report_shows_per_class_metrics_and_misclassified_images(digits: TrainOutcome) -> None:
    page = digits.report.html.read_text()
    for anchor in ("summary", "per-class", "training", "misclassified"):
        assert f'id="{anchor}"' in page
    assert "test images are misclassified" in page or "classified correctly" in page
    assert page.count("data:image/png;base64,") >= 3
    assert "http" not in page.split("<main>", 1)[1].replace("http-equiv", "")


def test_training_is_seeded(tmp_path: Path) -> None:
    small = {**SPEC, "data": {"source": "builtin:digits", "rows": 300}, "model": {"epochs": 2}}
    first = train(parse_spec(small), tmp_path / "a")
    second = train(parse_spec(small), tmp_path / "b")
    assert first.manifest.metrics.test == second.manifest.metrics.test
    assert (first.bundle_dir / "model.onnx").read_bytes() == (
        second.bundle_dir / "model.onnx"
    ).read_bytes()


def _folder(root: Path, per_class: int = 16) -> Path:
    """Red squares and blue squares at random places, as PNG and JPEG files."""
    rng = np.random.default_rng(0)
    for index, (name, channel) in enumerate((("red", 0), ("blue", 2))):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 40, size=(24, 24, 3), dtype=np.uint8)
            y, x = rng.integers(0, 12, size=2)
            pixels[y : y + 12, x : x + 12, channel] = 255
            fmt = "PNG" if (i + index) % 2 else "JPEG"
            Image.fromarray(pixels).save(root / name / f"{i}.{fmt.lower()}", format=fmt)
    (root / "red" / "notes.txt").write_text("not an image, skipped")
    return root


def test_a_folder_of_rgb_images_trains_a_binary_model(tmp_path: Path) -> None:
    source = _folder(tmp_path / "squares")
    spec = parse_spec(
        {
            "name": "squares",
            "task": "classification",
            "data": {"source": f"folder:{source}"},
            "split": {"test_size": 0.25, "valid_size": 0.25},
            "model": {"epochs": 3, "image_size": 16, "filters": 8},
        }
    )
    outcome = train(spec, tmp_path / "run")
    prep = outcome.manifest.preprocessing
    assert prep is not None and prep.color == "rgb" and len(prep.mean) == 3
    assert outcome.manifest.signature.inputs[0].shape == [-1, 3, 16, 16]
    assert outcome.manifest.task == "binary"
    assert outcome.manifest.labels == ["blue", "red"]
    assert outcome.manifest.parity["label_mismatches"] == 0


def test_a_folder_with_one_class_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "one"
    (source / "only").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(source / "only" / "a.png")
    spec = parse_spec(
        {"name": "one", "task": "classification", "data": {"source": f"folder:{source}"}}
    )
    with pytest.raises(DataError, match="at least 2 sub-folders"):
        train(spec, tmp_path / "run")


# ---- quantization ------------------------------------------------------------------------


def test_dynamic_quantization_scores_both_graphs(digits: TrainOutcome) -> None:
    from ferry.export.quantize import quantize, quantized_manifest

    rows = holdout(digits.spec, digits.manifest)
    graph = (digits.bundle_dir / "model.onnx").read_bytes()
    result = quantize(graph, "dynamic", rows, digits.manifest, "accuracy")
    assert result.before["accuracy"] == pytest.approx(digits.evaluation.metrics["accuracy"])
    assert abs(result.drop) < 0.05
    assert result.size_mb_int8 < result.size_mb_fp32
    manifest = quantized_manifest(digits.manifest, result, 1)
    assert manifest.lineage.parent_version == 1 and manifest.lineage.quantization == "dynamic"
    assert manifest.metrics.quantization["accuracy_fp32"] == result.before["accuracy"]
    assert manifest.preprocessing == digits.manifest.preprocessing


@pytest.fixture
def ferry_cli(home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    from ferry.cli import console as console_module
    from ferry.cli.app import _register_groups, app

    _register_groups()
    monkeypatch.setattr(console_module.console, "_width", 200)
    spec_path = tmp_path / "ferry.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    env = {
        "FERRY_HOME": str(home),
        "FERRY_ACTOR": "test",
        "FERRY_REGISTRY_URL": "",
        "FERRY_ARTIFACTS_URL": "",
    }

    def run(*args: str) -> Result:
        return CliRunner().invoke(app, [*args, "--spec", str(spec_path)], env=env)

    return run


def test_cli_registers_a_static_int8_version_with_its_parent(
    digits: TrainOutcome, registry: Registry, ferry_cli: Any
) -> None:
    result = ferry_cli("export", "digits:1", "--quantize", "static")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "registered: digits:2" in result.output
    version = registry.get("digits", 2)
    assert version.parent_version == 1
    assert version.manifest["lineage"]["quantization"] == "static"
    assert {"accuracy_fp32", "accuracy_int8", "drop"} <= set(
        version.manifest["metrics"]["quantization"]
    )


def _broken(graph: bytes, *_: Any) -> bytes:
    """A graph whose last layer always votes for class 0: a quantization gone wrong."""
    model = onnx.load_from_string(graph)
    last = model.graph.initializer[-1]
    bias = numpy_helper.to_array(last).copy()
    bias[:] = 0
    bias[..., 0] = 1e4
    last.CopyFrom(numpy_helper.from_array(bias.astype(np.float32), last.name))
    return model.SerializeToString()


def test_cli_refuses_an_int8_model_that_loses_too_much(
    digits: TrainOutcome, registry: Registry, ferry_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ferry.export.quantize as quantize_module

    before = [v.version for v in registry.list_versions("digits")]
    monkeypatch.setattr(quantize_module, "quantize_graph", _broken)
    result = ferry_cli("export", "digits:1", "--quantize", "dynamic")
    assert result.exit_code == 1, (result.output, result.exception)
    assert "refused: accuracy drops by" in result.output
    assert "export.max_quantization_drop=0.01" in result.output
    assert [v.version for v in registry.list_versions("digits")] == before
