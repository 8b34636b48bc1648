"""``ferry init`` writes a valid, commented ferry.yaml and never overwrites one silently."""

from __future__ import annotations

from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from conftest import Ferry


def test_init_writes_a_spec_and_refuses_to_overwrite_without_force(ferry: Ferry) -> None:
    spec = ferry.cwd / "ferry.yaml"
    first = ferry("init", "fraud").ok()
    assert "wrote ferry.yaml" in first.stdout
    text = spec.read_text()
    data = yaml.safe_load(text)
    assert data["name"] == "fraud" and data["task"] == "classification"
    assert data["data"] == {
        "source": "data.csv",
        "target": "target",
        "drop": [],
        "sensitive": [],
    }
    assert data["search"]["metric"] == "roc_auc" and data["gates"]["min"] == {"roc_auc": 0.75}
    assert text.count("#") > 20  # commented, as the README promises

    spec.write_text("name: edited\n")
    again = ferry("init", "fraud")
    assert again.returncode != 0
    line = again.single_error_line()
    assert "ferry.yaml already exists" in line and "--force" in line
    assert spec.read_text() == "name: edited\n"  # left alone

    forced = ferry("init", "churn", "--force", "--source", "customers.csv", "--target", "left")
    forced.ok()
    data = yaml.safe_load(spec.read_text())
    assert data["name"] == "churn"
    assert data["data"]["source"] == "customers.csv" and data["data"]["target"] == "left"
