"""Evaluation of a trained model: metrics, threshold choice, fairness, gates, report and card.

Import from the modules (``ferry.evaluation.metrics``, ``.report``, ...): this package imports
nothing by itself, so the search's metric calls do not pay for matplotlib.
"""
