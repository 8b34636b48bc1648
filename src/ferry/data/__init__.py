"""Data: load (CSV, Parquet, built-in datasets), infer the schema, check quality, split."""

from ferry.data.builtin import BUILTIN_NAMES, fraud, load_builtin
from ferry.data.load import fingerprint, load_dataset
from ferry.data.quality import QualityIssue, QualityReport, check_quality
from ferry.data.schema import ColumnInfo, ColumnKind, feature_columns, infer_schema, infer_task
from ferry.data.split import Split, split_frame

__all__ = [
    "BUILTIN_NAMES",
    "ColumnInfo",
    "ColumnKind",
    "QualityIssue",
    "QualityReport",
    "Split",
    "check_quality",
    "feature_columns",
    "fingerprint",
    "fraud",
    "infer_schema",
    "infer_task",
    "load_builtin",
    "load_dataset",
    "split_frame",
]
