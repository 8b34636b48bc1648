"""The ``/metrics`` text under several workers, merged from their prometheus_client files.

prometheus_client's ``MultiProcessCollector`` + ``generate_latest`` re-parse every JSON key,
rebuild every sample and re-render every label set on each scrape (~50 ms for 20 models x 30
features). The workers' ``*.db`` files are append-only, so the key at an offset never changes:
this module keeps, per file, the struct layout of its entries and the output series each entry
feeds. A scrape reads a file's values with one ``struct`` call, merges them by the library's
rules and writes ``<cached series text><value>`` lines.

The rules are prometheus_client's (``multiprocess.py``, ``mmap_dict.py``; checked against 0.26,
and the tests compare both outputs on the installed version):

- files are the ``*.db`` of the directory, in directory order; an entry is a 4-byte key length,
  the JSON key padded to 8 bytes, the value and a timestamp (doubles);
- counters, summaries and histograms are summed over files; histogram buckets are summed per
  ``le`` then made cumulative, and ``_count`` is the cumulative total;
- a gauge merges by the mode in its file name: ``all`` keeps each pid's value under a ``pid``
  label, ``sum``, ``max``, ``min``, ``mostrecent`` (latest timestamp; a gauge never set has
  timestamp 0 and is left out). ``live*`` modes merge like the plain ones: the library checks no
  pid at scrape time, ``mark_process_dead`` deletes a dead worker's live files.

A directory the library would read differently (a metric with two types, gauge modes or helps
across files, a file name it does not write) is scraped by the library itself.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.utils import floatToGoString

Labels = tuple[tuple[str, str], ...]
Acc = dict[int, float]  # by series slot
Slots = tuple[int, ...]
Fields = tuple[Any, ...]  # a file's (key blob, value, timestamp) triples, flat

_INT = struct.Struct("=i")  # the library packs native ints and doubles, unaligned
_VALUES = 16  # value and timestamp after each key
_FIRST = 8  # the used-size header, padded
_SUMMED_TYPES = ("counter", "histogram", "summary")
_GAUGE_MERGES = {"all": "all", "sum": "sum", "max": "max", "min": "min", "mostrecent": "recent"}
_INF = float("inf")
_HEADER, _SAMPLE, _BUCKET, _COUNT = range(4)


def go_float(value: float) -> str:
    """``floatToGoString``; below 1e6 it is ``repr`` (Go's exponent form starts at 1e6)."""
    return repr(value) if -_INF < value < 1e6 else floatToGoString(value)


@dataclass(frozen=True)
class FileKind:
    """What a file's name says: metric type, gauge mode and pid, and how its values merge."""

    typ: str
    mode: str
    pid: str
    merge: str

    @property
    def live(self) -> bool:
        return self.typ == "gauge" and self.mode.startswith("live")


@lru_cache(maxsize=1024)
def file_kind(name: str) -> FileKind | None:
    """``counter_<pid>.db``, ``gauge_<mode>_<pid>.db``...; None for names the library would
    read some other way. The pid is cut exactly as the library cuts it."""
    parts = name.split("_")
    if parts[0] in _SUMMED_TYPES:
        return FileKind(parts[0], "", "", "sum")
    merge = _GAUGE_MERGES.get(parts[1].removeprefix("live")) if len(parts) > 2 else None
    if parts[0] != "gauge" or merge is None:
        return None
    return FileKind("gauge", parts[1], parts[2][:-3], merge)


def read_file(path: str) -> tuple[bytes, int]:
    """The used part of a file and its size. A file being created (shorter than its header)
    reads as empty; a used size past the end is cut to what is there."""
    with open(path, "rb") as infile:
        data = infile.read(mmap.PAGESIZE)
        if len(data) < _FIRST:
            return bytes(_FIRST), _FIRST
        used = _INT.unpack_from(data)[0]
        if used > len(data):
            data += infile.read(used - len(data))
    return data, max(_FIRST, min(used, len(data)))


def entry_blobs(data: bytes, start: int, used: int) -> Iterator[bytes]:
    """Each entry's length, key and padding as one bytes object, from ``start`` to the last
    entry that ends within ``used`` (a torn tail is left for the next scrape)."""
    pos = start
    while pos + 4 <= used:
        length = _INT.unpack_from(data, pos)[0]
        size = 4 + length + (8 - (length + 4) % 8)
        if length < 0 or pos + size + _VALUES > used:
            return
        yield data[pos : pos + size]
        pos += size + _VALUES


@dataclass(frozen=True)
class Key:
    metric: str
    name: str
    labels: Labels
    help: str


def parse_key(blob: bytes) -> Key:
    length = _INT.unpack_from(blob)[0]
    metric, name, labels, help_text = json.loads(blob[4 : 4 + length].decode("utf-8"))
    return Key(metric, name, tuple(sorted(labels.items())), help_text)


@dataclass(frozen=True)
class FilePlan:
    """One file's entries as far as ``used``: a struct that unpacks (blob, value, timestamp)
    for all of them, the blobs to check it against, the series slot of each entry, and the
    families (metric, help) and header slots the file holds."""

    kind: FileKind
    used: int
    layout: struct.Struct
    blobs: tuple[bytes, ...]
    slots: tuple[int, ...]
    families: frozenset[tuple[str, str]]
    headers: frozenset[int]

    def values(self, data: bytes) -> tuple[Any, ...] | None:
        """The unpacked fields, or None if the file no longer starts with these entries."""
        if len(data) < self.used:
            return None
        fields = self.layout.unpack_from(data)
        return fields if fields[0::3] == self.blobs else None

    def consistent(self, shapes: dict[str, tuple[str, str, str]]) -> bool:
        """Whether the families' type, gauge mode and help agree with the files read before
        (the library takes the first file's type and help and the last one's mode)."""
        for metric, help_text in self.families:
            shape = (self.kind.typ, self.kind.mode, help_text)
            if shapes.setdefault(metric, shape) != shape:
                return False
        return True


def empty_plan(kind: FileKind) -> FilePlan:
    return FilePlan(kind, _FIRST, struct.Struct("=8x"), (), (), frozenset(), frozenset())


class Series:
    """Every output line ever seen: its text up to the value, its kind and its place in the
    output (family, then label set, then samples, buckets by ``le``, ``_count``)."""

    def __init__(self) -> None:
        self.slot_of: dict[tuple[Any, ...], int] = {}
        self.kinds: list[int] = []
        self.texts: list[str] = []
        self.places: list[tuple[int, int, int, float]] = []
        self.ranks: dict[str, int] = {}
        self.groups: dict[tuple[str, Labels], int] = {}
        self.pending: list[tuple[int, str, Labels]] = []
        self.blocks: list[Block] = []

    def header(self, key: Key, typ: str) -> int:
        """The slot of the family's HELP and TYPE lines."""
        ident = ("header", key.metric, typ, key.help)
        slot = self.slot_of.get(ident)
        if slot is None:
            slot = self._slot(ident, _HEADER, (self._rank(key.metric), -1, 0, 0))
            self.texts[slot] = render_header(key.metric, key.help, typ)
        return slot

    def slot(self, key: Key, kind: FileKind) -> int:
        """The output series an entry feeds (labels as the library groups them)."""
        labels = key.labels
        if kind.typ == "gauge":
            pid = (("pid", kind.pid),)
            labels = labels + pid if kind.merge == "all" else drop_label(labels, "pid")
        le = next((value for name, value in labels if name == "le"), None)
        if kind.typ != "histogram" or le is None:
            return self._sample(key.metric, labels, key.name)
        return self._bucket(key.metric, drop_label(labels, "le"), float(le))

    def _sample(self, metric: str, labels: Labels, name: str) -> int:
        ident = ("sample", metric, labels, name)
        if ident not in self.slot_of:
            place = (self._rank(metric), self._group(metric, labels), 0, len(self.kinds))
            self.pending.append((self._slot(ident, _SAMPLE, place), name, labels))
        return self.slot_of[ident]

    def _bucket(self, metric: str, labels: Labels, le: float) -> int:
        ident = ("bucket", metric, labels, le)
        if ident not in self.slot_of:
            rank, group = self._rank(metric), self._group(metric, labels)
            slot = self._slot(ident, _BUCKET, (rank, group, 1, le))
            self.pending.append((slot, metric + "_bucket", (*labels, ("le", floatToGoString(le)))))
            if ("count", metric, labels) not in self.slot_of:
                count = self._slot(("count", metric, labels), _COUNT, (rank, group, 2, 0))
                self.pending.append((count, metric + "_count", labels))
        return self.slot_of[ident]

    def _rank(self, metric: str) -> int:
        return self.ranks.setdefault(metric, len(self.ranks))

    def _group(self, metric: str, labels: Labels) -> int:
        return self.groups.setdefault((metric, labels), len(self.groups))

    def _slot(self, ident: tuple[Any, ...], kind: int, place: tuple[int, int, int, float]) -> int:
        slot = self.slot_of[ident] = len(self.kinds)
        self.kinds.append(kind)
        self.texts.append("")
        self.places.append(place)
        self.blocks = []
        return slot

    def ready(self) -> list[Block]:
        """The output in blocks, once every new series has its text."""
        if self.pending:
            texts = render_prefixes([(name, labels) for _, name, labels in self.pending])
            for (slot, _, _), text in zip(self.pending, texts, strict=True):
                self.texts[slot] = text
            self.pending = []
        if not self.blocks:
            order = sorted(range(len(self.kinds)), key=self.places.__getitem__)
            self.blocks = blocks(order, self.kinds, self.texts)
        return self.blocks


Block = tuple[int, list[tuple[int, str]], str]


def blocks(order: list[int], kinds: list[int], texts: list[str]) -> list[Block]:
    """Runs of slots rendered alike: a header, plain samples, one histogram's buckets (with
    the text of its ``_count``, which always follows them)."""
    runs: list[Block] = []
    for slot in order:
        kind = kinds[slot]
        if kind == _COUNT:
            runs[-1] = (_BUCKET, runs[-1][1], texts[slot])
        elif runs and kind == runs[-1][0] != _HEADER and not runs[-1][2]:
            runs[-1][1].append((slot, texts[slot]))
        else:
            runs.append((kind, [(slot, texts[slot])], ""))
    return runs


def drop_label(labels: Labels, name: str) -> Labels:
    return tuple(pair for pair in labels if pair[0] != name)


class _Metrics:
    """A collector of ready-made metric families, to render them with ``generate_latest``."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics


def render_header(metric: str, help_text: str, typ: str) -> str:
    """The family's ``# HELP`` and ``# TYPE`` lines, as the library writes them."""
    return generate_latest(_Metrics([Metric(metric, help_text, typ)])).decode("utf-8")


def render_prefixes(samples: list[tuple[str, Labels]]) -> list[str]:
    """Each sample's line up to its value, rendered by the library itself (escaping, label
    order), once per series: one untyped family per sample name, with placeholder values."""
    by_name: dict[str, list[int]] = {}
    for index, (name, _) in enumerate(samples):
        by_name.setdefault(name, []).append(index)
    families = []
    for name, indexes in by_name.items():
        family = Metric(name, "", "unknown")
        for index in indexes:
            family.add_sample(name, dict(samples[index][1]), 0.0)
        families.append(family)
    text = generate_latest(_Metrics(families)).decode("utf-8")
    lines = [line for line in text.split("\n") if line and not line.startswith("#")]
    prefixes = [""] * len(samples)
    order = [index for indexes in by_name.values() for index in indexes]
    for index, line in zip(order, lines, strict=True):
        if not line.endswith(" 0.0"):
            raise RuntimeError(f"unexpected sample line from prometheus_client: {line!r}")
        prefixes[index] = line[: -len("0.0")]
    return prefixes


def merge_sum(acc: Acc, stamps: Acc, slots: Slots, fields: Fields) -> None:
    get = acc.get
    for slot, value in zip(slots, fields[1::3], strict=True):
        acc[slot] = get(slot, 0.0) + value


def merge_max(acc: Acc, stamps: Acc, slots: Slots, fields: Fields) -> None:
    get = acc.get
    for slot, value in zip(slots, fields[1::3], strict=True):
        current = get(slot)
        if current is None or value > current:
            acc[slot] = value


def merge_min(acc: Acc, stamps: Acc, slots: Slots, fields: Fields) -> None:
    get = acc.get
    for slot, value in zip(slots, fields[1::3], strict=True):
        current = get(slot)
        if current is None or value < current:
            acc[slot] = value


def merge_recent(acc: Acc, stamps: Acc, slots: Slots, fields: Fields) -> None:
    get = stamps.get
    for slot, value, stamp in zip(slots, fields[1::3], fields[2::3], strict=True):
        if stamp > get(slot, 0.0):
            acc[slot] = value
            stamps[slot] = stamp


def merge_all(acc: Acc, stamps: Acc, slots: Slots, fields: Fields) -> None:
    # Each slot carries the file's pid: nothing to combine.
    acc.update(zip(slots, fields[1::3], strict=True))


MERGES: dict[str, Callable[[Acc, Acc, Slots, Fields], None]] = {
    "sum": merge_sum,
    "max": merge_max,
    "min": merge_min,
    "recent": merge_recent,
    "all": merge_all,
}


class DirectoryScraper:
    """Scrapes one ``PROMETHEUS_MULTIPROC_DIR``, keeping what repeats between scrapes."""

    # Series of dead workers (``pid`` labels) pile up; past this many unused, start afresh.
    STALE_SLACK = 4096

    def __init__(self, path: str) -> None:
        if not os.path.isdir(path):
            raise ValueError(f"PROMETHEUS_MULTIPROC_DIR is not a directory: {path}")
        self.path = path
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.series = Series()
        self.plans: dict[str, FilePlan] = {}
        self.keys: dict[bytes, Key] = {}

    def scrape(self) -> bytes:
        """The exposition text of every worker's series, merged (``generate_latest``'s)."""
        # Scrapes run in threads; the caches are shared.
        with self.lock:
            merged = self.merge()
            if merged is None:
                return self.library_scrape()
            text = self.render(merged)
            if self.stale():
                self.reset()
            return text

    def stale(self) -> bool:
        """Whether many more series are cached than the files feed (each entry feeds one
        series, a histogram's ``_count`` is fed through its buckets)."""
        entries = sum(len(plan.slots) for plan in self.plans.values())
        return len(self.series.kinds) > 2 * entries + self.STALE_SLACK

    def library_scrape(self) -> bytes:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.path)
        return generate_latest(registry)

    def merge(self) -> dict[int, float] | None:
        """Each present series' merged value by slot (family headers too), or None if the
        directory holds something only the library reads right."""
        acc: dict[int, float] = {}
        stamps: dict[int, float] = {}
        plans: dict[str, FilePlan] = {}
        shapes: dict[str, tuple[str, str, str]] = {}
        for name in self.listing():
            kind = file_kind(name)
            if kind is None:
                return None
            loaded = self.load(name, kind)
            if loaded is None:
                continue
            plan, fields = loaded
            if not plan.consistent(shapes):
                return None
            plans[name] = plan
            MERGES[kind.merge](acc, stamps, plan.slots, fields)
            acc.update(dict.fromkeys(plan.headers, 0.0))
        self.plans = plans
        return acc

    def listing(self) -> list[str]:
        """``glob("*.db")``'s files in its order: directory order, no hidden names."""
        with os.scandir(self.path) as entries:
            names = [entry.name for entry in entries]
        return [name for name in names if name.endswith(".db") and not name.startswith(".")]

    def load(self, name: str, kind: FileKind) -> tuple[FilePlan, tuple[Any, ...]] | None:
        try:
            data, used = read_file(os.path.join(self.path, name))
        except FileNotFoundError:
            # mark_process_dead may delete live gauge files between listing and reading.
            if kind.live:
                return None
            raise
        return self.plan(name, kind, data, used)

    def plan(
        self, name: str, kind: FileKind, data: bytes, used: int
    ) -> tuple[FilePlan, tuple[Any, ...]]:
        """The file's cached plan if the file still starts with its entries, grown by any
        entries written since."""
        plan = self.plans.get(name)
        fields = plan.values(data) if plan is not None and plan.used <= used else None
        if plan is None or fields is None:
            plan, fields = empty_plan(kind), None
        blobs = tuple(entry_blobs(data, plan.used, used))
        if blobs:
            plan = self.extend(plan, blobs)
            fields = None
        return plan, fields if fields is not None else plan.layout.unpack_from(data)

    def extend(self, plan: FilePlan, blobs: tuple[bytes, ...]) -> FilePlan:
        # Other files hold the same keys (same blob, same padding): parse each once.
        keys = [self.keys.get(b) or self.keys.setdefault(b, parse_key(b)) for b in blobs]
        kind, all_blobs = plan.kind, plan.blobs + blobs
        return FilePlan(
            kind=kind,
            used=plan.used + sum(len(blob) + _VALUES for blob in blobs),
            layout=struct.Struct("=8x" + "".join(f"{len(blob)}sdd" for blob in all_blobs)),
            blobs=all_blobs,
            slots=plan.slots + tuple(self.series.slot(key, kind) for key in keys),
            families=plan.families | {(key.metric, key.help) for key in keys},
            headers=plan.headers | {self.series.header(key, kind.typ) for key in keys},
        )

    def render(self, acc: dict[int, float]) -> bytes:
        get, lines = acc.get, []
        for kind, pairs, count in self.series.ready():
            if kind == _HEADER:
                lines += [text for slot, text in pairs if slot in acc]
            elif kind == _SAMPLE:
                lines += [
                    f"{text}{repr(v) if -_INF < v < 1e6 else floatToGoString(v)}\n"
                    for slot, text in pairs
                    if (v := get(slot)) is not None
                ]
            else:
                lines += bucket_lines(pairs, count, get)
        return "".join(lines).encode("utf-8")


def bucket_lines(
    pairs: list[tuple[int, str]], count: str, get: Callable[[int], float | None]
) -> list[str]:
    """Cumulative buckets and the total as ``_count``, added up in ``le`` order from 0.0 as
    the library does."""
    present = [(text, v) for slot, text in pairs if (v := get(slot)) is not None]
    if not present:
        return []
    totals = list(accumulate((v for _, v in present), initial=0.0))[1:]
    lines = [f"{text}{go_float(total)}\n" for (text, _), total in zip(present, totals, strict=True)]
    lines.append(f"{count}{go_float(totals[-1])}\n")
    return lines


_scrapers: dict[str, DirectoryScraper] = {}
_scrapers_lock = threading.Lock()


def scrape_directory(path: str) -> bytes:
    """The merged exposition text of a multiprocess directory (one cache per directory)."""
    with _scrapers_lock:
        scraper = _scrapers.get(path)
        if scraper is None:
            scraper = _scrapers[path] = DirectoryScraper(path)
    return scraper.scrape()
