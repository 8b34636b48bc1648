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

# The quick start's monitoring and retraining: short windows and an observation period of
# seconds, so the whole loop fits in a few minutes.
QUICKSTART_LOOP = {
    "monitoring": {
        "drift": {"window": 500, "alpha": 0.001, "k": 2, "n": 3},
        "alerts": [{"kind": "drift_share", "threshold": 0.3, "for_s": 0}],
        "evaluation_interval_s": 1,
    },
    "retraining": {
        "triggers": {"on_alerts": ["FerryDriftShareHigh"], "on_drift": False, "cooldown_s": 600},
        "production_data": {"holdout_share": 0.3, "min_holdout_rows": 300},
        "time_budget_s": 30,
        "gates": {"min_improvement": 0.0, "max_regression": 0.03},
        "rollout": {
            "mode": "canary",
            "canary_weight": 0.3,
            "observe_s": 20,
            "check_interval_s": 2,
            "min_labels": 200,
            "max_quality_drop": 0.03,
        },
    },
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
