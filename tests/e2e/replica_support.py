"""Helpers for the several-replicas test: a fresh PostgreSQL schema for the registry, an S3
artifact store served by moto on loopback, ``ferry serve`` replicas that share both, nginx in
front of them, and a pool of clients that records every answer it gets through nginx.

Every process here is started on 127.0.0.1 on a free port and stopped by its own pid. Test
modules import this file by path, like ``serve_support``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import serve_support as ss

POSTGRES_URL = os.environ.get(
    "FERRY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
MOTO_SERVER = Path(sys.executable).parent / "moto_server"
BUCKET = "ferry-replicas"
START_TIMEOUT_S = 30.0


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def missing(what: str) -> None:
    """Skip locally, fail under CI: there the several-replicas test must run."""
    if in_ci():
        pytest.fail(f"{what}; CI is set, so the several-replicas test must run")
    pytest.skip(what)


# ---- PostgreSQL ---------------------------------------------------------------------------


def _libpq_url(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+')[0]}://{rest}"


def _with_search_path(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query)))


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A registry URL whose search_path is a fresh schema, dropped afterwards."""
    try:
        with psycopg.connect(_libpq_url(POSTGRES_URL), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        where = urlsplit(POSTGRES_URL).hostname
        missing(
            f"PostgreSQL at {where} (FERRY_TEST_POSTGRES_URL) did not answer: {exc}; start it "
            "or point FERRY_TEST_POSTGRES_URL at one"
        )
    schema = f"ferry_replicas_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq_url(POSTGRES_URL), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield _with_search_path(POSTGRES_URL, schema)
    finally:
        with psycopg.connect(_libpq_url(POSTGRES_URL), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


# ---- S3 (moto's server mode) --------------------------------------------------------------


def s3_env(endpoint: str, tmp: Path) -> dict[str, str]:
    """What a process needs to use the moto S3 at ``endpoint`` through fsspec/s3fs: dummy
    credentials and region from the environment (never a profile file or instance metadata)."""
    return {
        "FSSPEC_S3_ENDPOINT_URL": endpoint,  # fsspec's config -> s3fs(endpoint_url=...)
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ACCESS_KEY_ID": "ferry-test",
        "AWS_SECRET_ACCESS_KEY": "ferry-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@contextmanager
def moto_s3(tmp: Path) -> Iterator[str]:
    """moto's S3 server on a free loopback port with bucket ``BUCKET``; yields its URL."""
    if not MOTO_SERVER.is_file():
        missing(f"moto_server is not installed next to {sys.executable} (pip install moto[server])")
    port = ss.free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp / "moto.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        _wait_http(proc, url + "/", log)
        # moto accepts unsigned requests: a path-style PUT creates the bucket.
        created = httpx.put(f"{url}/{BUCKET}", timeout=10)
        assert created.status_code == 200, created.text
        yield url
    finally:
        _stop(proc, signal.SIGTERM)


def _wait_http(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.perf_counter() + START_TIMEOUT_S
    while time.perf_counter() < deadline:
        assert proc.poll() is None, f"{url} exited with {proc.returncode}:\n{log.read_text()}"
        with suppress(httpx.TransportError):
            if httpx.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.05)  # between probes, not instead of them
    raise AssertionError(f"{url} did not answer within {START_TIMEOUT_S} s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# ---- replicas -----------------------------------------------------------------------------


@dataclass
class Cluster:
    """What every replica and every `ferry registry` command shares."""

    registry_url: str
    artifacts_url: str
    s3: dict[str, str]

    def env(self, home: Path) -> dict[str, str]:
        return {
            **ss.ferry_env(home),
            **self.s3,
            "FERRY_REGISTRY_URL": self.registry_url,
            "FERRY_ARTIFACTS_URL": self.artifacts_url,
        }

    def ferry(self, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(ss.FERRY), *args],
            env=self.env(home),
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert done.returncode == 0, f"ferry {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done

    def register(self, home: Path, bundles: dict[int, Path], production: int) -> None:
        """Register the bundles in version order and point ``production`` at one: the
        Registry API in one child process with the replicas' settings (one interpreter
        start instead of a `ferry registry` command each)."""
        args = [str(bundles[number]) for number in sorted(bundles)]
        done = subprocess.run(
            [sys.executable, "-c", _REGISTER, str(production), *args],
            env=self.env(home),
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [f"fraud:{n}" for n in sorted(bundles)], done.stdout

    def start_replica(self, home: Path, tmp: Path, *args: str) -> ss.Server:
        """``ferry serve fraud@production`` with its own home (cache, prediction log), as a
        replica on another machine would have; HTTP only."""
        port = ss.free_port()
        log = tmp / f"replica-{port}.log"
        serve = ["serve", "fraud@production", "--port", str(port), "--grpc-port", "-1"]
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [str(ss.FERRY), *serve, *args],
                env=self.env(home),
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return ss.Server(proc, port, -1, log)


_REGISTER = """
import sys
from pathlib import Path
from ferry.registry import open_registry
from ferry.settings import Settings

settings = Settings()
with open_registry(settings.resolved_registry_url(), settings.resolved_artifacts_url()) as reg:
    for bundle in sys.argv[2:]:
        print(reg.register("fraud", Path(bundle), actor=settings.actor or "e2e").ref)
    reg.set_alias("fraud", "production", int(sys.argv[1]), actor=settings.actor or "e2e")
"""


def lab_bundles(home: Path, dest: Path) -> dict[int, Path]:
    """The bundle directories of the versions ``serve_support.prepare_home`` trained."""
    from ferry.registry import open_registry

    with open_registry(f"sqlite:///{home}/registry.db", str(home / "artifacts")) as lab:
        return {v.version: lab.fetch(v.ref, dest) for v in lab.list_versions("fraud")}


def alias_moved_at(registry_url: str, tmp: Path, version: int) -> float:
    """When (epoch seconds) the shared registry recorded the newest move of
    ``fraud@production`` to ``version``: the moment a replica can first see it."""
    from ferry.registry import open_registry

    # Events live in PostgreSQL only: a local artifact directory is enough to read them.
    with open_registry(registry_url, str(tmp / "events-only")) as registry:
        for event in registry.events("fraud", limit=50):  # newest first
            details = event.details
            if details.get("alias") == "production" and details.get("to") == version:
                return event.at.timestamp()
    raise AssertionError(f"no event moves fraud@production to {version}")


# ---- nginx --------------------------------------------------------------------------------

NGINX_CONF = """\
worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 512; }}
http {{
    log_format upstreams '$msec|$status|$upstream_addr|$upstream_status';
    access_log {prefix}/access.log upstreams;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream ferry {{
{servers}
        keepalive 32;
        keepalive_timeout 4s;  # below uvicorn's 5 s: nginx never reuses a closing connection
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://ferry;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_read_timeout 30s;
            # A prediction is a pure function of its input, so a POST is safe to send again:
            # without non_idempotent nginx would not retry one that reached a dying replica.
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries 3;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).is_file()), None
    )
    if found is None:
        missing("nginx is not installed (Debian: apt-get install nginx)")
    return str(found)


@dataclass
class Nginx:
    proc: subprocess.Popen[bytes]
    port: int
    prefix: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def upstreams(self) -> list[list[str]]:
        """For each request nginx logged, in order: the replicas it tried, the last of them
        the one that answered."""
        path = self.prefix / "access.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [[a.strip() for a in line.split("|")[2].split(",")] for line in lines]


@contextmanager
def nginx(tmp: Path, upstream_ports: list[int], fail_timeout_s: float = 2) -> Iterator[Nginx]:
    """nginx in the foreground (not the distribution's service) balancing over the ports."""
    binary = nginx_binary()
    prefix = tmp / "nginx"
    prefix.mkdir()
    port = ss.free_port()
    servers = "\n".join(
        f"        server 127.0.0.1:{p} max_fails=1 fail_timeout={fail_timeout_s:g}s;"
        for p in upstream_ports
    )
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, servers=servers, port=port))
    log = prefix / "stderr.log"
    # Everything under the prefix, the start-up error log too (-e): nothing in /etc or /var.
    args = ["-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [binary, *args, "-g", "daemon off;"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = Nginx(proc, port, prefix)
    try:
        _wait_http(proc, f"{server.url}/v2/health/live", log)
        yield server
    finally:
        _stop(proc, signal.SIGQUIT)  # graceful: finish what it is proxying, then exit


# ---- load ---------------------------------------------------------------------------------


@dataclass
class Answer:
    started: float  # time.perf_counter()
    ended: float
    status: int  # 0: no HTTP answer at all
    version: str | None
    detail: str = ""


@dataclass
class Load:
    """``threads`` clients sending one-row predictions through ``url`` back to back, each on
    its own keep-alive connection, until stopped, ``bound_s`` has passed or each has sent
    ``bound_requests``."""

    url: str
    rows: list[dict[str, Any]]
    threads: int = 4
    bound_s: float = 180.0
    bound_requests: int = 50_000
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._run, args=(i,)) for i in range(self.threads)]

    def __enter__(self) -> Load:
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join()

    def _run(self, index: int) -> None:
        deadline = time.perf_counter() + self.bound_s
        count = 0
        with httpx.Client(timeout=30) as client:
            while (
                not self._stop.is_set()
                and time.perf_counter() < deadline
                and count < self.bound_requests
            ):
                row = self.rows[(count * self.threads + index) % len(self.rows)]
                count += 1
                started = time.perf_counter()
                try:
                    response = ss.predict(client, self.url, [row])
                    ok = response.status_code == 200
                    version = response.json()["model_version"] if ok else None
                    detail = "" if ok else response.text[:200]
                    ended = time.perf_counter()
                    answer = Answer(started, ended, response.status_code, version, detail)
                except httpx.HTTPError as exc:
                    answer = Answer(started, time.perf_counter(), 0, None, repr(exc))
                with self._lock:
                    self.answers.append(answer)

    def between(self, start: float, end: float = float("inf")) -> list[Answer]:
        """Answers to the requests sent in [start, end)."""
        with self._lock:
            return [a for a in self.answers if start <= a.started < end]

    def wait_for(self, count: int, after: float, timeout: float = 30.0) -> None:
        """Until ``count`` answers to requests sent after ``after`` are in."""
        deadline = time.perf_counter() + timeout
        while len(self.between(after)) < count:
            assert time.perf_counter() < deadline, f"fewer than {count} answers in {timeout} s"
            time.sleep(0.02)  # between looks at the answers, not instead of them


def failures(answers: list[Answer]) -> list[Answer]:
    return [a for a in answers if a.status != 200]


def first_version(url: str, rows: list[dict[str, Any]], version: str, timeout: float) -> float:
    """Predict on one replica directly until it answers with ``version``: when
    (``time.perf_counter``) that first answer arrived."""
    deadline = time.perf_counter() + timeout
    with httpx.Client(timeout=10) as client:
        while time.perf_counter() < deadline:
            response = ss.predict(client, url, rows)
            assert response.status_code == 200, response.text
            if response.json()["model_version"] == version:
                return time.perf_counter()
            time.sleep(0.02)  # between probes, not instead of them
    raise AssertionError(f"{url} did not serve version {version} within {timeout} s")
