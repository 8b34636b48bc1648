"""Specs the CLI writes or runs without a file: `ferry init` templates and the quick start."""

from __future__ import annotations

QUICKSTART = {
    "name": "fraud",
    "task": "classification",
    "data": {
        "source": "builtin:fraud",
        "target": "is_fraud",
        "rows": 20000,
        "sensitive": ["customer_segment"],
    },
    "split": {"test_size": 0.2, "valid_size": 0.15, "time_column": "timestamp"},
    "search": {
        "families": ["logistic", "hist_gb", "lightgbm", "extra_trees", "mlp"],
        "metric": "roc_auc",
        "folds": 3,
        "trials": 40,
        "time_budget_s": 60,
    },
    "constraints": {"max_latency_p99_ms": 5.0, "max_size_mb": 50},
    "threshold": {"strategy": "f1"},
    "gates": {"min": {"roc_auc": 0.8}},
}

TEMPLATE = """\
# ferry.yaml for {name}: every key below is optional unless marked required.
# Check it with `ferry train ferry.yaml`; a wrong key fails at start with the key named.
name: {name}                     # required; letters, digits, '.', '_', '-'
task: classification             # required; classification | regression

data:
  # required; a CSV/Parquet path, or builtin:fraud|breast_cancer|wine|digits|diabetes
  source: {source}
  target: {target}               # required; the column to predict
  # rows: 20000                  # rows for builtin generators (builtin:fraud)
  drop: []                       # columns never used as features (ids are dropped automatically)
  sensitive: []                  # kept out of the features; used for per-group fairness metrics

split:
  test_size: 0.2                 # held-out test share
  valid_size: 0.1                # validation share: the decision threshold is chosen on it
  # time_column: timestamp       # split by time (the latest rows are the test set)
  seed: 0

features:
  impute: median                 # median | mean
  missing_indicators: true       # add a 0/1 column for each column that had missing values
  clip_quantiles: [0.005, 0.995] # clip numeric outliers to training quantiles; null to disable
  encoding: onehot               # onehot | ordinal; unseen categories are tolerated
  max_categories: 30             # rarer categories are treated as unseen
  scale: true
  # pca_components: 10           # reduce dimensions (an int, or a variance share like 0.95)
  interactions: false            # pairwise products of features

search:
  families: [logistic, hist_gb, lightgbm]  # also: linear, extra_trees, random_forest, mlp
  metric: roc_auc                # classification: roc_auc pr_auc f1 accuracy balanced_accuracy
                                 # log_loss precision recall; regression: rmse mae r2
  folds: 3
  trials: 20
  time_budget_s: 120             # wall clock for the whole search
  class_weight: balanced         # balanced | none

constraints:                     # production budgets: candidates over them are never chosen
  max_latency_p99_ms: 10         # single-row p99 in ONNX Runtime
  max_size_mb: 100

threshold:
  strategy: f1                   # f1 | recall (binary tasks)
  # recall_target: 0.8           # with strategy recall: the highest threshold reaching it

gates:                           # promotion gates checked on the test set
  min: {{roc_auc: 0.75}}
  max: {{}}
  # max_fairness_gap: 0.2        # largest demographic-parity / equalized-odds difference
"""
