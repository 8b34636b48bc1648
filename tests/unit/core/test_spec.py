from pathlib import Path

import pytest

from ferry.core.spec import load_spec, parse_spec
from ferry.errors import SpecError

MINIMAL = {
    "name": "m",
    "task": "classification",
    "data": {"source": "builtin:wine", "target": "target"},
}


def with_(**changes: object) -> dict:
    spec = {k: (dict(v) if isinstance(v, dict) else v) for k, v in MINIMAL.items()}
    spec.update(changes)
    return spec


def test_minimal_spec_gets_defaults() -> None:
    spec = parse_spec(MINIMAL)
    assert spec.search.metric == "roc_auc"
    assert spec.split.test_size == 0.2
    assert spec.features.encoding == "onehot"


def test_unknown_key_is_named_with_fix() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(with_(data={"source": "x", "target": "y", "targte": "z"}))
    assert "data.targte: unknown key" in str(info.value)
    assert "spelling" in str(info.value)


def test_missing_required_key_is_named() -> None:
    with pytest.raises(SpecError, match=r"data\.target: required key is missing"):
        parse_spec(with_(data={"source": "x"}))


def test_bad_value_shows_received() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(with_(split={"test_size": 1.5}))
    assert "split.test_size" in str(info.value)
    assert "1.5" in str(info.value)


def test_metric_must_fit_task() -> None:
    with pytest.raises(SpecError, match=r"search\.metric: 'rmse' does not fit task"):
        parse_spec(with_(search={"metric": "rmse"}))


def test_unknown_family_lists_choices() -> None:
    with pytest.raises(SpecError, match="unknown \\['xgb'\\]; choose from"):
        parse_spec(with_(search={"families": ["xgb"]}))


def test_unsafe_name_rejected() -> None:
    with pytest.raises(SpecError, match="invalid model name"):
        parse_spec(with_(name="../etc"))


def test_gate_on_unknown_metric_rejected() -> None:
    with pytest.raises(SpecError, match="gates: unknown metric 'auc'"):
        parse_spec(with_(gates={"min": {"auc": 0.9}}))


def test_regression_default_metric() -> None:
    spec = parse_spec(with_(task="regression"))
    assert spec.search.metric == "rmse"


def test_load_spec_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found; create one with `ferry init"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec(listy)


def test_spec_hash_is_stable_and_sensitive() -> None:
    assert parse_spec(MINIMAL).spec_hash() == parse_spec(MINIMAL).spec_hash()
    assert parse_spec(MINIMAL).spec_hash() != parse_spec(with_(name="other")).spec_hash()
