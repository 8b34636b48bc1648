"""Image requests to graph feeds: PNG/JPEG made by Pillow in memory, and every refusal."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ferry.core.bundle import ImagePreprocessing
from ferry.errors import ErrorCode, SignatureError
from ferry.serving.images import MEAN, STD, ImageInputs, pixels, read_image, to_input

GRAY = ImagePreprocessing(
    input="image", height=8, width=8, color="grayscale", mean=[0.5], std=[0.25]
)
RGB = GRAY.model_copy(update={"color": "rgb", "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.3, 0.4]})
LIMIT = 10_000_000


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def gradient(size: int = 8, mode: str = "L") -> Image.Image:
    values = (np.arange(size * size, dtype=np.uint8) * (255 // (size * size))).reshape(size, size)
    image = Image.fromarray(values)
    return image if mode == "L" else image.convert(mode)


def v2(data: list[Any], datatype: str = "BYTES", shape: list[int] | None = None) -> list[Any]:
    return [{"name": "image", "datatype": datatype, "shape": shape or [len(data)], "data": data}]


def refusal(call: Any, *args: Any) -> str:
    with pytest.raises(SignatureError) as info:
        call(*args)
    assert info.value.code == ErrorCode.INVALID_ARGUMENT
    return info.value.message


def test_png_bytes_tensor_is_scaled_and_normalised_exactly() -> None:
    image = gradient()
    feeds, rows = ImageInputs(GRAY).from_tensors(v2([b64(encode(image))]), LIMIT)
    expected = (np.asarray(image, dtype=np.float32) / 255 - 0.5) / 0.25
    assert rows == 1
    assert feeds["image"].shape == (1, 1, 8, 8)
    assert feeds["image"].dtype == np.float32
    np.testing.assert_allclose(feeds["image"][0, 0], expected, atol=1e-6)


def test_batch_of_images_with_column_shape() -> None:
    data = [b64(encode(gradient())), b64(encode(Image.new("L", (8, 8), 255)))]
    feeds, rows = ImageInputs(GRAY).from_tensors(v2(data, shape=[2, 1]), LIMIT)
    assert rows == 2
    np.testing.assert_allclose(feeds["image"][1], (1.0 - 0.5) / 0.25)


def test_jpeg_rgb_is_converted_to_grayscale_and_resized() -> None:
    image = gradient(32, "RGB")
    data = encode(image, "JPEG")
    feeds, _ = ImageInputs(GRAY).from_tensors(v2([b64(data)]), LIMIT)
    # The same functions prepare training images: decoding twice gives the same input.
    again = to_input(pixels(read_image(data, GRAY, "test"), GRAY)[np.newaxis], GRAY)
    assert feeds["image"].shape == (1, 1, 8, 8)
    np.testing.assert_array_equal(feeds["image"], again)


def test_grayscale_png_feeds_an_rgb_model_per_channel() -> None:
    white = encode(Image.new("L", (8, 8), 255))
    feeds, _ = ImageInputs(RGB).from_tensors(v2([b64(white)]), LIMIT)
    assert feeds["image"].shape == (1, 3, 8, 8)
    for channel, (mean, std) in enumerate(zip(RGB.mean, RGB.std, strict=True)):
        np.testing.assert_allclose(feeds["image"][0, channel], (1 - mean) / std, rtol=1e-6)


def test_records_accept_b64_objects_strings_and_data_urls() -> None:
    data = encode(gradient())
    instances = [
        {"image": {"b64": b64(data)}},
        {"image": b64(data)},
        {"image": "data:image/png;base64," + b64(data)},
    ]
    feeds, rows = ImageInputs(GRAY).from_records(instances)
    assert rows == 3
    np.testing.assert_array_equal(feeds["image"][0], feeds["image"][1])
    np.testing.assert_array_equal(feeds["image"][0], feeds["image"][2])


def test_records_accept_a_model_ready_nested_list() -> None:
    tensor = np.full((1, 8, 8), 0.25, dtype=np.float32)
    feeds, _ = ImageInputs(GRAY).from_records([{"image": tensor.tolist()}])
    np.testing.assert_array_equal(feeds["image"][0], tensor)


def test_raw_fp32_tensor_passes_through_unchanged() -> None:
    values = np.random.default_rng(0).normal(size=(2, 1, 8, 8)).astype(np.float32)
    inputs = v2(values.reshape(-1).tolist(), "FP32", [2, 1, 8, 8])
    feeds, rows = ImageInputs(GRAY).from_tensors(inputs, LIMIT)
    assert rows == 2
    np.testing.assert_array_equal(feeds["image"], values)


def test_raw_tensor_of_the_wrong_size_is_refused_with_both_shapes() -> None:
    inputs = v2([0.0] * 56, "FP32", [1, 1, 7, 8])
    message = refusal(ImageInputs(GRAY).from_tensors, inputs, LIMIT)
    assert "'image'" in message
    assert "[1, 1, 7, 8]" in message
    assert "[n, 1, 8, 8]" in message


def test_raw_tensor_with_nan_is_refused() -> None:
    inputs = v2([float("nan")] + [0.0] * 63, "FP32", [1, 1, 8, 8])
    assert "NaN" in refusal(ImageInputs(GRAY).from_tensors, inputs, LIMIT)


def test_truncated_png_is_refused_as_truncated() -> None:
    data = encode(gradient(64))
    message = refusal(ImageInputs(GRAY).from_tensors, v2([b64(data[: len(data) // 2])]), LIMIT)
    assert "input 'image', image 0" in message
    assert "truncated or corrupt" in message


@pytest.mark.parametrize("keep", [0.6, 0.05])
def test_truncated_jpeg_is_refused_as_truncated(keep: float) -> None:
    data = encode(gradient(64, "RGB"), "JPEG")
    cut = data[: int(len(data) * keep)]
    message = refusal(ImageInputs(GRAY).from_records, [{"image": {"b64": b64(cut)}}])
    assert "instance 0, 'image'" in message
    assert "JPEG data is truncated or corrupt" in message


def test_bytes_that_are_not_an_image_are_refused() -> None:
    message = refusal(ImageInputs(GRAY).from_tensors, v2([b64(b"hello, not a picture")]), LIMIT)
    assert "not an image" in message
    assert "PNG or JPEG" in message


def test_text_that_is_not_base64_is_refused() -> None:
    message = refusal(ImageInputs(GRAY).from_tensors, v2(["not base64 at all!"]), LIMIT)
    assert "not valid base64" in message


def test_empty_image_is_refused() -> None:
    assert "empty" in refusal(ImageInputs(GRAY).from_tensors, v2([""]), LIMIT)


def test_image_over_the_pixel_limit_is_refused_before_decoding() -> None:
    small_limit = GRAY.model_copy(update={"max_pixels": 100})
    message = refusal(ImageInputs(small_limit).from_tensors, v2([b64(encode(gradient(16)))]), LIMIT)
    assert "16x16 is 256 pixels" in message
    assert "limit of 100" in message


def test_sixteen_bit_image_is_refused_for_its_mode() -> None:
    deep = Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16))
    message = refusal(ImageInputs(GRAY).from_tensors, v2([b64(encode(deep))]), LIMIT)
    assert "pixel mode" in message
    assert "8-bit grayscale or RGB" in message


def test_format_outside_the_manifest_is_refused() -> None:
    message = refusal(ImageInputs(GRAY).from_tensors, v2([b64(encode(gradient(), "GIF"))]), LIMIT)
    assert "format GIF is not accepted" in message
    assert "PNG, JPEG" in message


def test_wrong_tensor_name_names_the_expected_one() -> None:
    inputs = [{"name": "pixels", "datatype": "BYTES", "shape": [1], "data": ["x"]}]
    message = refusal(ImageInputs(GRAY).from_tensors, inputs, LIMIT)
    assert "'image'" in message
    assert "['pixels']" in message


def test_bytes_tensor_of_two_columns_is_refused() -> None:
    data = b64(encode(gradient()))
    message = refusal(ImageInputs(GRAY).from_tensors, v2([data, data], shape=[1, 2]), LIMIT)
    assert "[n] or [n, 1]" in message


def test_record_with_an_extra_field_is_refused() -> None:
    record = {"image": {"b64": b64(encode(gradient()))}, "other": 1}
    assert "one field" in refusal(ImageInputs(GRAY).from_records, [record])


def test_record_list_of_the_wrong_shape_is_refused() -> None:
    message = refusal(ImageInputs(GRAY).from_records, [{"image": [[0.0] * 8] * 8}])
    assert "[1, 8, 8]" in message
    assert "[8, 8]" in message


def test_summaries_are_one_mean_and_std_per_image() -> None:
    batch = np.stack([np.zeros((1, 8, 8)), np.ones((1, 8, 8)) * 2]).astype(np.float32)
    seen = ImageInputs(GRAY).monitored({"image": batch})
    assert set(seen) == {MEAN, STD}
    np.testing.assert_allclose(seen[MEAN].reshape(-1), [0.0, 2.0])
    np.testing.assert_allclose(seen[STD].reshape(-1), [0.0, 0.0])
