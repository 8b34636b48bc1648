"""The images' recipe (deploy/docker/Dockerfile, /.dockerignore, requirements-serve.txt) checked
without a Docker engine: the Dockerfile is parsed into stages and each promise is checked on
what the final stages inherit (FROM) and copy (COPY --from)."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
REQUIREMENTS = ROOT / "deploy" / "docker" / "requirements-serve.txt"
PYPROJECT = ROOT / "pyproject.toml"
# pyproject dependencies the serve image leaves out: the lab, and onnx (only export uses it).
LAB = {
    "pandas", "pyarrow", "scikit-learn", "skl2onnx", "onnxmltools", "lightgbm", "optuna",
    "threadpoolctl", "matplotlib", "onnx", "numba",
}
# pyproject extras: those the serve image installs, and those it leaves to the full image.
SERVED_EXTRAS = ("postgres", "s3")
LAB_EXTRAS = {"dask", "dev", "torch"}
LAB_WORDS = ("scikit-learn", "sklearn", "skl2onnx", "onnxmltools", "lightgbm", "optuna",
             "matplotlib", "pandas", "pyarrow", "xgboost", "torch")


@dataclass
class Stage:
    name: str
    parent: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [rest for word, rest in self.instructions if word == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, rest) per instruction: comments dropped, continuation lines joined."""
    found: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        found.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return found


def parse(text: str) -> dict[str, Stage]:
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for word, rest in instructions(text):
        if word == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            assert match, rest
            image, name = match.group(1), match.group(2) or f"#{len(stages)}"
            current = stages[name.lower()] = Stage(name.lower(), image.lower())
        elif current is not None:
            current.instructions.append((word, rest))
    return stages


STAGES = parse(DOCKERFILE.read_text())


def lineage(name: str) -> list[Stage]:
    """The stage and those it is built FROM, nearest first."""
    chain = [STAGES[name]]
    while chain[-1].parent in STAGES:
        chain.append(STAGES[chain[-1].parent])
    return chain


def everything_in(name: str) -> list[Stage]:
    """Every stage whose work ends up in ``name``: its lineage and, recursively, the stages it
    copies from."""
    seen: list[Stage] = []
    todo = [name]
    while todo:
        for stage in lineage(todo.pop()):
            if stage in seen:
                continue
            seen.append(stage)
            for rest in stage.args("COPY"):
                source = re.search(r"--from=(\S+)", rest)
                if source and source.group(1).lower() in STAGES:
                    todo.append(source.group(1).lower())
    return seen


def effective(name: str, keyword: str) -> str | None:
    """The last ``keyword`` instruction in force in stage ``name`` (USER, HEALTHCHECK, ...)."""
    for stage in lineage(name):
        values = stage.args(keyword)
        if values:
            return values[-1]
    return None


def env(name: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for stage in reversed(lineage(name)):
        for rest in stage.args("ENV"):
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                values[key] = value
    return values


def pip_installs(stage: Stage) -> list[list[str]]:
    """The argument lists of every ``pip install`` in the stage's RUN instructions."""
    found = []
    for rest in stage.args("RUN"):
        for command in re.split(r"&&|;|\|\|", rest):
            words = shlex.split(command)
            for i in range(len(words) - 1):
                if words[i].endswith("pip") and words[i + 1] == "install":
                    found.append(words[i + 2 :])
    return found


@pytest.mark.parametrize("target", ["serve", "full"])
def test_final_stages_run_as_an_unprivileged_user(target: str) -> None:
    user = effective(target, "USER")
    assert user is not None, f"{target}: no USER, so it runs as root"
    uid, _, gid = user.partition(":")
    assert uid not in ("root", "0") and gid not in ("root", "0"), user
    # Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
    assert uid.isdigit() and int(uid) >= 1000, user


@pytest.mark.parametrize("target", ["serve", "full"])
def test_final_stages_set_ferry_home_and_python_flags(target: str) -> None:
    values = env(target)
    assert values["FERRY_HOME"] == "/var/lib/ferry"
    assert values["PYTHONDONTWRITEBYTECODE"] == "1"  # a read-only root file system
    assert values["PYTHONUNBUFFERED"] == "1"  # logs reach `docker logs` at once
    assert "/opt/ferry/bin" in values["PATH"].split(":")[0]
    assert set(effective(target, "EXPOSE").split()) == {"8080", "8081"}  # type: ignore[union-attr]


def test_serve_image_checks_readiness_with_python() -> None:
    check = effective("serve", "HEALTHCHECK")
    assert check is not None
    command = check.split(" CMD ", 1)[1]
    assert "urllib.request" in command and "curl" not in command and "wget" not in command
    assert env("serve")["HEALTHCHECK_URL"] == "http://127.0.0.1:8080/v2/health/ready"
    argv = json.loads(command)  # exec form: no shell needed in the image
    assert argv[:2] == ["python", "-c"], argv
    compile(argv[2], "<healthcheck>", "exec")
    assert "--start-period=" in check  # loading and warming models is not a failure


def test_serve_image_never_installs_the_lab() -> None:
    stages = everything_in("serve")
    assert {s.name for s in stages} >= {"serve", "build-serve", "runtime", "base"}
    assert "build-full" not in {s.name for s in stages}
    installs = [args for stage in stages for args in pip_installs(stage)]
    assert installs, "the serve image installs nothing?"
    for args in installs:
        # Either the pinned serving requirements, or Ferry itself without its dependencies.
        assert args[:1] == ["-r"] or "--no-deps" in args, args
        assert not any("[" in a for a in args if not a.startswith("-")), args  # no extras
    text = " ".join(rest for stage in stages for _, rest in stage.instructions).lower()
    assert not [w for w in LAB_WORDS if w in text]
    requirements = " ".join(r.name for r in requirement_lines()).lower()
    assert not [w for w in LAB_WORDS if w in requirements]


def test_full_image_installs_ferry_with_its_dependencies_and_every_extra() -> None:
    installs = [args for stage in everything_in("full") for args in pip_installs(stage)]
    assert not any("--no-deps" in args for args in installs)
    _, extras = pyproject_requirements()
    wanted = set(extras) - {"dev"}
    chosen = [
        set(re.fullmatch(r".*\[(.*)\]", a).group(1).split(","))  # type: ignore[union-attr]
        for args in installs
        for a in args
        if re.fullmatch(r"\S*ferry\[.*\]", a)
    ]
    assert chosen == [wanted], installs


def test_serve_is_the_default_target_and_base_images_are_pinned() -> None:
    assert list(STAGES)[-1] == "serve"  # `docker build` without --target builds the slim one
    externals = [s.parent for s in STAGES.values() if s.parent not in STAGES]
    assert externals == ["python:${python_version}-slim-bookworm"]
    default = re.search(r"^ARG PYTHON_VERSION=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert default and re.fullmatch(r"3\.1[1-9]", default.group(1))


# ---- the build context -------------------------------------------------------------------


def _pattern(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignored(path: str) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parent
    directories decides; ``!`` re-includes."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, _pattern(line.lstrip("!").strip("/"))))
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negated, pattern in rules:
        if any(pattern.fullmatch(p) for p in prefixes):
            result = not negated
    return result


def copy_sources() -> list[str]:
    sources = []
    for stage in STAGES.values():
        for rest in stage.args("COPY"):
            words = [w for w in rest.split() if not w.startswith("--")]
            if "--from=" not in rest:
                sources += words[:-1]
    return sources


def test_every_copied_path_exists_and_reaches_the_build_context() -> None:
    sources = copy_sources()
    assert {"pyproject.toml", "README.md", "src", "deploy/docker/requirements-serve.txt"} <= set(
        sources
    )
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not ignored(source), f"{source} is copied but .dockerignore leaves it out"
    assert not ignored("src/ferry/serving/server.py")
    assert not ignored("src/ferry/registry/migrations/versions/0001_initial.py")


@pytest.mark.parametrize(
    "path",
    [".git/HEAD", ".ferry/registry.db", ".venv/bin/python", "tests/unit/core/test_spec.py",
     "src/ferry/__pycache__/settings.cpython-311.pyc", "benchmarks/results/serving.json",
     "deploy/k8s/base/deployment.yaml", "runs/fraud/bundle/model.onnx"],
)
def test_local_state_stays_out_of_the_build_context(path: str) -> None:
    assert ignored(path)


# ---- requirements-serve.txt against pyproject.toml ---------------------------------------


def requirement_lines() -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def pyproject_requirements() -> tuple[dict[str, Requirement], dict[str, list[Requirement]]]:
    """(dependencies by canonical name, each extra's requirements)."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    core = {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}
    extras = {
        extra: [Requirement(line) for line in lines]
        for extra, lines in project["optional-dependencies"].items()
    }
    return core, extras


def test_every_serving_requirement_is_a_pyproject_dependency_with_the_same_range() -> None:
    core, extras = pyproject_requirements()
    declared = {canonicalize_name(r.name): r for e in SERVED_EXTRAS for r in extras[e]}
    declared.update(core)
    for req in requirement_lines():
        name = canonicalize_name(req.name)
        assert name in declared, f"{req.name} is not a dependency in pyproject.toml"
        assert req.specifier == declared[name].specifier, (req, declared[name])
        assert req.extras == declared[name].extras, (req, declared[name])


def test_every_pyproject_dependency_is_either_served_or_lab_only() -> None:
    """A dependency (or extra) added to pyproject.toml must be put in requirements-serve.txt,
    or declared lab-only here."""
    core, extras = pyproject_requirements()
    assert set(extras) <= set(SERVED_EXTRAS) | LAB_EXTRAS, "classify the new extra"
    from_extras = {canonicalize_name(r.name) for e in SERVED_EXTRAS for r in extras[e]}
    served = {canonicalize_name(r.name) for r in requirement_lines()}
    assert not served & LAB
    assert set(core) - LAB == served - from_extras, (set(core) - LAB) ^ (served - from_extras)
    assert from_extras <= served  # psycopg[binary] and s3fs: PostgreSQL and S3 in production
    names = [canonicalize_name(r.name) for r in requirement_lines()]
    assert len(names) == len(set(names)), "a requirement is listed twice"
