"""The multiprocess scrape says what prometheus_client's own ``MultiProcessCollector`` +
``generate_latest`` say about the same worker files, line for line.

Worker files are written in this process by prometheus_client's own classes, one
``MultiProcessValue`` per simulated pid (as the library's tests do).
"""

from __future__ import annotations

import math
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    generate_latest,
    values,
)
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.parser import text_string_to_metric_families

from ferry.monitoring.metrics import Metrics, scrape
from ferry.monitoring.multiproc import DirectoryScraper, file_kind

MODES = ("all", "sum", "max", "min", "mostrecent")
MODES += tuple(f"live{mode}" for mode in MODES)
ODD_LABEL = 'quote " backslash \\ newline \n é'


@pytest.fixture
def directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    yield tmp_path
    values.close_all_multiprocess_files()


@contextmanager
def worker(pid: int) -> Iterator[None]:
    """Metrics created inside write to ``*_<pid>.db`` files."""
    original = values.ValueClass
    values.ValueClass = values.MultiProcessValue(lambda: pid)
    try:
        yield
    finally:
        values.ValueClass = original


def library(directory: Path) -> bytes:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return generate_latest(registry)


def samples(text: bytes) -> set[tuple[str, tuple[tuple[str, str], ...], str]]:
    """Every sample as (name, labels, value); repr so NaN equals NaN."""
    return {
        (sample.name, tuple(sorted(sample.labels.items())), repr(sample.value))
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def assert_same(ours: bytes, theirs: bytes) -> None:
    assert samples(ours) == samples(theirs)
    # Same lines too: HELP/TYPE, label escaping and float formatting, not only parsed values.
    assert sorted(ours.decode().splitlines()) == sorted(theirs.decode().splitlines())


def fill_catalogue(pid: int, series: int = 2) -> None:
    """Every family of Ferry's catalogue, some series shared by all pids, one per pid."""
    metrics = Metrics(CollectorRegistry())
    for metric in vars(metrics).values():
        if isinstance(metric, Counter | Gauge | Histogram):
            for index in [*range(series), 100 + pid]:
                child = metric.labels(*[f"{name}-{index}" for name in metric._labelnames])
                touch(child, pid * 1.5 + index)


def touch(child: Any, value: float) -> None:
    if isinstance(child, Counter):
        child.inc(value)
    elif isinstance(child, Gauge):
        child.set(value)
    else:
        for amount in (value / 1000, value / 10, value * 10):
            child.observe(amount)


def fill_modes(pid: int) -> None:
    """A gauge of every multiprocess mode, with values where the mode decides the result."""
    registry = CollectorRegistry()
    for mode in MODES:
        gauge = Gauge(
            f"test_{mode}", "A mode.", ["series"], registry=registry, multiprocess_mode=mode
        )
        gauge.labels("shared").set(pid * (-1) ** pid)
        gauge.labels(f"only-{pid}").set(-pid / 3)
        gauge.labels(ODD_LABEL).set(2.5e6 * pid)
        gauge.labels("unset")  # created, never set: a most-recent gauge leaves it out
    special = Gauge("test_special", "Inf, NaN and big.", ["kind"], registry=registry)
    for kind, value in (("inf", math.inf), ("-inf", -math.inf), ("nan", math.nan)):
        special.labels(kind).set(value)
    Counter("test_big", "Large counts.", registry=registry).inc(1234567.0 * pid)
    Summary("test_summary", "A summary.", ["x"], registry=registry).labels("1").observe(pid)
    buckets = (0.1, 1.0, 1e7, math.inf)
    Histogram("test_odd_buckets", "Odd.", ["x"], buckets=buckets, registry=registry).labels(
        ODD_LABEL
    ).observe(5e6)


def write_workers(pids: tuple[int, ...]) -> None:
    for pid in pids:
        with worker(pid):
            fill_catalogue(pid)
            fill_modes(pid)


def test_same_samples_as_the_library_for_every_type_and_gauge_mode(directory: Path) -> None:
    write_workers((101, 102, 103))
    mark_process_dead(103, str(directory))  # its live gauges go, the rest stays
    assert not list(directory.glob("gauge_live*_103.db"))

    ours = DirectoryScraper(str(directory)).scrape()

    assert_same(ours, library(directory))
    lines = ours.decode().splitlines()
    assert 'test_all{pid="103",series="shared"} -103.0' in lines
    assert not [line for line in lines if 'pid="103"' in line and "liveall" in line]
    assert 'test_livesum{series="shared"} 1.0' in lines  # -101 + 102
    assert 'test_max{series="shared"} 102.0' in lines
    assert 'test_summary_sum{x="1"} 306.0' in lines
    assert 'test_odd_buckets_bucket{le="1e+07",x=' in ours.decode()
    assert not [line for line in lines if "mostrecent" in line and "unset" in line]


def test_output_is_byte_for_byte_the_library_s(directory: Path) -> None:
    write_workers((101, 102))

    assert DirectoryScraper(str(directory)).scrape() == library(directory)


def test_follows_the_files_from_one_scrape_to_the_next(directory: Path) -> None:
    write_workers((101, 102))
    scraper = DirectoryScraper(str(directory))
    scraper.scrape()
    with worker(101):
        more = Metrics(CollectorRegistry())
        more.requests.labels("new-model", "rest", "200").inc(7)  # appended to a known file
        more.in_flight.labels("model-0").set(40)  # a value rewritten in place
    with worker(104):
        fill_modes(104)  # new files
    mark_process_dead(102, str(directory))
    (directory / "counter_102.db").unlink()
    with worker(102):  # a new process with the same pid: other keys, longer, same name
        Counter("test_restarted", "After a restart.", registry=CollectorRegistry()).inc(3)
        fill_catalogue(102, series=3)

    assert_same(scraper.scrape(), library(directory))
    assert b"new-model" in scraper.scrape()


def test_series_of_dead_workers_are_dropped_from_the_cache(directory: Path) -> None:
    write_workers((101, *range(201, 206)))
    scraper = DirectoryScraper(str(directory))
    scraper.scrape()
    for path in directory.glob("*_20?.db"):
        path.unlink()
    scraper.STALE_SLACK = 0

    assert_same(scraper.scrape(), library(directory))
    assert not scraper.series.kinds  # started afresh
    assert_same(scraper.scrape(), library(directory))


def test_empty_directory(directory: Path) -> None:
    assert DirectoryScraper(str(directory)).scrape() == library(directory) == b""


def test_files_being_written_do_not_break_a_scrape(directory: Path) -> None:
    write_workers((101,))
    expected = library(directory)
    (directory / "counter_201.db").write_bytes(b"")  # just created, not yet sized
    (directory / "counter_202.db").write_bytes(bytes(1 << 16))  # sized, header not written
    half_written(directory / "gauge_livesum_203.db")

    ours = DirectoryScraper(str(directory)).scrape()

    assert_same(ours, expected + b'# HELP half Half.\n# TYPE half gauge\nhalf{x="1"} 1.0\n')


def half_written(path: Path) -> None:
    """A file whose second entry is written but not yet counted in the used size, and whose
    used size then points into the middle of it (a torn write)."""
    mmapped = MmapedDict(str(path))
    mmapped.write_value(mmap_key("half", "half", ["x"], ["1"], "Half."), 1.0, 0.0)
    used = mmapped._used
    mmapped.write_value(mmap_key("half", "half", ["x"], ["2"], "Half."), 2.0, 0.0)
    mmapped._m[0:4] = struct.pack("i", used + 12)
    mmapped.close()


def test_a_concurrent_writer_never_breaks_a_scrape(directory: Path) -> None:
    scraper, stop = DirectoryScraper(str(directory)), threading.Event()

    def write() -> None:
        with worker(301):
            counter = Counter("test_growing", "Grows.", ["n"], registry=CollectorRegistry())
            n = 0
            while not stop.is_set():
                counter.labels(str(n % 500)).inc()
                n += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(30):
            list(text_string_to_metric_families(scraper.scrape().decode()))
    finally:
        stop.set()
        writer.join()
    assert_same(scraper.scrape(), library(directory))


def test_a_family_with_two_gauge_modes_is_merged_by_the_library(directory: Path) -> None:
    for pid, mode in ((101, "max"), (102, "all")):
        with worker(pid):
            gauge = Gauge(
                "test_two_modes", "Two.", registry=CollectorRegistry(), multiprocess_mode=mode
            )
            gauge.set(pid)

    assert DirectoryScraper(str(directory)).scrape() == library(directory)


def test_a_live_file_deleted_under_the_scrape_is_skipped(directory: Path) -> None:
    scraper = DirectoryScraper(str(directory))
    live, counter = file_kind("gauge_livesum_9.db"), file_kind("counter_9.db")
    assert live is not None and counter is not None

    assert scraper.load("gauge_livesum_9.db", live) is None
    with pytest.raises(FileNotFoundError):
        scraper.load("counter_9.db", counter)


def test_scrape_reads_the_directory_under_multiprocess_mode(directory: Path) -> None:
    write_workers((101,))

    text, content_type = scrape(Metrics(CollectorRegistry()))

    assert_same(text, library(directory))
    assert content_type.startswith("text/plain")


def test_concurrent_scrapes_agree(directory: Path) -> None:
    write_workers((101, 102))
    scraper, texts = DirectoryScraper(str(directory)), []

    threads = [threading.Thread(target=lambda: texts.append(scraper.scrape())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert texts == [library(directory)] * 4
