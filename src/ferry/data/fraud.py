"""A seeded generator of card transactions with rare, learnable fraud.

Everything is vectorised numpy so millions of rows take seconds. The label comes from a logistic
of several features with interactions plus unobserved noise, so a good model reaches a ROC-AUC of
roughly 0.9 but no single column gives the label away.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ferry.errors import DataError

DEFAULT_ROWS = 20_000
START = np.datetime64("2024-01-01T00:00:00", "ns")
DAYS = 90

MERCHANTS = (
    "grocery", "restaurant", "fuel", "online_retail", "entertainment",
    "pharmacy", "electronics", "travel", "gambling", "crypto",
)  # fmt: skip
_MERCHANT_SHARE = np.array([0.25, 0.18, 0.12, 0.15, 0.08, 0.07, 0.07, 0.05, 0.02, 0.01])
_MERCHANT_LOG_AMOUNT = np.array([0.0, -0.3, 0.1, 0.3, 0.0, -0.4, 1.1, 1.3, 0.6, 1.0])
_MERCHANT_RISK = np.array([-0.6, -0.5, -0.3, 0.5, 0.0, -0.4, 0.8, 0.5, 0.9, 1.3])

COUNTRIES = ("US", "GB", "DE", "FR", "CA", "ES", "BR", "NG")
_COUNTRY_SHARE = np.array([0.45, 0.15, 0.10, 0.08, 0.08, 0.06, 0.05, 0.03])
_COUNTRY_RISK = np.array([0.0, 0.0, -0.1, 0.0, 0.0, 0.2, 0.5, 0.8])
_COUNTRY_MISSING = 0.02

DEVICES = ("pos", "mobile", "desktop", "unknown")
_DEVICE_SHARE = np.array([0.55, 0.28, 0.14, 0.03])
_DEVICE_MISSING = 0.03

# Shoppers sleep: few transactions at night, peaks at lunch and in the early evening.
_HOUR_WEIGHT = np.array(
    [0.6, 0.4, 0.3, 0.25, 0.25, 0.4, 0.9, 1.6, 2.4, 3.0, 3.4, 3.8,
     4.4, 4.2, 3.6, 3.4, 3.6, 4.2, 4.6, 4.4, 3.6, 2.6, 1.6, 1.0]
)  # fmt: skip
_LOG_AMOUNT_MEAN, _LOG_AMOUNT_SD = 3.4, 0.9
_LOG_DISTANCE_MEAN, _LOG_DISTANCE_SD = 1.6, 1.3
# Chosen so that about 2% of unshifted transactions are fraud.
_INTERCEPT = -6.85


@dataclass
class _Draws:
    """The raw random arrays; categories stay integer codes (-1 = missing) until the frame."""

    seconds: np.ndarray
    segment_b: np.ndarray
    merchant: np.ndarray
    amount: np.ndarray
    country: np.ndarray
    device: np.ndarray
    card_present: np.ndarray
    customer_age: np.ndarray
    account_age_days: np.ndarray
    distance: np.ndarray
    txn_count: np.ndarray


def fraud(
    rows: int = DEFAULT_ROWS, seed: int = 0, shift: float = 0.0, concept: float = 0.0
) -> pd.DataFrame:
    """Card transactions sorted by time, with the binary target ``is_fraud`` (about 2% ones).

    ``shift`` moves the data the way drift does in production: amounts and distances grow by
    ``shift`` standard deviations (on the log scale) and more payments are card-not-present.
    ``concept`` adds a new fraud pattern of that strength (a ring cashing out on mobile devices
    in the small hours with many transactions), which a model trained before it cannot know.
    """
    _check_arguments(rows, shift)
    rng = np.random.default_rng(seed)
    draws = _draw(rng, rows, shift)
    frame = _frame(draws, _transaction_ids(rng, rows))
    frame["is_fraud"] = _labels(rng, draws, concept)
    return frame


def _check_arguments(rows: int, shift: float) -> None:
    if isinstance(rows, bool) or not isinstance(rows, int | np.integer) or rows < 1:
        raise DataError(
            f"fraud(rows=...) needs a positive whole number of rows; received {rows!r}. "
            "Pass e.g. rows=20000."
        )
    if not np.isfinite(shift):
        raise DataError(f"fraud(shift=...) must be a finite number; received {shift!r}.")


def _draw(rng: np.random.Generator, rows: int, shift: float) -> _Draws:
    seconds = _seconds_since_start(rng, rows)
    segment_b = rng.random(rows) < 0.3
    merchant, amount = _purchase(rng, rows, shift)
    device, card_present = _channel(rng, rows, shift)
    age, account_age = _customer(rng, segment_b)
    return _Draws(
        seconds=seconds,
        segment_b=segment_b,
        merchant=merchant,
        amount=amount,
        country=_codes(rng, _COUNTRY_SHARE, rows, _COUNTRY_MISSING),
        device=device,
        card_present=card_present,
        customer_age=age,
        account_age_days=account_age,
        distance=_distance(rng, card_present, shift),
        txn_count=rng.poisson(rng.gamma(2.0, 1.0 + 0.25 * shift, rows)),
    )


def _frame(draws: _Draws, ids: pd.api.extensions.ExtensionArray) -> pd.DataFrame:
    seconds = draws.seconds.astype("timedelta64[s]").astype("timedelta64[ns]")
    columns = {
        "transaction_id": ids,
        "timestamp": START + seconds,
        "amount": draws.amount,
        "merchant_category": _strings(draws.merchant, MERCHANTS),
        "country": _strings(draws.country, COUNTRIES),
        "card_present": draws.card_present,
        "customer_age": draws.customer_age,
        "account_age_days": draws.account_age_days,
        "distance_from_home_km": draws.distance,
        "txn_count_24h": draws.txn_count,
        "device": _strings(draws.device, DEVICES),
        "customer_segment": _strings(draws.segment_b.astype(np.int64), ("A", "B")),
    }
    # copy=False: the arrays are ours alone, and copying millions of rows doubles peak memory.
    return pd.DataFrame(columns, copy=False)


def _seconds_since_start(rng: np.random.Generator, rows: int) -> np.ndarray:
    weekday = np.arange(DAYS) % 7  # 2024-01-01 was a Monday
    day_weight = np.where(weekday >= 5, 1.2, 1.0)
    day = rng.choice(DAYS, size=rows, p=day_weight / day_weight.sum())
    hour = rng.choice(24, size=rows, p=_HOUR_WEIGHT / _HOUR_WEIGHT.sum())
    seconds = day * 86_400 + hour * 3_600 + rng.integers(0, 3_600, rows)
    # Logs arrive in time order; time-based splits and drift windows rely on that.
    return np.sort(seconds)


def _transaction_ids(rng: np.random.Generator, rows: int) -> pd.api.extensions.ExtensionArray:
    # A random start per seed keeps ids of different batches apart, like a real id sequence.
    first = int(rng.integers(10**9, 9 * 10**9))
    numbers = pa.array(np.arange(first, first + rows, dtype=np.int64)).cast(pa.large_string())
    prefix, separator = pa.scalar("tx_", pa.large_string()), pa.scalar("", pa.large_string())
    return pd.array(pc.binary_join_element_wise(prefix, numbers, separator), dtype="str")


def _codes(rng: np.random.Generator, share: np.ndarray, rows: int, missing: float) -> np.ndarray:
    codes = rng.choice(len(share), size=rows, p=share / share.sum())
    codes[rng.random(rows) < missing] = -1
    return codes


def _strings(codes: np.ndarray, labels: tuple[str, ...]) -> pd.api.extensions.ExtensionArray:
    """Strings from integer codes; code -1 becomes a missing value."""
    indices = pa.array(codes.astype(np.int32), mask=codes < 0)
    decoded = pa.DictionaryArray.from_arrays(indices, pa.array(labels)).cast(pa.large_string())
    # Plain strings, not pandas categoricals, so the frame has the dtypes a CSV read gives.
    return pd.array(decoded, dtype="str")


def _purchase(rng: np.random.Generator, rows: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    merchant = rng.choice(len(MERCHANTS), size=rows, p=_MERCHANT_SHARE)
    log_amount = rng.normal(_LOG_AMOUNT_MEAN, _LOG_AMOUNT_SD, rows) + _MERCHANT_LOG_AMOUNT[merchant]
    amount = np.exp(log_amount + shift * _LOG_AMOUNT_SD)
    outlier = rng.random(rows) < 5e-4
    amount[outlier] *= rng.uniform(30.0, 200.0, int(outlier.sum()))
    return merchant, np.round(amount, 2)


def _channel(rng: np.random.Generator, rows: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    share = _DEVICE_SHARE.copy()
    share[0] *= max(0.1, 1.0 - 0.15 * shift)  # drift: fewer in-store payments
    device = _codes(rng, share, rows, 0.0)
    # In-store payments nearly always present the card; a few phone taps do too.
    present_rate = np.where(device == 0, 0.97, np.where(device == 1, 0.08, 0.0))
    card_present = rng.random(rows) < present_rate
    device[rng.random(rows) < _DEVICE_MISSING] = -1
    return device, card_present


def _customer(rng: np.random.Generator, segment_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = len(segment_b)
    age = np.clip(rng.normal(np.where(segment_b, 34.0, 46.0), 14.0), 18, 92).round()
    age[rng.random(rows) < 0.02] = np.nan
    # Segment B skews towards newer accounts, so a model can treat the segments differently.
    account_age = np.floor(rng.gamma(1.4, np.where(segment_b, 350.0, 600.0)))
    return age, account_age


def _distance(rng: np.random.Generator, card_present: np.ndarray, shift: float) -> np.ndarray:
    rows = len(card_present)
    log_distance = rng.normal(_LOG_DISTANCE_MEAN, _LOG_DISTANCE_SD, rows)
    distance = np.exp(log_distance + shift * _LOG_DISTANCE_SD)
    abroad = rng.random(rows) < 0.005
    distance[abroad] = rng.uniform(2_000.0, 12_000.0, int(abroad.sum()))
    # Online payments often carry no usable location.
    unknown = rng.random(rows) < np.where(card_present, 0.01, 0.10)
    distance[unknown] = np.nan
    return np.round(distance, 1)


def _labels(rng: np.random.Generator, draws: _Draws, concept: float = 0.0) -> np.ndarray:
    logit = fraud_logit(draws) + concept * new_pattern(draws)
    logit += rng.normal(0.0, 0.6, len(draws.seconds))
    probability = 1.0 / (1.0 + np.exp(-logit))
    return (rng.random(len(probability)) < probability).astype(np.int64)


def fraud_logit(draws: _Draws) -> np.ndarray:
    """The noise-free log-odds of fraud; exposed so tests can measure the best achievable AUC."""
    hour = (draws.seconds % 86_400) // 3_600
    night = (hour < 6).astype(float)
    not_present = (~draws.card_present).astype(float)
    amount_z = (np.log(draws.amount) - _LOG_AMOUNT_MEAN) / _LOG_AMOUNT_SD
    distance_z = (np.log(draws.distance + 0.1) - _LOG_DISTANCE_MEAN) / _LOG_DISTANCE_SD
    distance_z = np.nan_to_num(distance_z)
    account_age, age = draws.account_age_days, draws.customer_age
    new_account = (account_age < 30).astype(float)
    logit = (
        _INTERCEPT
        + 1.4 * night
        + 0.9 * np.clip(amount_z, -2.0, 4.0)
        + 0.7 * np.clip(distance_z, -2.0, 4.0)
        + 1.3 * not_present
        + 1.6 * new_account
        + 0.5 * ((account_age >= 30) & (account_age < 180))
        + 0.4 * (np.minimum(draws.txn_count, 10) - 2.0)
        + 0.4 * ((age > 72) | np.isnan(age))
        + _category_risk(draws)
    )
    # Interactions: fraudsters work at night online, cash out new accounts, spend far from home.
    logit += 1.0 * night * not_present
    logit += 1.0 * new_account * (amount_z > 1.0)
    logit += 0.8 * (distance_z > 1.0) * not_present
    return logit


def new_pattern(draws: _Draws) -> np.ndarray:
    """The log-odds a new fraud ring adds (``concept`` scales it): mobile, small hours, busy
    cards, mid-sized amounts: rows the original logit finds unremarkable."""
    hour = (draws.seconds % 86_400) // 3_600
    mobile = draws.device == DEVICES.index("mobile")
    small_hours = (hour >= 1) & (hour < 7)
    busy = draws.txn_count >= 3
    return 4.0 * (mobile & small_hours & busy) + 1.5 * (mobile & busy)


def _category_risk(draws: _Draws) -> np.ndarray:
    country_risk = np.where(draws.country >= 0, _COUNTRY_RISK[draws.country], 0.3)
    return _MERCHANT_RISK[draws.merchant] + country_risk + 0.15 * draws.segment_b
