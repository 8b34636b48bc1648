"""The Kubernetes manifests (deploy/k8s): every object of the base and of the rendered
production overlay validated against the Kubernetes 1.30 OpenAPI schemas (kubernetes-validate,
strict: unknown fields fail, offline), the Prometheus Operator objects checked structurally,
and the promises that tie the objects together (probes, draining, security, references)."""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
PRODUCTION = K8S / "overlays" / "production"
KUBERNETES_VERSION = "1.30.0"
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}  # CRDs: no schema in kubernetes-validate
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
SPEC = ROOT / "deploy" / "compose" / "config" / "ferry.yaml"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "fraud.yml"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

Doc = dict[str, Any]


# ---- a tiny kustomize: the subset these manifests use --------------------------------------

KNOWN_KEYS = {"apiVersion", "kind", "namespace", "resources", "images", "patches"}
MERGE_BY_NAME = {"containers", "initContainers", "env", "volumes"}


def _merge(base: Any, patch: Any, key: str = "") -> Any:
    """A strategic merge patch for what the overlays patch: maps merge, the named lists
    (containers, env, volumes) merge item by item on ``name``, anything else is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        for name, value in patch.items():
            base[name] = _merge(base[name], value, name) if name in base else value
        return base
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_BY_NAME:
        for item in patch:
            found = [b for b in base if b.get("name") == item.get("name")]
            if found:
                _merge(found[0], item)
            else:
                base.append(item)
        return base
    return patch


def _containers(doc: Doc) -> Iterator[Doc]:
    spec = doc.get("spec", {})
    spec = spec.get("jobTemplate", {}).get("spec", spec)
    pod = spec.get("template", {}).get("spec", {})
    yield from pod.get("initContainers", [])
    yield from pod.get("containers", [])


def render(directory: Path) -> list[Doc]:
    """``kubectl kustomize directory`` for resources, strategic-merge patches by path, images
    and namespace (a kustomization using anything else fails here, on purpose)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert set(kustomization) <= KNOWN_KEYS, set(kustomization) - KNOWN_KEYS
    docs: list[Doc] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            docs += render(path)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for patch in kustomization.get("patches", []):
        assert set(patch) == {"path"}, patch
        body = yaml.safe_load((directory / patch["path"]).read_text())
        targets = [d for d in docs if (d["kind"], name(d)) == (body["kind"], name(body))]
        assert len(targets) == 1, f"{patch['path']} patches {len(targets)} objects"
        _merge(targets[0], body)
    for image in kustomization.get("images", []):
        for doc in docs:
            for container in _containers(doc):
                if re.split(r"[:@]", container["image"])[0] == image["name"]:
                    container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    if "namespace" in kustomization:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kustomization["namespace"]
    return docs


@functools.cache
def _kubectl_output(directory: Path) -> str | None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def kubectl_kustomize(directory: Path) -> list[Doc] | None:
    """kubectl's own rendering when kubectl is installed (it works offline), else None."""
    output = _kubectl_output(directory)
    return None if output is None else [d for d in yaml.safe_load_all(output) if d]


def name(doc: Doc) -> str:
    return str(doc["metadata"]["name"])


def by_key(docs: list[Doc]) -> dict[tuple[str, str], Doc]:
    keyed = {(d["kind"], name(d)): d for d in docs}
    assert len(keyed) == len(docs), "two objects share a kind and name"
    return keyed


@pytest.fixture(scope="module", params=["base", "production"])
def rendered(request: pytest.FixtureRequest) -> dict[tuple[str, str], Doc]:
    directory = BASE if request.param == "base" else PRODUCTION
    return by_key(kubectl_kustomize(directory) or render(directory))


@pytest.fixture(scope="module")
def base() -> dict[tuple[str, str], Doc]:
    return by_key(render(BASE))


@pytest.fixture(scope="module")
def production() -> dict[tuple[str, str], Doc]:
    return by_key(kubectl_kustomize(PRODUCTION) or render(PRODUCTION))


def pod_spec(doc: Doc) -> Doc:
    spec = doc["spec"]
    return dict(spec.get("jobTemplate", {}).get("spec", spec)["template"]["spec"])


def container(doc: Doc, index: int = 0) -> Doc:
    return dict(pod_spec(doc)["containers"][index])


def flag(args: list[str], option: str) -> str:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"{option}=")]
    assert len(values) == 1, (option, args)
    return values[0]


# ---- the renderer and the schemas --------------------------------------------------------


@pytest.mark.parametrize("directory", [BASE, PRODUCTION], ids=["base", "production"])
def test_tiny_renderer_matches_kubectl(directory: Path) -> None:
    """CI may lack kubectl: the fallback renderer must give what kubectl gives."""
    real = kubectl_kustomize(directory)
    if real is None:
        pytest.skip("kubectl is not installed: the tests use the built-in renderer alone")
    assert by_key(render(directory)) == by_key(real)


def test_every_base_file_is_a_resource_of_the_base() -> None:
    listed = set(yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_every_object_validates_against_the_kubernetes_schemas(
    rendered: dict[tuple[str, str], Doc],
) -> None:
    checked = set()
    for (kind, _), doc in rendered.items():
        if kind in OPERATOR_KINDS:
            continue
        version = kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert version == "1.30"
        checked.add(kind)
    assert checked >= {
        "Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap", "Secret",
        "CronJob", "PodDisruptionBudget", "ServiceAccount",
    }  # fmt: skip


def test_the_validator_rejects_what_the_api_server_would() -> None:
    """The check above has teeth: a misspelt field and a wrong type both fail."""
    deployment = copy.deepcopy(render(BASE))
    doc = next(d for d in deployment if d["kind"] == "Deployment")
    typo = copy.deepcopy(doc)
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    wrong_type = copy.deepcopy(doc)
    wrong_type["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "45s"
    for broken in (typo, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_operator_objects_have_the_shape_the_operator_expects(
    rendered: dict[tuple[str, str], Doc],
) -> None:
    monitor = rendered["ServiceMonitor", "ferry"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = rendered["Service", "ferry"]
    assert monitor["metadata"].get("namespace") == service["metadata"].get("namespace")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert set(monitor["spec"]) == {"selector", "endpoints"}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
        assert re.fullmatch(r"\d+s", endpoint["interval"])
        assert int(endpoint["scrapeTimeout"][:-1]) < int(endpoint["interval"][:-1])
    rule = rendered["PrometheusRule", "ferry-fraud"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and set(rule["spec"]) == {"groups"}
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    for group in rule["spec"]["groups"]:
        for item in group["rules"]:
            assert set(item) <= {"alert", "expr", "for", "labels", "annotations"}
            assert re.fullmatch(r"\d+[smh]", item["for"]) and item["expr"].strip()


# ---- how the objects fit together --------------------------------------------------------


def test_service_hpa_pdb_and_monitor_select_the_serving_pods(
    rendered: dict[tuple[str, str], Doc],
) -> None:
    deployment = rendered["Deployment", "ferry-serve"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = rendered["Service", "ferry"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert rendered["PodDisruptionBudget", "ferry-serve"]["spec"]["selector"]["matchLabels"] == (
        deployment["spec"]["selector"]["matchLabels"]
    )
    named = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
    assert named == {"http": 8080, "grpc": 8081}
    assert {(p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        (8080, "http"), (8081, "grpc"),
    }  # fmt: skip
    target = rendered["HorizontalPodAutoscaler", "ferry-serve"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "ferry-serve")
    assert "replicas" not in deployment["spec"]  # the HPA owns it


def test_every_referenced_configmap_and_secret_exists(
    rendered: dict[tuple[str, str], Doc],
) -> None:
    for doc in rendered.values():
        if doc["kind"] not in ("Deployment", "CronJob"):
            continue
        spec = pod_spec(doc)
        volumes = spec["volumes"]
        wanted = {("ConfigMap", v["configMap"]["name"]) for v in volumes if "configMap" in v}
        for item in spec["containers"]:
            for source in item.get("envFrom", []):
                if "configMapRef" in source:
                    wanted.add(("ConfigMap", source["configMapRef"]["name"]))
                if "secretRef" in source:
                    wanted.add(("Secret", source["secretRef"]["name"]))
            volumes = {v["name"] for v in spec["volumes"]}
            assert {m["name"] for m in item["volumeMounts"]} <= volumes
        assert ("ServiceAccount", spec["serviceAccountName"]) in rendered
        assert wanted <= set(rendered), wanted - set(rendered)
        assert {("ConfigMap", "ferry-spec"), ("Secret", "ferry-secrets")} <= wanted


def test_serving_probes_and_draining(rendered: dict[tuple[str, str], Doc]) -> None:
    deployment = rendered["Deployment", "ferry-serve"]
    main = container(deployment)
    assert main["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert main["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert main["command"] == ["ferry", "serve"]
    args = main["args"]
    assert args[0] == "fraud@production" and flag(args, "--host") == "0.0.0.0"
    assert flag(args, "--spec") == "/etc/ferry/ferry.yaml"
    grace, drain = float(flag(args, "--grace")), float(flag(args, "--drain-delay"))
    # The kubelet kills at terminationGracePeriodSeconds after SIGTERM; Ferry is done by
    # --grace after it (drain delay included), with room to spare for worker shutdown.
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] >= grace + 10
    assert 0 < drain < grace
    assert "lifecycle" not in main  # no preStop sleep: the drain delay does its job
    # Readiness notices a non-ready pod well within the drain delay.
    probe = main["readinessProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] <= drain
    # --workers comes from SERVE_WORKERS, which Kubernetes expands in args.
    assert flag(args, "--workers") == "$(SERVE_WORKERS)"
    workers = int(next(e["value"] for e in main["env"] if e["name"] == "SERVE_WORKERS"))
    assert 1 <= workers <= int(main["resources"]["limits"]["cpu"])
    assert float(flag(args, "--poll-interval")) <= 30  # alias moves reach replicas quickly


def test_pods_run_unprivileged_on_a_read_only_root(rendered: dict[tuple[str, str], Doc]) -> None:
    for key in [("Deployment", "ferry-serve"), ("CronJob", "ferry-retrain")]:
        spec = pod_spec(rendered[key])
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 10001  # the images' user
        assert spec["automountServiceAccountToken"] is False
        main = container(rendered[key])
        security = main["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        env = {e["name"]: e.get("value") for e in main["env"]}
        mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        # Everything Ferry writes is on an emptyDir: FERRY_HOME and the temporary directory.
        for path in (env["FERRY_HOME"], "/tmp"):
            assert "emptyDir" in volumes[mounts[path]], path
        assert {"requests", "limits"} <= set(main["resources"])


def test_retraining_cronjob_runs_ferry_retrain_with_the_full_image(
    rendered: dict[tuple[str, str], Doc],
) -> None:
    cronjob = rendered["CronJob", "ferry-retrain"]
    main = container(cronjob)
    assert main["command"] == ["ferry", "retrain", "fraud", "--spec", "/etc/ferry/ferry.yaml"]
    assert re.split(r"[:@]", main["image"])[0].endswith("ferry-full")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    job = cronjob["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0  # a rejected challenger exits 1: retrying only retrains
    assert pod_spec(cronjob)["restartPolicy"] == "Never"
    assert len(cronjob["spec"]["schedule"].split()) == 5
    serving = container(rendered["Deployment", "ferry-serve"])
    assert re.split(r"[:@]", serving["image"])[0].endswith("ferry-serve")
    assert main["envFrom"] == serving["envFrom"]  # same registry, artifacts and log


def test_spec_configmap_is_the_compose_spec_and_parses() -> None:
    from ferry.core.spec import parse_spec

    configmap = render(BASE)
    spec_map = next(d for d in configmap if (d["kind"], name(d)) == ("ConfigMap", "ferry-spec"))
    text = spec_map["data"]["ferry.yaml"]
    assert text == SPEC.read_text()
    spec = parse_spec(yaml.safe_load(text))
    assert spec.name == "fraud"


def test_settings_hold_no_secrets_and_secrets_are_placeholders(
    base: dict[tuple[str, str], Doc],
) -> None:
    from ferry.settings import Settings

    settings = base["ConfigMap", "ferry-settings"]["data"]
    secret = base["Secret", "ferry-secrets"]["stringData"]
    assert not set(settings) & set(secret)
    assert not [k for k in settings if re.search(r"TOKEN|SECRET|PASSWORD|_URL$", k)
                and "://" in settings[k] and "@" in settings[k]]  # no credentials in URLs
    assert all("CHANGE-ME" in value for value in secret.values()), secret
    ferry_keys = {f"FERRY_{f.upper()}" for f in Settings.model_fields}
    for key in [*settings, *secret]:
        if key.startswith("FERRY_"):
            assert key in ferry_keys | {"FERRY_ALERT_WEBHOOK_URL"}, key
    assert {"FERRY_REGISTRY_URL", "FERRY_PREDICTION_LOG_URL", "FERRY_PREDICT_TOKENS"} <= set(secret)
    assert settings["FERRY_ARTIFACTS_URL"].startswith("s3://")


def test_production_overlay_scales_up_and_pins_released_images(
    base: dict[tuple[str, str], Doc], production: dict[tuple[str, str], Doc]
) -> None:
    assert set(production) == set(base) | {("Namespace", "ferry")}
    for (kind, _), doc in production.items():
        if kind not in CLUSTER_SCOPED:
            assert doc["metadata"]["namespace"] == "ferry"
    low = base["HorizontalPodAutoscaler", "ferry-serve"]["spec"]
    high = production["HorizontalPodAutoscaler", "ferry-serve"]["spec"]
    assert high["minReplicas"] > low["minReplicas"] >= 2  # the PDB keeps one serving
    assert high["maxReplicas"] > low["maxReplicas"] >= low["minReplicas"]

    def cpu(doc: Doc) -> float:
        return float(container(doc)["resources"]["limits"]["cpu"])

    for key in [("Deployment", "ferry-serve"), ("CronJob", "ferry-retrain")]:
        assert cpu(production[key]) > cpu(base[key])
        image = container(production[key])["image"]
        assert image.startswith("registry.example.com/") and image.endswith(f":{VERSION}")
        assert container(base[key])["image"].endswith(f":{VERSION}")
    namespace = production["Namespace", "ferry"]["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"


def test_pods_run_as_the_user_the_images_create(base: dict[tuple[str, str], Doc]) -> None:
    dockerfile = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    users = set(re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.M))
    assert len(users) == 1, users
    uid, gid = map(int, users.pop())
    for key in [("Deployment", "ferry-serve"), ("CronJob", "ferry-retrain")]:
        context = pod_spec(base[key])["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid)
