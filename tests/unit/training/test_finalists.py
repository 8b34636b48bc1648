from ferry.training.finalists import _better, finalists
from ferry.training.search import Candidate, SearchResult


def cand(
    trial: int, family: str, score: float, std: float = 0.02, size: float = 1.0, within: bool = True
) -> Candidate:
    return Candidate(trial, family, {}, score, std, 0.1, 0.1, size, within_budget=within)


def test_finalists_are_each_familys_best_within_one_standard_error() -> None:
    ordered = [
        cand(0, "lightgbm", 0.90),
        cand(1, "lightgbm", 0.899),
        cand(2, "logistic", 0.895),
        cand(3, "hist_gb", 0.85),
        cand(4, "mlp", 0.91, within=False),
    ]
    ordered.sort(key=lambda c: -c.score)
    result = SearchResult("roc_auc", ordered, None, 1.0, 5)
    picked = finalists(result, folds=4)  # margin 0.02 / 2 = 0.01
    assert [c.trial for c in picked] == [0, 2]


def test_error_metrics_compare_in_the_right_direction() -> None:
    result = SearchResult(
        "rmse", [cand(0, "linear", 50.0, std=4.0), cand(1, "hist_gb", 51.0)], None, 1.0, 2
    )
    assert [c.family for c in finalists(result, folds=4)] == ["linear", "hist_gb"]


def test_validation_ties_go_to_the_smaller_graph() -> None:
    big, small = cand(0, "lightgbm", 0.9, size=5.0), cand(1, "logistic", 0.9, size=0.01)
    big.valid_score, small.valid_score = 0.9001, 0.8995
    assert _better(small, big, sign=1.0)
    small.valid_score = 0.85
    assert not _better(small, big, sign=1.0)
