"""Labelled production rows for a challenger: the prediction log joined with late labels.

The latest rows are held out for the champion/challenger comparison; the rest are added to the
spec's training split, weighted (and optionally by recency) through seeded stochastic
replication, since every model family accepts repeated rows but not all take sample weights.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ferry.core.spec import ProductionDataSpec
from ferry.monitoring.predlog import PredictionStore

TIME, VERSION = "__time", "__version"


@dataclass
class ProductionData:
    train: pd.DataFrame  # raw input columns and the target, replicated by weight
    holdout: pd.DataFrame  # the latest labelled rows, or empty when too few
    labelled: int  # rows that had a label
    unlabelled_labels: int  # labels whose id was never logged
    fingerprint: str

    def summary(self) -> dict[str, Any]:
        return {
            "labelled_rows": self.labelled,
            "training_rows": len(self.train),
            "holdout_rows": len(self.holdout),
            "labels_without_prediction": self.unlabelled_labels,
            "fingerprint": self.fingerprint,
        }


def _latest_labels(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    # A corrected label sent again replaces the first one.
    return {str(row["id"]): row["label"] for row in rows}


def _served_rows(
    rows: Iterable[dict[str, Any]], labels: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    for row in rows:
        # A shadow's answer was never returned: its row duplicates the primary's inputs.
        if row.get("role") == "shadow" or str(row.get("id")) not in labels:
            continue
        yield {
            **row["inputs"],
            "__id": str(row["id"]),
            TIME: float(row["time"]),
            VERSION: int(row["version"]),
        }


def labelled_frame(
    store: PredictionStore, model: str, target: str, since: float = 0.0
) -> tuple[pd.DataFrame, int]:
    """Logged rows that have a label, oldest first; and how many labels matched no row."""
    labels = _latest_labels(store.read_labels(model, since))
    frame = pd.DataFrame(list(_served_rows(store.read(model, since), labels)))
    if frame.empty:
        return frame, len(labels)
    frame = frame.drop_duplicates("__id", keep="last").sort_values(TIME, kind="stable")
    frame[target] = [labels[i] for i in frame["__id"]]
    return frame.drop(columns="__id").reset_index(drop=True), len(labels) - len(frame)


def _recent(frame: pd.DataFrame, spec: ProductionDataSpec, now: float) -> pd.DataFrame:
    if spec.since_s is not None:
        frame = frame[frame[TIME] >= now - spec.since_s]
    if spec.max_rows is not None:
        frame = frame.tail(spec.max_rows)
    return frame


def _weights(frame: pd.DataFrame, spec: ProductionDataSpec, now: float) -> np.ndarray:
    weights = np.full(len(frame), spec.weight)
    if spec.half_life_s is not None:
        age = np.maximum(now - frame[TIME].to_numpy(dtype=np.float64), 0.0)
        weights *= 0.5 ** (age / spec.half_life_s)
    return weights


def replicate(frame: pd.DataFrame, weights: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """Each row repeated floor(w) times, plus once more with probability w - floor(w)."""
    rng = np.random.default_rng(seed)
    whole = np.floor(weights)
    copies = (whole + (rng.random(len(weights)) < weights - whole)).astype(np.int64)
    return frame.loc[frame.index.repeat(copies)].reset_index(drop=True)


def fingerprint(frame: pd.DataFrame) -> str:
    if frame.empty:
        return hashlib.sha256(b"").hexdigest()
    hashed = pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


def production_data(
    store: PredictionStore,
    model: str,
    target: str,
    spec: ProductionDataSpec,
    *,
    now: float | None = None,
    seed: int = 0,
) -> ProductionData:
    now = time.time() if now is None else now
    since = now - spec.since_s if spec.since_s is not None else 0.0
    frame, unknown = labelled_frame(store, model, target, since)
    if frame.empty or not spec.use:
        return ProductionData(frame, frame, len(frame), unknown, fingerprint(frame))
    frame = _recent(frame, spec, now)
    held = int(len(frame) * spec.holdout_share)
    holdout = frame.tail(held) if held >= spec.min_holdout_rows else frame.iloc[:0]
    train = frame.iloc[: len(frame) - len(holdout)]
    weighted = replicate(train, _weights(train, spec, now), seed)
    return ProductionData(
        train=weighted.drop(columns=[TIME, VERSION]),
        holdout=holdout.reset_index(drop=True),
        labelled=len(frame),
        unlabelled_labels=unknown,
        fingerprint=fingerprint(frame),
    )
