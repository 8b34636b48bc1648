"""ONNX graphs for Ferry's own preprocessing steps, registered with skl2onnx.

Each graph mirrors the float arithmetic of its transformer in ``ferry.training.transformers``
step by step, which is what keeps the parity check within 1e-5.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto
from skl2onnx import update_registered_converter
from skl2onnx.algebra.onnx_ops import (
    OnnxAdd,
    OnnxCast,
    OnnxConcat,
    OnnxDiv,
    OnnxFloor,
    OnnxGather,
    OnnxGreaterOrEqual,
    OnnxIsNaN,
    OnnxMax,
    OnnxMin,
    OnnxMul,
    OnnxReshape,
    OnnxSub,
    OnnxUnsqueeze,
    OnnxWhere,
)
from skl2onnx.common.data_types import FloatTensorType

from ferry.export.text import register_text_converter
from ferry.training.transformers import SECONDS_PER_DAY, DatetimeParts, NumericPrep


def _numeric_shape(operator: Any) -> None:
    rows = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = FloatTensorType([rows, operator.raw_operator.output_width()])


def _f32(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def _numeric_convert(scope: Any, operator: Any, container: Any) -> None:
    prep: NumericPrep = operator.raw_operator
    opv = container.target_opset
    x = operator.inputs[0]
    isnan = OnnxIsNaN(x, op_version=opv)
    filled = OnnxWhere(isnan, _f32(prep.fill_), x, op_version=opv)
    clipped = OnnxMin(
        OnnxMax(filled, _f32(prep.lower_), op_version=opv), _f32(prep.upper_), op_version=opv
    )
    scaled = OnnxDiv(
        OnnxSub(clipped, _f32(prep.mean_), op_version=opv), _f32(prep.scale_), op_version=opv
    )
    if len(prep.indicator_columns_) == 0:
        result = OnnxCast(
            scaled, to=TensorProto.FLOAT, op_version=opv, output_names=operator.outputs[:1]
        )
    else:
        picked = OnnxGather(
            isnan, np.asarray(prep.indicator_columns_, dtype=np.int64), axis=1, op_version=opv
        )
        flags = OnnxCast(picked, to=TensorProto.FLOAT, op_version=opv)
        result = OnnxConcat(
            scaled, flags, axis=1, op_version=opv, output_names=operator.outputs[:1]
        )
    result.add_to(scope, container)


def _datetime_shape(operator: Any) -> None:
    rows = operator.inputs[0].get_first_dimension()
    width = operator.raw_operator.n_features_in_ * len(DatetimeParts.PARTS)
    operator.outputs[0].type = FloatTensorType([rows, width])


class _Doubles:
    """Float64 arithmetic on graph nodes with constants, written like the numpy code it mirrors."""

    def __init__(self, opv: int) -> None:
        self.opv = opv

    def c(self, value: float) -> np.ndarray:
        return np.array([value], dtype=np.float64)

    def floor_div(self, a: Any, b: float) -> Any:
        return OnnxFloor(OnnxDiv(a, self.c(b), op_version=self.opv), op_version=self.opv)

    def add(self, a: Any, b: Any) -> Any:
        return OnnxAdd(a, b, op_version=self.opv)

    def sub(self, a: Any, b: Any) -> Any:
        return OnnxSub(a, b, op_version=self.opv)

    def mul(self, a: Any, b: Any) -> Any:
        return OnnxMul(a, b, op_version=self.opv)


def _civil_month(d: _Doubles, days: Any) -> Any:
    z = d.add(days, d.c(719468.0))
    era = d.floor_div(z, 146097.0)
    doe = d.sub(z, d.mul(era, d.c(146097.0)))
    yoe_num = d.sub(
        d.add(d.sub(doe, d.floor_div(doe, 1460.0)), d.floor_div(doe, 36524.0)),
        d.floor_div(doe, 146096.0),
    )
    yoe = d.floor_div(yoe_num, 365.0)
    year_days = d.add(
        d.add(d.mul(yoe, d.c(365.0)), d.floor_div(yoe, 4.0)),
        d.mul(d.floor_div(yoe, 100.0), d.c(-1.0)),
    )
    doy = d.sub(doe, year_days)
    mp = d.floor_div(d.add(d.mul(doy, d.c(5.0)), d.c(2.0)), 153.0)
    wrap = OnnxCast(
        OnnxGreaterOrEqual(mp, d.c(10.0), op_version=d.opv), to=TensorProto.DOUBLE, op_version=d.opv
    )
    return d.sub(d.add(mp, d.c(3.0)), d.mul(wrap, d.c(12.0)))


def _datetime_convert(scope: Any, operator: Any, container: Any) -> None:
    opv = container.target_opset
    d = _Doubles(opv)
    t = OnnxCast(operator.inputs[0], to=TensorProto.DOUBLE, op_version=opv)
    days = d.floor_div(t, SECONDS_PER_DAY)
    hour = d.floor_div(d.sub(t, d.mul(days, d.c(SECONDS_PER_DAY))), 3600.0)
    shifted = d.add(days, d.c(3.0))
    dow = d.sub(shifted, d.mul(d.floor_div(shifted, 7.0), d.c(7.0)))
    axis = np.array([2], dtype=np.int64)
    parts = [OnnxUnsqueeze(p, axis, op_version=opv) for p in (hour, dow, _civil_month(d, days))]
    width = operator.raw_operator.n_features_in_ * len(DatetimeParts.PARTS)
    stacked = OnnxReshape(
        OnnxConcat(*parts, axis=2, op_version=opv),
        np.array([-1, width], dtype=np.int64),
        op_version=opv,
    )
    OnnxCast(
        stacked, to=TensorProto.FLOAT, op_version=opv, output_names=operator.outputs[:1]
    ).add_to(scope, container)


def _patch_tree_missing_flag() -> None:
    # skl2onnx 1.20 passes a Python bool for leaves' missing-value flag; current protobuf rejects
    # bools in int lists, which breaks every HistGradientBoosting export. Coerce it to int.
    from skl2onnx.common import tree_ensemble

    original = tree_ensemble.add_node
    if getattr(original, "_ferry_patched", False):
        return

    def add_node(*args: Any, **kwargs: Any) -> Any:
        flag = kwargs.get("nodes_missing_value_tracks_true")
        if flag is not None:
            kwargs["nodes_missing_value_tracks_true"] = int(flag)
        return original(*args, **kwargs)

    add_node._ferry_patched = True  # type: ignore[attr-defined]
    tree_ensemble.add_node = add_node


def register_converters() -> None:
    """Teach skl2onnx Ferry's transformers and LightGBM's models (idempotent)."""
    _patch_tree_missing_flag()
    register_text_converter()
    update_registered_converter(NumericPrep, "FerryNumericPrep", _numeric_shape, _numeric_convert)
    update_registered_converter(
        DatetimeParts, "FerryDatetimeParts", _datetime_shape, _datetime_convert
    )
    _register_lightgbm()


def round_down_f32(value: float) -> float:
    """The largest float32 <= value: for float32 x, ``x <= value`` iff ``x <= result``."""
    rounded = np.float32(value)
    if float(rounded) > value:
        rounded = np.nextafter(rounded, np.float32(-np.inf))
    return float(rounded)


class _ThresholdsRoundedDown:
    """Wrap a container so tree nodes keep LightGBM's ``x <= double`` split semantics.

    LightGBM compares features with float64 thresholds; ONNX trees hold float32 ones, and
    rounding a threshold to the nearest float32 sends inputs that equal the rounded value the
    wrong way. Rounding down keeps every float32 input on its original side.
    """

    def __init__(self, container: Any) -> None:
        self._container = container

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def add_node(self, op_type: str, *args: Any, **attrs: Any) -> Any:
        if op_type.startswith("TreeEnsemble") and "nodes_values" in attrs:
            modes = attrs.get("nodes_modes", [])
            attrs["nodes_values"] = [
                round_down_f32(v) if mode == "BRANCH_LEQ" else v
                for v, mode in zip(attrs["nodes_values"], modes, strict=False)
            ]
        return self._container.add_node(op_type, *args, **attrs)


def lightgbm_convert(scope: Any, operator: Any, container: Any) -> None:
    """onnxmltools' LightGBM converter with float32 thresholds rounded down, so splits keep
    LightGBM's float64 sides (the lab's export and ``ferry import`` both use it)."""
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

    convert_lightgbm(scope, operator, _ThresholdsRoundedDown(container))


def _register_lightgbm() -> None:
    from lightgbm import LGBMClassifier, LGBMRegressor
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    update_registered_converter(
        LGBMClassifier,
        "LightGbmLGBMClassifier",
        calculate_linear_classifier_output_shapes,
        lightgbm_convert,
        options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
    )
    update_registered_converter(
        LGBMRegressor,
        "LightGbmLGBMRegressor",
        calculate_linear_regressor_output_shapes,
        lightgbm_convert,
        options={"split": None},
    )
