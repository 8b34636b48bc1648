"""A LightGBM fraud model trained outside Ferry, as a data scientist's own script would, saved
as LightGBM's text model: ``ferry import`` turns it into a bundle (see README.md).

    python train_elsewhere.py --out fraud_lgbm.txt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightgbm

from ferry.data.load import load_dataset

# Numeric columns only: the booster sees numbers, so the bundle's inputs are these columns.
FEATURES = [
    "amount",
    "customer_age",
    "account_age_days",
    "distance_from_home_km",
    "txn_count_24h",
    "card_present",
]
TARGET = "is_fraud"


def train(rows: int, rounds: int) -> lightgbm.Booster:
    frame = load_dataset("builtin:fraud", rows=rows, seed=7)
    x = frame[FEATURES].astype(float)  # card_present: True/False as 1/0; NaN stays missing
    params = {"objective": "binary", "learning_rate": 0.05, "num_leaves": 15, "verbose": -1}
    return lightgbm.train(params, lightgbm.Dataset(x, frame[TARGET]), num_boost_round=rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("fraud_lgbm.txt"))
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    booster = train(args.rows, args.rounds)
    booster.save_model(args.out)
    print(f"wrote {args.out} ({booster.num_trees()} trees on {booster.num_feature()} features)")


if __name__ == "__main__":
    main()
