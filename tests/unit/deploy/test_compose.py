"""deploy/compose: the stack's wiring checked file by file (services, images, commands,
health checks, start order, mounts, the URLs one service uses to reach another), the
Prometheus and Alertmanager configs with their own tools, and the committed alert rules
against what `ferry monitor rules` writes for the spec today."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
SPEC = COMPOSE_DIR / "config" / "ferry.yaml"
PROMETHEUS = COMPOSE_DIR / "prometheus" / "prometheus.yml"
ALERTMANAGER = COMPOSE_DIR / "alertmanager" / "alertmanager.yml"
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IN_CI = bool(os.environ.get("CI"))
SERVICES = {
    "postgres", "minio", "createbuckets", "trainer", "ferry", "alert-sink", "prometheus",
    "alertmanager", "grafana",
}  # fmt: skip
# What Ferry reads from the environment: its settings and the CLI's own variables.
CLI_VARIABLES = {"FERRY_ALERT_WEBHOOK_URL", "FERRY_PREDICTION_LOG_URL", "FERRY_TOKEN"}

COMPOSE_DOC: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())


def service(name: str) -> dict[str, Any]:
    return dict(COMPOSE_DOC["services"][name])


def environment(name: str) -> dict[str, str]:
    """A service's environment with ${VAR:-default} substituted by its default."""
    values = service(name).get("environment", {})
    return {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v)) for k, v in values.items()}


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port, url
    return parts.hostname, parts.port


def published(name: str) -> set[int]:
    return {int(str(p).split(":")[-1]) for p in service(name).get("ports", [])}


def test_services_and_images() -> None:
    assert set(COMPOSE_DOC["services"]) == SERVICES
    for name in ("ferry", "trainer"):
        build = service(name)["build"]
        assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).is_file()
        stage = re.search(
            rf"^FROM \S+ AS {build['target']}$", (ROOT / build["dockerfile"]).read_text(), re.M
        )
        assert stage, f"no stage {build['target']} in {build['dockerfile']}"
    assert service("ferry")["build"]["target"] == "serve"
    assert service("trainer")["build"]["target"] == "full"
    tag = "${FERRY_VERSION:-" + VERSION + "}"
    assert service("ferry")["image"] == f"ferry-serve:{tag}"
    assert service("trainer")["image"] == f"ferry-full:{tag}"
    for name, spec in COMPOSE_DOC["services"].items():
        image = spec["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"
    host_ports = [str(p).split(":")[0] for s in COMPOSE_DOC["services"].values()
                  for p in s.get("ports", [])]
    assert len(host_ports) == len(set(host_ports)), "two services publish the same port"


def test_server_and_trainer_commands() -> None:
    assert service("ferry")["command"] == [
        "ferry", "serve", "fraud@production", "--host", "0.0.0.0", "--workers", "2",
        "--spec", "/etc/ferry/ferry.yaml",
    ]  # fmt: skip
    assert service("trainer")["command"] == [
        "ferry", "train", "/etc/ferry/ferry.yaml", "--alias", "production",
    ]  # fmt: skip
    for name in ("ferry", "trainer"):
        assert "./config/ferry.yaml:/etc/ferry/ferry.yaml:ro" in service(name)["volumes"]
    assert published("ferry") == {8080, 8081}
    # Docker's stop timeout outlasts `ferry serve --grace` (30 s by default).
    assert int(service("ferry")["stop_grace_period"].rstrip("s")) > 30
    assert service("ferry")["read_only"] is True
    assert set(service("ferry")["tmpfs"]) == {"/var/lib/ferry", "/tmp"}


def test_server_health_check_asks_readiness_without_curl() -> None:
    check = service("ferry")["healthcheck"]
    assert check["test"][:3] == ["CMD", "python", "-c"]
    code = check["test"][3]
    assert "http://127.0.0.1:8080/v2/health/ready" in code and "urllib.request" in code
    compile(code, "<healthcheck>", "exec")
    assert int(check["start_period"].rstrip("s")) >= 60  # training-sized models load slowly


def test_start_order_waits_on_health_and_completion() -> None:
    one_shot = {"createbuckets", "trainer"}
    for name, spec in COMPOSE_DOC["services"].items():
        for dependency, rule in spec.get("depends_on", {}).items():
            assert dependency in SERVICES, (name, dependency)
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in service(dependency), (name, dependency)
            elif condition == "service_completed_successfully":
                assert dependency in one_shot, (name, dependency)
            else:
                assert condition == "service_started", (name, dependency)
    for name in one_shot:
        assert service(name)["restart"] == "no"
    for name in SERVICES - one_shot:
        assert "healthcheck" in service(name), f"{name} has no health check"
    ferry = service("ferry")["depends_on"]
    assert ferry["trainer"]["condition"] == "service_completed_successfully"
    assert ferry["postgres"]["condition"] == "service_healthy"
    assert service("trainer")["depends_on"]["createbuckets"]["condition"] == (
        "service_completed_successfully"
    )


def test_ferry_environment_points_at_the_stack() -> None:
    from ferry.settings import Settings

    known = {f"FERRY_{field.upper()}" for field in Settings.model_fields} | CLI_VARIABLES
    for name in ("ferry", "trainer"):
        env = environment(name)
        assert {k for k in env if k.startswith("FERRY_")} <= known, name
        registry = urlsplit(env["FERRY_REGISTRY_URL"])
        assert registry.scheme == "postgresql" and registry.hostname == "postgres"
        assert registry.path.lstrip("/") == environment("postgres")["POSTGRES_DB"]
        assert registry.username == environment("postgres")["POSTGRES_USER"]
        assert registry.password == environment("postgres")["POSTGRES_PASSWORD"]
        assert env["FERRY_PREDICTION_LOG_URL"] == env["FERRY_REGISTRY_URL"]
        assert env["FERRY_HOME"] == "/var/lib/ferry"
        artifacts = urlsplit(env["FERRY_ARTIFACTS_URL"])
        assert artifacts.scheme == "s3"
        # The bucket exists: the one-shot `mc` service creates exactly it.
        assert f"local/{artifacts.hostname}" in " ".join(service("createbuckets")["command"])
        for variable in ("FSSPEC_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            assert host_port(env[variable]) == ("minio", 9000)
        assert env["AWS_ACCESS_KEY_ID"] == environment("minio")["MINIO_ROOT_USER"]
        assert env["AWS_SECRET_ACCESS_KEY"] == environment("minio")["MINIO_ROOT_PASSWORD"]
        assert len(env["AWS_SECRET_ACCESS_KEY"]) >= 8  # MinIO refuses shorter passwords
    webhook = environment("ferry")["FERRY_ALERT_WEBHOOK_URL"]
    assert host_port(webhook) == ("alert-sink", int(service("alert-sink")["command"][-1]))


def test_fsspec_reads_the_s3_endpoint_from_the_compose_environment() -> None:
    """Ferry's artifact store passes no storage options: the endpoint reaches s3fs through
    fsspec's configuration, which FSSPEC_S3_ENDPOINT_URL sets."""
    code = (
        "import fsspec.config\n"
        "print(fsspec.config.conf['s3']['endpoint_url'])\n"
        "from fsspec.config import apply_config\n"
        "class S3:\n    protocol = ('s3', 's3a')\n"
        "print(apply_config(S3, {})['endpoint_url'])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FSSPEC_", "AWS_"))}
    env.update(environment("ferry"))
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["http://minio:9000"] * 2


def _binds(name: str) -> list[tuple[str, str]]:
    pairs = []
    for volume in service(name).get("volumes", []):
        source, target = volume.split(":")[:2]
        pairs.append((source, target))
    return pairs


def test_every_mounted_file_exists_and_named_volumes_are_declared() -> None:
    declared = set(COMPOSE_DOC["volumes"])
    used = set()
    for name in SERVICES:
        for source, _ in _binds(name):
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert used == declared


def test_prometheus_grafana_and_alertmanager_reach_each_other() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = {
        t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]
    }
    assert "ferry:8080" in targets and "alertmanager:9093" in targets
    alerting = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alerting == ["alertmanager:9093"] and 9093 in published("alertmanager")
    prometheus = dict(_binds("prometheus"))
    assert prometheus["./prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    # rule_files are relative to the config file: the rules directory is mounted beside it.
    assert config["rule_files"] == ["rules/*.yml"]
    assert prometheus["../prometheus/rules"] == "/etc/prometheus/rules"
    assert list(RULES_DIR.glob("*.yml")), "no rules to load"
    grafana = dict(_binds("grafana"))
    provisioning = COMPOSE_DIR / "../grafana/provisioning"
    assert grafana["../grafana/provisioning"] == "/etc/grafana/provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert host_port(datasource["datasources"][0]["url"]) == ("prometheus", 9090)
    dashboards = yaml.safe_load((provisioning / "dashboards" / "ferry.yml").read_text())
    assert grafana["../grafana/dashboards"] == dashboards["providers"][0]["options"]["path"]
    assert (COMPOSE_DIR / "../grafana/dashboards/ferry.json").is_file()
    receivers = yaml.safe_load(ALERTMANAGER.read_text())["receivers"]
    hooks = [h["url"] for r in receivers for h in r.get("webhook_configs", [])]
    assert hooks and all(host_port(u)[0] == "alert-sink" for u in hooks)


# ---- the configs, checked by the tools that load them -----------------------------------


def tool(name: str) -> str:
    """A Prometheus tool; CI installs Debian's prometheus package, so only a developer
    machine without it skips."""
    path = shutil.which(name)
    if path is None:
        if IN_CI and name == "promtool":
            pytest.fail(f"{name} is not installed in CI (.ci/run installs prometheus)")
        pytest.skip(f"{name} is not installed (Debian: apt-get install prometheus)")
    return path


def test_promtool_accepts_the_compose_prometheus_config(tmp_path: Path) -> None:
    # Laid out as in the container, so the rule files are found and checked too.
    shutil.copy(PROMETHEUS, tmp_path / "prometheus.yml")
    shutil.copytree(RULES_DIR, tmp_path / "rules")
    done = subprocess.run(
        [tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr
    assert re.search(r"SUCCESS: \d+ rules found", done.stdout + done.stderr)


def test_promtool_accepts_the_committed_rules() -> None:
    files = sorted(RULES_DIR.glob("*.yml"))
    done = subprocess.run(
        [tool("promtool"), "check", "rules", *map(str, files)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_amtool_accepts_the_alertmanager_config() -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool is not installed (Debian: apt-get install prometheus-alertmanager)")
    done = subprocess.run(
        [amtool, "check-config", str(ALERTMANAGER)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_committed_rules_are_what_ferry_writes_for_the_spec() -> None:
    from ferry.core.spec import load_spec
    from ferry.monitoring.rules import render_rules

    committed = (RULES_DIR / "fraud.yml").read_text()
    assert committed == render_rules(load_spec(SPEC)), (
        "regenerate: ferry monitor rules deploy/compose/config/ferry.yaml "
        "-o deploy/prometheus/rules/fraud.yml (and deploy/k8s/base/prometheusrule.yaml)"
    )


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=30
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


def test_docker_compose_accepts_the_file() -> None:
    """`docker compose config` needs no engine: it loads, interpolates and validates the file
    against the Compose specification."""
    command = compose_command()
    if command is None:
        pytest.skip("neither the docker compose plugin nor docker-compose is installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FERRY_", "POSTGRES_"))}
    done = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_the_deployed_spec_is_the_quickstart_model_with_monitoring_spelled_out() -> None:
    from ferry.cli.specs import QUICKSTART
    from ferry.core.spec import load_spec, parse_spec

    deployed = load_spec(SPEC)
    # The lineage hash leaves monitoring and retraining out: the same model is trained.
    assert deployed.spec_hash() == parse_spec(QUICKSTART).spec_hash()
    assert {r.kind for r in deployed.monitoring.alerts or []} == {
        "drift_share", "accuracy_drop", "latency_p99", "error_rate",
    }  # fmt: skip
