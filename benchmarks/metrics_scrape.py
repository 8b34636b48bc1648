"""``/metrics`` scrape cost with many models: target under 50 ms for 20 models x 30 features.

A ``Metrics()`` is populated the way a server's monitor fills it for ``--models`` models of
``--features`` inputs each (requests and latency per protocol and status, batching, pool,
predicted classes, score histograms, quality counters per input, drift p-value and flag per
feature plus the prediction, drifted share, alarm, feedback quality and labels), then
``ferry.monitoring.metrics.scrape`` is timed ``--scrapes`` times (median and p99) in two modes:

- ``single``        one process, one registry (``ferry serve --workers 1``);
- ``multiprocess``  prometheus_client's multiprocess mode (``--workers N``): ``--workers``
                    worker processes fill the series and exit, leaving their ``*.db`` files in
                    a fresh ``PROMETHEUS_MULTIPROC_DIR``; a third process, started with that
                    variable set before prometheus_client is imported, times the merged scrape
                    (``ferry.monitoring.multiproc``); another one times prometheus_client's own
                    ``MultiProcessCollector`` + ``generate_latest`` on the same files, what
                    ``scrape`` used before.

The reference, measured in the same run and mode, is scraping an empty catalogue: ``Metrics()``
with no series (single) or an empty multiprocess dir (multiprocess). Results go to
``benchmarks/results/metrics_scrape.{md,json}``; ``--profile`` adds the hottest functions of
each populated scrape (cProfile).

    python benchmarks/metrics_scrape.py
    python benchmarks/metrics_scrape.py --models 50 --features 60 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TARGET_MS = 50.0
WARMUP = 3
PROTOCOLS = {"rest": ("200", "400", "503"), "grpc": ("OK", "INVALID_ARGUMENT", "UNAVAILABLE")}
QUALITY = ("accuracy", "precision", "recall", "f1", "n")
CATEGORICAL_SHARE = 1 / 3


def populate(metrics: Any, models: int, features: int, seed: int = 0) -> None:
    """Every series a serving monitor creates for ``models`` binary models of ``features``
    inputs (a third of them categorical), with a handful of observations each: the most a
    server exports once every counter has been hit (each input missing at least once, each
    numeric one out of range, each categorical one with an unseen category)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for m in range(models):
        name, version = f"model_{m:02d}", "1"
        _serving(metrics, rng, name, version)
        _predictions(metrics, rng, name, version)
        inputs = [f"feature_{f:02d}" for f in range(features)]
        categorical = set(inputs[: round(features * CATEGORICAL_SHARE)])
        for kind in ("missing", "out_of_range", "unseen"):
            # As the server counts: out-of-range for numeric inputs, unseen for categorical.
            eligible = [i for i in inputs if _counted(kind, i in categorical)]
            draws = rng.integers(0, 50, len(eligible))
            counts = {i: int(c) + 1 for i, c in zip(eligible, draws, strict=True)}
            metrics.count_quality(name, version, kind, counts)
        for feature in [*inputs, "__prediction__"]:
            metrics.drift_p.labels(name, version, feature).set(float(rng.random()))
            metrics.drift_flag.labels(name, version, feature).set(float(rng.random() < 0.1))
        metrics.drift_share.labels(name, version).set(0.1)
        metrics.drift_alarm.labels(name, version).set(0)
        for metric in QUALITY:
            metrics.live_quality.labels(name, version, metric).set(float(rng.random()))
        for result in ("matched", "unknown"):
            metrics.feedback.labels(name, result).inc(int(rng.integers(1, 100)))
        metrics.log_dropped.labels(name).inc(0)


def _counted(kind: str, categorical: bool) -> bool:
    return kind == "missing" or (kind == "unseen") == categorical


def _serving(metrics: Any, rng: Any, name: str, version: str) -> None:
    for protocol, statuses in PROTOCOLS.items():
        for status in statuses:
            metrics.requests.labels(name, protocol, status).inc(int(rng.integers(1, 1000)))
        latency = metrics.latency.labels(name, protocol)
        for seconds in rng.exponential(0.003, 20):
            latency.observe(float(seconds))
    metrics.in_flight.labels(name).set(int(rng.integers(0, 8)))
    for seconds in rng.exponential(0.0005, 20):
        metrics.queue_wait.labels(name, version).observe(float(seconds))
    for rows in rng.integers(1, 64, 20):
        metrics.batch_rows.labels(name, version).observe(int(rows))
    metrics.loads.labels(name, "ok").inc()
    metrics.model_info.labels(name, version, f"{name}@production").set(1)


def _predictions(metrics: Any, rng: Any, name: str, version: str) -> None:
    for label in ("0", "1"):
        metrics.classes.labels(name, version, label).inc(int(rng.integers(1, 1000)))
    scores = metrics.scores.labels(name, version)
    for score in rng.random(50):
        scores.observe(float(score))


def timed(call: Callable[[], Any], scrapes: int) -> dict[str, float]:
    """Wall-clock (what Prometheus waits) and CPU time (what the scrape costs, whatever else
    runs on the machine) of ``scrapes`` calls after a warm-up, in milliseconds."""
    for _ in range(WARMUP):
        call()
    wall, cpu = [], []
    for _ in range(scrapes):
        started, started_cpu = time.perf_counter(), time.thread_time()
        call()
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.thread_time() - started_cpu) * 1000)
    wall.sort()
    p99_index = min(len(wall) - 1, round(0.99 * (len(wall) - 1)))
    return {
        "median_ms": statistics.median(wall),
        "p99_ms": wall[p99_index],
        "min_ms": wall[0],
        "max_ms": wall[-1],
        "cpu_median_ms": statistics.median(cpu),
    }


def hottest(call: Callable[[], Any], top: int = 12) -> list[dict[str, Any]]:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(10):
        call()
    profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows = []
    for (path, line, func), (_, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{Path(path).name}:{line}({func})",
                "calls_per_scrape": calls / 10,
                "self_ms_per_scrape": tottime * 100,
                "cumulative_ms_per_scrape": cumtime * 100,
            }
        )
    rows.sort(key=lambda r: r["self_ms_per_scrape"], reverse=True)
    return rows[:top]


def series_count(text: bytes) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))


def families(text: bytes) -> dict[str, int]:
    """Samples per metric family (``# TYPE`` blocks; ``_created`` gauges count on their own)."""
    counts: dict[str, int] = {}
    family = ""
    for line in text.decode().splitlines():
        if line.startswith("# TYPE "):
            family = line.split()[2]
        elif line and not line.startswith("#"):
            counts[family] = counts.get(family, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


# single process --------------------------------------------------------------------------------
def run_single(args: argparse.Namespace) -> None:
    """Times one registry's scrape; the reference scrapes an empty ``Metrics()``."""
    assert not os.environ.get("PROMETHEUS_MULTIPROC_DIR"), "single mode runs without the dir"
    from ferry.monitoring.metrics import Metrics, scrape

    empty = Metrics()
    full = Metrics()
    populate(full, args.models, args.features)
    text, _ = scrape(full)
    result = {
        "samples": series_count(text),
        "bytes": len(text),
        "families": families(text),
        "reference": timed(lambda: scrape(empty), args.scrapes),
        "populated": timed(lambda: scrape(full), args.scrapes),
        # Only gathering the samples (no text): the rest of a scrape is rendering them.
        "collect": timed(lambda: [m.samples for m in full.registry.collect()], args.scrapes),
    }
    if args.profile:
        result["profile"] = hottest(lambda: scrape(full))
    print(json.dumps(result))


def measure_single(args: argparse.Namespace, created: bool) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PROMETHEUS_DISABLE_CREATED_SERIES"] = "false" if created else "true"
    result = json.loads(_child("single", env, args))
    result["mode"] = "single" if created else "single, _created series off"
    return result


# multiprocess ----------------------------------------------------------------------------------
def _child(role: str, env: dict[str, str], args: argparse.Namespace, seed: int = 0) -> str:
    """This script in another process (prometheus_client reads its environment at import)."""
    argv = [sys.executable, __file__, f"--role={role}", f"--seed={seed}"]
    if env.get("PROMETHEUS_MULTIPROC_DIR"):
        argv.append(f"--dir={env['PROMETHEUS_MULTIPROC_DIR']}")
    argv += [f"--models={args.models}", f"--features={args.features}"]
    argv += [f"--scrapes={args.scrapes}"] + (["--profile"] if args.profile else [])
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{role} process failed:\n{done.stderr}")
    return done.stdout


def measure_multiprocess(args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="ferry-scrape-") as root:
        full, empty = Path(root) / "full", Path(root) / "empty"
        full.mkdir()
        empty.mkdir()
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(full)}
        for worker in range(args.workers):
            _child("worker", env, args, seed=worker)
        files = sorted(p.name for p in full.iterdir())
        dir_bytes = sum((full / f).stat().st_size for f in files)
        ours = json.loads(_child("scraper", env, args))
        theirs = json.loads(_child("library-scraper", env, args))
    ours.update(
        mode=f"multiprocess ({args.workers} workers)",
        files=len(files),
        dir_bytes=dir_bytes,
    )
    theirs["mode"] = f"multiprocess ({args.workers} workers), prometheus_client's collector"
    ours["same_text_as_library"] = ours["sha256"] == theirs["sha256"]
    return [ours, theirs]


def run_worker(args: argparse.Namespace) -> None:
    assert os.environ.get("PROMETHEUS_MULTIPROC_DIR"), "a worker needs PROMETHEUS_MULTIPROC_DIR"
    from ferry.monitoring.metrics import Metrics

    populate(Metrics(), args.models, args.features, seed=args.seed)


def run_scraper(args: argparse.Namespace) -> None:
    """Times the merged scrape of ``--dir``; the reference scrapes an empty dir."""
    from ferry.monitoring.metrics import Metrics, scrape
    from ferry.monitoring.multiproc import DirectoryScraper

    metrics = Metrics()  # what a worker's scrape() receives; the files hold the series
    merge = DirectoryScraper(args.dir).merge
    scrape_dir = _dir_scrape(lambda: scrape(metrics)[0])
    _time_scrapes(args, scrape_dir, merge)


def run_library_scraper(args: argparse.Namespace) -> None:
    """The same with prometheus_client's ``MultiProcessCollector`` and ``generate_latest``."""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    def library_scrape() -> bytes:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)

    collector = multiprocess.MultiProcessCollector(None, path=args.dir)
    _time_scrapes(
        args, _dir_scrape(library_scrape), lambda: [m.samples for m in collector.collect()]
    )


def _dir_scrape(scrape: Callable[[], bytes]) -> Callable[[Path], Callable[[], bytes]]:
    def scrape_dir(directory: Path) -> Callable[[], bytes]:
        def call() -> bytes:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
            return scrape()

        return call

    return scrape_dir


def _time_scrapes(
    args: argparse.Namespace,
    scrape_dir: Callable[[Path], Callable[[], bytes]],
    merge: Callable[[], Any],
) -> None:
    """Times ``scrape_dir`` of ``--dir`` and, as the reference, of an empty dir."""
    empty = Path(args.dir).parent / "empty"
    text = scrape_dir(Path(args.dir))()
    result = {
        "sha256": hashlib.sha256(text).hexdigest(),
        "samples": series_count(text),
        "bytes": len(text),
        "families": families(text),
        "reference": timed(scrape_dir(empty), args.scrapes),
        "populated": timed(scrape_dir(Path(args.dir)), args.scrapes),
        # Only reading and merging the workers' files (no text).
        "collect": timed(merge, args.scrapes),
    }
    if args.profile:
        result["profile"] = hottest(scrape_dir(Path(args.dir)))
    print(json.dumps(result))


# report ----------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "python": platform.python_version(),
        "prometheus_client": package_version("prometheus-client"),
        "speed_ms": python_speed(),
    }


def python_speed() -> float:
    """CPU ms of a fixed pure-Python loop (best of 5): this shared machine's speed varies by
    several times from one hour to the next, and runs are only comparable at a like speed."""
    best = float("inf")
    for _ in range(5):
        started = time.thread_time()
        sum(i * i for i in range(200_000))
        best = min(best, time.thread_time() - started)
    return best * 1000


def verdict(result: dict[str, Any]) -> str:
    return "pass" if result["populated"]["p99_ms"] < TARGET_MS else "FAIL"


def ratio(result: dict[str, Any], key: str) -> float:
    return float(result["populated"][key] / max(result["reference"][key], 1e-9))


def markdown(args: argparse.Namespace, info: dict[str, Any], results: list[dict[str, Any]]) -> str:
    lines = [
        "# /metrics scrape cost",
        "",
        f"{info['date']}; {info['cpus']} CPUs (load average {' '.join(info['loadavg'])} at the "
        f"start, {' '.join(info['loadavg_end'])} at the end); Python {info['python']}, "
        f"prometheus_client {info['prometheus_client']}. Machine speed: a fixed Python loop "
        f"took {info['speed_ms']:.1f} CPU ms (lower is faster).",
        f"{args.models} models x {args.features} features, {args.scrapes} timed scrapes after "
        f"{WARMUP} warm-up ones. Target: p99 under {TARGET_MS:.0f} ms. Reference: the same "
        "mode's scrape of an empty catalogue (no series), measured in the same run. CPU ms: "
        "the scrape's own CPU time (median), which other load on the machine does not inflate; "
        "collect ms: gathering the samples without rendering text (multiprocess: reading and "
        "merging the workers' files).",
        "",
        "| mode | samples | bytes | median ms | p99 ms | CPU ms | of which collect CPU ms "
        "| us/sample | ref median ms | ref p99 ms | x ref (median) | x ref (p99) | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        p, ref = r["populated"], r["reference"]
        lines.append(
            f"| {r['mode']} | {r['samples']:,} | {r['bytes']:,} | {p['median_ms']:.2f} "
            f"| {p['p99_ms']:.2f} | {p['cpu_median_ms']:.2f} | {r['collect']['cpu_median_ms']:.2f} "
            f"| {1000 * p['median_ms'] / r['samples']:.1f} "
            f"| {ref['median_ms']:.3f} | {ref['p99_ms']:.3f} "
            f"| {ratio(r, 'median_ms'):.0f} | {ratio(r, 'p99_ms'):.0f} | {verdict(r)} |"
        )
    for r in results:
        if "files" in r:
            same = "the same" if r["same_text_as_library"] else "NOT the same"
            lines += [
                "",
                f"Multiprocess dir: {r['files']} files, {r['dir_bytes']:,} bytes. Ferry's merged "
                f"text is {same} bytes as prometheus_client's collector's.",
            ]
    lines += [
        "",
        "## Samples per family",
        "",
        "| family | " + " | ".join(r["mode"] for r in results) + " |",
    ]
    lines.append("|---|" + "---|" * len(results))
    names = sorted(
        {n for r in results for n in r["families"]},
        key=lambda n: -max(r["families"].get(n, 0) for r in results),
    )
    for name in names:
        cells = " | ".join(f"{r['families'].get(name, 0):,}" for r in results)
        lines.append(f"| `{name}` | {cells} |")
    for r in results:
        if "profile" in r:
            lines += [
                "",
                f"## Hottest functions, {r['mode']} "
                "(cProfile, per scrape; the profiler inflates times ~3x)",
                "",
            ]
            lines += ["| function | calls | self ms | cumulative ms |", "|---|---|---|---|"]
            lines += [
                f"| `{row['function']}` | {row['calls_per_scrape']:,.0f} "
                f"| {row['self_ms_per_scrape']:.2f} | {row['cumulative_ms_per_scrape']:.2f} |"
                for row in r["profile"]
            ]
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2, help="simulated worker processes")
    parser.add_argument("--profile", action="store_true", help="add the hottest functions")
    parser.add_argument("--no-write", action="store_true", help="print only")
    roles = ("main", "single", "worker", "scraper", "library-scraper")
    parser.add_argument("--role", choices=roles, default="main")
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.role == "single":
        return run_single(args)
    if args.role == "worker":
        return run_worker(args)
    if args.role == "scraper":
        return run_scraper(args)
    if args.role == "library-scraper":
        return run_library_scraper(args)
    info = machine()
    results = [
        measure_single(args, created=True),
        measure_single(args, created=False),
        *measure_multiprocess(args),
    ]
    info["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    report = markdown(args, info, results)
    print(report)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "metrics_scrape.md").write_text(report)
        payload = {"machine": info, "args": vars(args), "results": results}
        (RESULTS / "metrics_scrape.json").write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
