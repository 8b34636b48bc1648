"""``ferry import``: models trained elsewhere (ONNX, scikit-learn, LightGBM, XGBoost, PyTorch)
made into Ferry bundles, checked against the native model where there is one."""

from ferry.importing.bundle import ImportOutcome, ImportRequest, import_model

__all__ = ["ImportOutcome", "ImportRequest", "import_model"]
