"""Batch scoring: ``ferry predict`` beside pandas + the native scikit-learn pipeline.

On ``builtin:fraud`` (5,000,000 rows by default, written to Parquet in a temporary directory)
with the model the lab picks for fraud (HistGradientBoosting, trained on 50,000 other rows,
exported to an ONNX bundle), each side runs in its own process:

- ``ferry``      ``ferry.distributed.batch.score_file``, what ``ferry predict`` runs: Parquet
                 chunks -> Arrow/numpy feeds -> the graph up to the trees in ONNX Runtime ->
                 the trees in the compiled kernel (``--engine auto``) -> every input column plus
                 ``prediction`` and ``probability_*`` written to a Parquet file, chunk by chunk;
- ``ferry-ids``  the same with ``--columns transaction_id`` (ids and outputs only);
- ``ferry-ort``  the same as ``ferry`` with ``--engine onnxruntime``: the whole graph in ONNX
                 Runtime, to show what the compiled trees bring;
- ``reference``  ``pandas.read_parquet`` of the whole file, the lab's feature typing done with
                 vectorised pandas, and the fitted scikit-learn pipeline's ``predict_proba`` in
                 one call; nothing is written;
- ``reference-lab`` the same with the lab's own typing (``training.features.model_frame``, a
                 Python loop over categorical values), as the lab feeds the native pipeline;
                 for information: the ratio that counts is taken against ``reference``.

Reported: rows/s of each side (best of ``--repeats`` interleaved rounds, all runs listed), the
ratio ferry / reference (target >= 5x), the peak RSS of each process (target for ferry
<= 1 GB), and ferry's peak RSS on a 1,000,000-row file to show it does not grow with the file.
The reference's probabilities are compared with ferry's output (max |difference|).
Results go to ``benchmarks/results/batch.{md,json}``.

    python benchmarks/batch.py                         # ~6 min on a quiet 2-core machine
    python benchmarks/batch.py --rows 1000000 --small-rows 200000 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results"
TARGET_RATIO = 5.0
TARGET_RSS_MB = 1024.0
TRAIN_ROWS = 50_000


@dataclass
class Run:
    side: str
    rows: int
    seconds: float
    peak_rss_mb: float
    baseline_rss_mb: float  # after imports, before any work
    chunks: int = 0
    parts_s: dict[str, float] = field(default_factory=dict)  # where the time went
    engine: str = ""  # ferry's sides: what ran the graph

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


@dataclass
class Outcome:
    runs: list[Run] = field(default_factory=list)
    parity_max_abs_diff: float | None = None
    model: dict[str, Any] = field(default_factory=dict)

    def best(self, side: str, rows: int) -> Run:
        return min((r for r in self.runs if r.side == side and r.rows == rows), key=_seconds)


def _seconds(run: Run) -> float:
    return run.seconds


def _rss_mb() -> float:
    """This process's peak RSS. Not ``getrusage``'s ru_maxrss: Linux carries the parent's RSS
    at fork into a child's ru_maxrss across exec, and the parent holds the training data."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---- the measured sides (each in its own process) ----------------------------------------------


def ferry_side(args: argparse.Namespace) -> dict[str, Any]:
    from ferry.distributed.batch import score_file

    baseline = _rss_mb()
    keep = ["transaction_id"] if args.side == "ferry-ids" else None
    engine = "onnxruntime" if args.side == "ferry-ort" else "auto"
    report = score_file(
        args.bundle, args.input, args.output, chunk_rows=args.chunk_rows, keep=keep, engine=engine
    )
    return {
        "rows": report.rows,
        "seconds": report.seconds,
        "chunks": report.chunks,
        "baseline_rss_mb": baseline,
        "engine": report.engine,
    }


def typed_frame(frame: pd.DataFrame, layout: dict[str, list[str]]) -> pd.DataFrame:
    """The lab's ``model_frame``, vectorised: what the native pipeline takes."""
    from ferry.core.signature import MISSING_CATEGORY
    from ferry.training.features import epoch_seconds

    typed: dict[str, Any] = {}
    for column in [*layout["numeric"], *layout["boolean"]]:
        typed[column] = frame[column].to_numpy(dtype=np.float32, na_value=np.nan)
    for column in layout["datetime"]:
        typed[column] = epoch_seconds(frame[column])
    for column in layout["categorical"]:
        values = frame[column].fillna(MISSING_CATEGORY).replace("", MISSING_CATEGORY)
        typed[column] = values.to_numpy(dtype=object)
    return pd.DataFrame(typed)


def lab_frame(frame: pd.DataFrame, layout: dict[str, list[str]]) -> pd.DataFrame:
    from ferry.training.features import FeatureLayout, model_frame

    return model_frame(frame, FeatureLayout(**layout))


def reference_side(args: argparse.Namespace) -> dict[str, Any]:
    import sklearn  # noqa: F401  (imported before the baseline, as ferry's side imports its own)

    model = pickle.loads(args.model.read_bytes())
    layout = json.loads(args.layout.read_text())
    typing = lab_frame if args.side == "reference-lab" else typed_frame
    baseline = _rss_mb()
    started = time.perf_counter()
    frame = pd.read_parquet(args.input)
    read = time.perf_counter()
    typed = typing(frame, layout)
    converted = time.perf_counter()
    proba = model.predict_proba(typed)
    done = time.perf_counter()
    np.save(args.output, proba[:, 1].astype(np.float32))  # after the clock: for the parity check
    parts = {"read": read - started, "typing": converted - read, "predict_proba": done - converted}
    return {
        "rows": len(frame),
        "seconds": done - started,
        "baseline_rss_mb": baseline,
        "parts_s": parts,
    }


def child(args: argparse.Namespace) -> None:
    measured = ferry_side(args) if args.side.startswith("ferry") else reference_side(args)
    measured["peak_rss_mb"] = _rss_mb()
    print(json.dumps(measured))


# ---- the driver ---------------------------------------------------------------------------------


def make_data(directory: Path, rows: int, small_rows: int, seed: int) -> tuple[Path, Path]:
    from ferry.data.fraud import fraud

    frame = fraud(rows, seed=seed)
    big, small = directory / f"fraud-{rows}.parquet", directory / f"fraud-{small_rows}.parquet"
    frame.to_parquet(big)
    frame.iloc[:small_rows].to_parquet(small)
    return big, small


def train_model(directory: Path, seed: int) -> dict[str, Any]:
    """The lab's own steps, keeping the fitted pipeline beside the bundle it exports."""
    from ferry.core.spec import parse_spec
    from ferry.lab import SilentObserver, evaluate, export, fit_best, prepare, run_search

    spec = parse_spec(
        {
            "name": "fraud",
            "task": "classification",
            "data": {
                "source": "builtin:fraud",
                "target": "is_fraud",
                "rows": TRAIN_ROWS,
                "sensitive": ["customer_segment"],
            },
            "split": {"time_column": "timestamp", "seed": seed},
            "search": {"families": ["hist_gb"], "trials": 1, "folds": 2, "seed": seed},
        }
    )
    prep = prepare(spec)
    result = run_search(spec, prep, SilentObserver())
    model = fit_best(spec, prep, result)
    evaluation = evaluate(spec, prep, model)
    manifest = export(spec, prep, model, result, evaluation, directory / "bundle")
    (directory / "model.pkl").write_bytes(pickle.dumps(model))
    (directory / "layout.json").write_text(json.dumps(asdict(prep.layout)))
    estimator = model.steps[-1][1]
    return {
        "estimator": type(estimator).__name__,
        "trees": int(getattr(estimator, "n_iter_", 0)),
        "inputs": len(manifest.signature.inputs),
        "test_roc_auc": evaluation.metrics.get("roc_auc"),
        "onnx_mb": (directory / "bundle" / "model.onnx").stat().st_size / 1e6,
    }


def measure(side: str, data: Path, work: Path, chunk_rows: int) -> Run:
    name = f"{side}.npy" if side.startswith("reference") else f"{side}-{data.stem}.parquet"
    output = work / name
    command = [
        sys.executable,
        __file__,
        "--side",
        side,
        "--input",
        str(data),
        "--output",
        str(output),
        "--bundle",
        str(work / "bundle"),
        "--model",
        str(work / "model.pkl"),
        "--layout",
        str(work / "layout.json"),
        "--chunk-rows",
        str(chunk_rows),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{side} failed:\n{done.stderr[-3000:]}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    return Run(side=side, **measured)


def parity(work: Path, big: Path) -> float:
    ours = pq.read_table(work / f"ferry-{big.stem}.parquet", columns=["probability_1"])
    theirs = np.load(work / "reference.npy")
    return float(np.max(np.abs(ours.column(0).to_numpy() - theirs)))


def run_all(args: argparse.Namespace, console: Console) -> tuple[Outcome, dict[str, Any]]:
    outcome = Outcome()
    with tempfile.TemporaryDirectory(prefix="ferry-batch-bench-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        big, small = make_data(work, args.rows, args.small_rows, args.seed)
        timing = {"data_s": time.perf_counter() - started}
        outcome.model = train_model(work, args.seed)
        timing["train_s"] = time.perf_counter() - started - timing["data_s"]
        console.print(f"data {args.rows:,} rows in {timing['data_s']:.1f} s; model {outcome.model}")
        # Interleaved, so a burst of load from elsewhere hits both sides alike.
        for _ in range(args.repeats):
            for side in ("ferry", "reference", "ferry-ids", "ferry-ort", "reference-lab"):
                outcome.runs.append(measure(side, big, work, args.chunk_rows))
                console.print(_line(outcome.runs[-1]))
        outcome.runs.append(measure("ferry", small, work, args.chunk_rows))  # memory at 1/5
        console.print(_line(outcome.runs[-1]))
        outcome.parity_max_abs_diff = parity(work, big)
        timing["trees"] = tree_timing(work / "bundle", small)
    return outcome, timing


def _line(run: Run) -> str:
    return (
        f"{run.side:<13} {run.rows:>10,} rows {run.seconds:7.2f} s "
        f"{run.rows_per_s:>12,.0f} rows/s  peak RSS {run.peak_rss_mb:7.0f} MB  {_parts(run)}"
    )


def _parts(run: Run) -> str:
    parts = ", ".join(f"{name} {seconds:.2f}" for name, seconds in run.parts_s.items())
    return parts or run.engine


def summary(outcome: Outcome, args: argparse.Namespace) -> dict[str, Any]:
    ferry = outcome.best("ferry", args.rows)
    reference = outcome.best("reference", args.rows)
    ids = outcome.best("ferry-ids", args.rows)
    small = outcome.best("ferry", args.small_rows)
    lab = outcome.best("reference-lab", args.rows)
    ort_side = outcome.best("ferry-ort", args.rows)
    ratio = ferry.rows_per_s / reference.rows_per_s
    peak = max(r.peak_rss_mb for r in outcome.runs if r.side.startswith("ferry"))
    return {
        "ferry_rows_per_s": ferry.rows_per_s,
        "ferry_ids_rows_per_s": ids.rows_per_s,
        "reference_rows_per_s": reference.rows_per_s,
        "ratio": ratio,
        "ratio_ids": ids.rows_per_s / reference.rows_per_s,
        "ferry_ort_rows_per_s": ort_side.rows_per_s,
        "ratio_ort": ort_side.rows_per_s / reference.rows_per_s,
        "engine": ferry.engine,
        "reference_lab_rows_per_s": lab.rows_per_s,
        "ratio_vs_reference_lab": ferry.rows_per_s / lab.rows_per_s,
        "ratio_target_met": ratio >= TARGET_RATIO,
        "ferry_peak_rss_mb": {
            str(args.rows): ferry.peak_rss_mb,
            str(args.small_rows): small.peak_rss_mb,
        },
        "reference_peak_rss_mb": reference.peak_rss_mb,
        "memory_target_met": peak <= TARGET_RSS_MB,
    }


def print_table(outcome: Outcome, console: Console) -> None:
    table = Table(title="Batch scoring: ferry predict vs pandas + scikit-learn")
    for header in ("side", "rows", "s", "rows/s", "peak RSS MB", "RSS after imports MB"):
        table.add_column(header, justify="left" if header == "side" else "right")
    for run in outcome.runs:
        table.add_row(
            run.side,
            f"{run.rows:,}",
            f"{run.seconds:.2f}",
            f"{run.rows_per_s:,.0f}",
            f"{run.peak_rss_mb:.0f}",
            f"{run.baseline_rss_mb:.0f}",
        )
    console.print(table)


def write_results(out: Path, outcome: Outcome, meta: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    payload = {**meta, "runs": [asdict(r) | {"rows_per_s": r.rows_per_s} for r in outcome.runs]}
    (out / "batch.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    s = meta["summary"]
    peaks = s["ferry_peak_rss_mb"]
    lines = [
        "# Batch scoring benchmark",
        "",
        f"- date: {meta['date']}",
        f"- machine: {meta['machine']['cores']} cores, {meta['machine']['platform']};"
        f" load average {meta['load_before']} before, {meta['load_after']} after",
        f"- data: builtin:fraud, {meta['rows']:,} rows in one Parquet file (written by pandas),"
        f" and its first {meta['small_rows']:,} rows in another",
        f"- model: {outcome.model}",
        f"- ferry: `score_file` (= `ferry predict`), chunks of {meta['chunk_rows']:,} rows,"
        " the graph up to the trees in ONNX Runtime (one thread per core), the trees in the"
        " compiled kernel, output Parquet with every input column + prediction +"
        " probabilities; `ferry-ids` keeps only transaction_id; `ferry-ort` runs the whole"
        " graph in ONNX Runtime",
        "- reference: pandas.read_parquet + vectorised typing + native pipeline predict_proba,"
        " nothing written; reference-lab types with the lab's model_frame instead",
        f"- each side in its own process; best of {meta['repeats']} interleaved rounds of all five",
        "",
        f"**ferry {s['ferry_rows_per_s']:,.0f} rows/s vs reference"
        f" {s['reference_rows_per_s']:,.0f} rows/s: {s['ratio']:.2f}x"
        f" (target {TARGET_RATIO:g}x: {'met' if s['ratio_target_met'] else 'NOT met'});"
        f" ids only {s['ratio_ids']:.2f}x; whole graph in ONNX Runtime {s['ratio_ort']:.2f}x;"
        f" against the lab's own typing (reference-lab)"
        f" {s['ratio_vs_reference_lab']:.2f}x**",
        "",
        f"**ferry peak RSS {peaks[str(meta['rows'])]:.0f} MB at {meta['rows']:,} rows,"
        f" {peaks[str(meta['small_rows'])]:.0f} MB at {meta['small_rows']:,} rows"
        f" (target {TARGET_RSS_MB:.0f} MB: {'met' if s['memory_target_met'] else 'NOT met'});"
        f" reference {s['reference_peak_rss_mb']:.0f} MB**",
        "",
        f"Parity: max |probability_1 ferry - reference| = {meta['parity_max_abs_diff']:.2e}",
        "",
        "| side | rows | seconds | rows/s | peak RSS MB | RSS after imports MB"
        " | parts (s) or engine |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.side} | {r.rows:,} | {r.seconds:.2f} | {r.rows_per_s:,.0f} |"
        f" {r.peak_rss_mb:.0f} | {r.baseline_rss_mb:.0f} | {_parts(r)} |"
        for r in outcome.runs
    ]
    lines += ["", *analysis(outcome, meta)]
    (out / "batch.md").write_text("\n".join(lines) + "\n")


def analysis(outcome: Outcome, meta: dict[str, Any]) -> list[str]:
    """Where the time goes: the compiled trees against ONNX Runtime's, in and out of context."""
    rows = meta["rows"]
    ferry, ort_side = outcome.best("ferry", rows), outcome.best("ferry-ort", rows)
    reference = outcome.best("reference", rows)
    trees = meta.get("trees", {})
    lines = [
        "Where the time goes (best runs):",
        "",
        f"- the whole file with the whole graph in ONNX Runtime (`ferry-ort`):"
        f" {ort_side.seconds:.2f} s; with the trees compiled (`ferry`): {ferry.seconds:.2f} s"
        f" ({ort_side.seconds / ferry.seconds:.2f}x)",
        f"- reference: predict_proba {reference.parts_s.get('predict_proba', 0):.2f} s of"
        f" {reference.seconds:.2f} s",
    ]
    if trees:
        lines.append(
            f"- the tree ensemble alone on {trees['rows']:,} prepared rows, one thread:"
            f" ONNX Runtime {trees['onnxruntime_s']:.3f} s, compiled kernel"
            f" {trees['kernel_s']:.3f} s ({trees['onnxruntime_s'] / trees['kernel_s']:.1f}x);"
            f" the graph before the trees {trees['prefix_s']:.3f} s; max |difference| of the"
            f" scores {trees['max_abs_diff']:.1e}"
        )
    return lines


def tree_timing(bundle: Path, data: Path, rows: int = 500_000) -> dict[str, Any]:
    """The tree ensemble alone, ONNX Runtime against the compiled kernel, on the same rows."""
    import onnx
    import pyarrow.parquet as pq
    from onnx import helper

    from ferry.core.bundle import verify_bundle
    from ferry.distributed.compiled import compile_graph
    from ferry.distributed.feeds import batch_feeds
    from ferry.distributed.quickscore import raw_scores
    from ferry.serving.runtime import OnnxModel

    manifest = verify_bundle(bundle)
    batch = pq.read_table(data).slice(0, rows).combine_chunks().to_batches()[0]
    compiled, _ = compile_graph(bundle / "model.onnx")
    assert compiled is not None
    feeds = batch_feeds(manifest.signature, batch, codes=compiled.categories)
    prefix_s, prepared = _best_of(lambda: compiled.prefix.run(feeds)[compiled.features])
    model = onnx.load(str(bundle / "model.onnx"))
    node = next(n for n in model.graph.node if n.op_type.startswith("TreeEnsemble"))
    graph = helper.make_graph(
        [node], "trees",
        [helper.make_tensor_value_info(node.input[0], onnx.TensorProto.FLOAT, None)],
        [
            helper.make_tensor_value_info(node.output[0], onnx.TensorProto.INT64, None),
            helper.make_tensor_value_info(node.output[1], onnx.TensorProto.FLOAT, None),
        ],
    )
    alone = helper.make_model(graph, opset_imports=model.opset_import)
    trees = OnnxModel(alone.SerializeToString())
    ort_s, answer = _best_of(lambda: trees.run({node.input[0]: prepared}))
    kernel_s, scores = _best_of(lambda: raw_scores(compiled.tables, prepared))
    from ferry.distributed.compiled import finish

    probabilities = finish(compiled.tables, scores)[1]
    reference = answer[node.output[1]]
    return {
        "rows": rows, "prefix_s": prefix_s, "onnxruntime_s": ort_s, "kernel_s": kernel_s,
        "max_abs_diff": float(np.abs(probabilities - reference).max()),
    }


def _best_of(work: Any, repeats: int = 3) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - started)
    return best, result


def machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "platform": platform.platform()}


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--small-rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    # Internal: one measured side in this process.
    parser.add_argument(
        "--side",
        choices=["ferry", "ferry-ids", "ferry-ort", "reference", "reference-lab"],
        help=argparse.SUPPRESS,
    )
    for name in ("--input", "--output", "--bundle", "--model", "--layout"):
        parser.add_argument(name, type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.side:
        child(args)
        return
    console = Console() if Console().is_terminal else Console(width=150)
    load_before = _load()
    outcome, timing = run_all(args, console)
    meta: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_before": load_before,
        "load_after": _load(),
        "rows": args.rows,
        "small_rows": args.small_rows,
        "chunk_rows": args.chunk_rows,
        "repeats": args.repeats,
        "model": outcome.model,
        "timing": timing,
        "parity_max_abs_diff": outcome.parity_max_abs_diff,
        "trees": timing.pop("trees"),
    }
    meta["summary"] = summary(outcome, args)
    print_table(outcome, console)
    console.print(json.dumps(meta["summary"], indent=2))
    write_results(args.out, outcome, meta)
    console.print(f"results written to {args.out}/batch.md and batch.json")


if __name__ == "__main__":
    main()
