"""The image, the compose stack and the Kubernetes manifests, checked without Docker or a cluster:
they render, pass the Kubernetes schemas, name only real settings, and give sandbox privileges to
the workers alone."""

from __future__ import annotations

import posixpath
import re
import shlex
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import AliasChoices

from codeactions.config import GROUPS, ServerSettings
from tests.conftest import need

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
KUSTOMIZATIONS = sorted(path.parent for path in DEPLOY.rglob("kustomization.yaml"))
KUBERNETES_VERSION = "1.31.0"  # the oldest release the manifests are meant for
IMAGE = "codeactions"

# What the sandbox runner does as root (runner/host/: setup.py, zygote.py, namespaces.py,
# network.py, processes.py, warm.py); each is explained where it is granted.
WORKER_CAPABILITIES = {
    "SETUID",
    "SETGID",
    "CHOWN",
    "DAC_OVERRIDE",
    "KILL",
    "SYS_ADMIN",
    "NET_ADMIN",
    "SYS_PTRACE",
}
API_PORT, WORKER_PORT = 8050, 8051
DEFAULT_GRACE = float(ServerSettings.model_fields["shutdown_grace_seconds"].default)


def setting_names() -> set[str]:
    """Every CODEACTIONS_* name a setting is read from (as settings_doc derives them)."""
    names = set()
    for group in GROUPS.values():
        for field in group.model_fields.values():
            alias = field.validation_alias
            if isinstance(alias, AliasChoices):
                names.add(str(alias.choices[0]))
    return names


def unknown_settings(names: set[str]) -> set[str]:
    return names - setting_names()


# ---------------------------------------------------------------------------------- Kubernetes


@cache
def kustomize_problem() -> str:
    """Why `kubectl kustomize` cannot render these manifests here; empty when it can."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return "kubectl is not installed (make toolchains installs it)"
    out = subprocess.run(
        [kubectl, "version", "--client"], capture_output=True, text=True, timeout=60
    ).stdout
    match = re.search(r"Kustomize Version: v(\d+)", out)
    if match is None or int(match[1]) < 5:
        return f"kubectl embeds no kustomize v5 (needs kubectl 1.27 or later): {out.strip()!r}"
    return ""


@cache
def rendered(directory: Path) -> list[dict[str, Any]]:
    problem = kustomize_problem()
    need(not problem, problem)
    done = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def objects(kind: str, directory: Path = DEPLOY / "base") -> list[dict[str, Any]]:
    return [doc for doc in rendered(directory) if doc["kind"] == kind]


def workload(component: str, directory: Path = DEPLOY / "base") -> dict[str, Any]:
    """The Deployment (or Job) of `api`, `worker` or `migrate`."""
    found = [
        doc
        for doc in rendered(directory)
        if doc["kind"] in ("Deployment", "Job")
        and doc["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        == component
    ]
    assert len(found) == 1, f"one workload of component {component}, found {len(found)}"
    return found[0]


def pod_spec(component: str) -> dict[str, Any]:
    spec: dict[str, Any] = workload(component)["spec"]["template"]["spec"]
    return spec


def container(component: str) -> dict[str, Any]:
    containers = pod_spec(component)["containers"]
    assert len(containers) == 1
    found: dict[str, Any] = containers[0]
    return found


def env_value(box: dict[str, Any], name: str) -> str | None:
    for item in box.get("env", []):
        if item["name"] == name:
            return str(item["value"]) if "value" in item else None
    return None


def configured(component: str, name: str) -> str | None:
    """What the container of `component` gets for `name`: its env, else its ConfigMaps."""
    box = container(component)
    value = env_value(box, name)
    if value is not None:
        return value
    maps = {doc["metadata"]["name"]: doc.get("data", {}) for doc in objects("ConfigMap")}
    for source in box.get("envFrom", []):
        if "configMapRef" in source:
            data = maps[source["configMapRef"]["name"]]
            if name in data:
                return str(data[name])
    return None


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_kustomization_renders_objects_the_kubernetes_schema_accepts(
    directory: Path,
) -> None:
    docs = rendered(directory)
    assert docs
    problems = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(part) for part in exc.absolute_path)
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {where}: {exc.message}")
    assert not problems, "\n".join(problems)


def test_there_is_a_base_and_a_production_overlay() -> None:
    assert DEPLOY / "base" in KUSTOMIZATIONS
    assert DEPLOY / "overlays" / "production" in KUSTOMIZATIONS


@pytest.mark.parametrize("component", ["api", "migrate"])
def test_api_and_migration_pods_hold_no_privilege(component: str) -> None:
    pod = pod_spec(component)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    context = container(component)["securityContext"]
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context.get("privileged", False) is False
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True


def test_the_api_sends_runs_to_the_workers() -> None:
    assert env_value(container("api"), "CODEACTIONS_RUNNER_DISPATCH") == "rabbitmq"
    assert container("api")["args"] == ["serve", "--no-migrate"]
    assert container("worker")["args"] == ["worker"]
    assert container("migrate")["args"] == ["migrate"]


def test_workers_get_exactly_the_documented_capabilities() -> None:
    context = container("worker")["securityContext"]
    assert context["capabilities"]["drop"] == ["ALL"]
    assert set(context["capabilities"]["add"]) == WORKER_CAPABILITIES
    assert len(context["capabilities"]["add"]) == len(WORKER_CAPABILITIES)
    assert context.get("privileged", False) is False
    assert pod_spec("worker")["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod_spec("worker")["automountServiceAccountToken"] is False


def test_every_worker_capability_is_explained_where_it_is_granted() -> None:
    lines = (DEPLOY / "base" / "worker.yaml").read_text().splitlines()
    granted = {
        index: match[1]
        for index, line in enumerate(lines)
        if (match := re.fullmatch(r"\s*- ([A-Z_]+)", line)) and match[1] in WORKER_CAPABILITIES
    }
    assert sorted(granted.values()) == sorted(WORKER_CAPABILITIES)
    for index, capability in granted.items():
        # A comment right above it, or above the capabilities it is listed with (SETUID, SETGID).
        above = index - 1
        while above in granted:
            above -= 1
        assert lines[above].strip().startswith("#"), f"{capability} is not explained"


@pytest.mark.parametrize(("component", "port"), [("api", API_PORT), ("worker", WORKER_PORT)])
def test_probes_ask_healthz_for_liveness_and_health_for_readiness(
    component: str, port: int
) -> None:
    box = container(component)
    assert [p["containerPort"] for p in box["ports"]] == [port]
    assert box["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
    assert box["readinessProbe"]["httpGet"] == {"path": "/health", "port": port}
    assert box["startupProbe"]["httpGet"] == {"path": "/healthz", "port": port}


@pytest.mark.parametrize("component", ["api", "worker"])
def test_pods_are_given_longer_than_their_drain_before_they_are_killed(component: str) -> None:
    grace = float(configured(component, "CODEACTIONS_SHUTDOWN_GRACE_SECONDS") or DEFAULT_GRACE)
    box = container(component)
    pre_stop = box.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
    assert pod_spec(component)["terminationGracePeriodSeconds"] > grace + sleep
    if component == "api":
        assert sleep >= 5, "the API waits until its endpoint is removed before it stops"


def test_manifests_name_only_real_settings() -> None:
    for directory in KUSTOMIZATIONS:
        names: set[str] = set()
        for doc in rendered(directory):
            if doc["kind"] in ("ConfigMap", "Secret"):
                names |= set(doc.get("data", {})) | set(doc.get("stringData", {}))
            if doc["kind"] in ("Deployment", "Job"):
                for box in doc["spec"]["template"]["spec"]["containers"]:
                    names |= {item["name"] for item in box.get("env", [])}
        assert names
        assert not unknown_settings(names), directory


def test_settings_and_secrets_the_pods_use_exist() -> None:
    for directory in KUSTOMIZATIONS:
        docs = rendered(directory)
        maps = {doc["metadata"]["name"] for doc in docs if doc["kind"] == "ConfigMap"}
        secrets = {doc["metadata"]["name"] for doc in docs if doc["kind"] == "Secret"}
        for doc in docs:
            if doc["kind"] not in ("Deployment", "Job"):
                continue
            pod = doc["spec"]["template"]["spec"]
            for box in pod["containers"]:
                for source in box.get("envFrom", []):
                    if "configMapRef" in source:
                        assert source["configMapRef"]["name"] in maps
                    if "secretRef" in source:
                        assert source["secretRef"]["name"] in secrets
                for item in box.get("env", []):
                    ref = item.get("valueFrom", {})
                    if "configMapKeyRef" in ref:
                        assert ref["configMapKeyRef"]["name"] in maps
                    if "secretKeyRef" in ref:
                        assert ref["secretKeyRef"]["name"] in secrets
                volumes = {volume["name"] for volume in pod.get("volumes", [])}
                for mount in box.get("volumeMounts", []):
                    assert mount["name"] in volumes
            for volume in pod.get("volumes", []):
                if "configMap" in volume:
                    assert volume["configMap"]["name"] in maps
                if "secret" in volume:
                    assert volume["secret"]["secretName"] in secrets


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(REPO)))
def test_autoscalers_budgets_and_services_aim_at_their_deployments(directory: Path) -> None:
    docs = rendered(directory)
    deployments = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "Deployment"}
    pods = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()}
    for name, deployment in deployments.items():
        assert selects(deployment["spec"]["selector"]["matchLabels"], pods[name])
    scaled = [
        doc["spec"]["scaleTargetRef"] for doc in docs if doc["kind"] == "HorizontalPodAutoscaler"
    ]
    assert sorted(target["name"] for target in scaled) == sorted(deployments)
    for target in scaled:
        assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
    budgets = [doc for doc in docs if doc["kind"] == "PodDisruptionBudget"]
    covered = []
    for budget in budgets:
        chosen = [
            n for n, lab in pods.items() if selects(budget["spec"]["selector"]["matchLabels"], lab)
        ]
        assert len(chosen) == 1, budget["metadata"]["name"]
        covered += chosen
    assert sorted(covered) == sorted(deployments)
    ports = {"codeactions-api": API_PORT, "codeactions-worker": WORKER_PORT}
    for service in (doc for doc in docs if doc["kind"] == "Service"):
        chosen = [n for n, lab in pods.items() if selects(service["spec"]["selector"], lab)]
        assert len(chosen) == 1, service["metadata"]["name"]
        assert [p["port"] for p in service["spec"]["ports"]] == [ports[chosen[0]]]
    assert {doc["spec"].get("type", "ClusterIP") for doc in docs if doc["kind"] == "Service"} == {
        "ClusterIP"
    }


def test_the_production_overlay_pins_its_image_in_its_namespace() -> None:
    docs = rendered(DEPLOY / "overlays" / "production")
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "codeactions"
        if doc["kind"] in ("Deployment", "Job"):
            for box in doc["spec"]["template"]["spec"]["containers"]:
                assert not box["image"].endswith(":latest") and ":" in box["image"]


# ------------------------------------------------------------------------------------- Compose


@cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def compose_service(name: str) -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"][name]
    return found


def ours(service: dict[str, Any]) -> bool:
    return "build" in service or str(service.get("image", "")).startswith(IMAGE)


def test_compose_runs_the_whole_stack() -> None:
    services = compose()["services"]
    assert {"postgres", "redis", "rabbitmq", "migrate", "api", "worker"} <= set(services)
    assert services["postgres"]["image"] == "postgres:15"
    assert services["redis"]["image"] == "redis:7"
    assert services["rabbitmq"]["image"] == "rabbitmq:3-management"
    assert compose_service("migrate")["command"] == ["migrate"]
    assert compose_service("api")["command"] == ["serve", "--no-migrate"]
    assert compose_service("worker")["command"] == ["worker"]
    assert compose_service("worker")["deploy"]["replicas"] == 2
    env = compose_service("api")["environment"]
    assert env["CODEACTIONS_RUNNER_DISPATCH"] == "rabbitmq"
    assert env["CODEACTIONS_S3_ENABLED"] == "true"


def test_compose_api_holds_no_privilege() -> None:
    api = compose_service("api")
    assert "cap_add" not in api and not api.get("privileged", False)
    assert api["cap_drop"] == ["ALL"]
    assert not str(api["user"]).startswith("0")
    assert "no-new-privileges:true" in api["security_opt"]
    assert api["read_only"] is True


def test_compose_workers_get_exactly_the_documented_capabilities() -> None:
    worker = compose_service("worker")
    assert set(worker["cap_add"]) == WORKER_CAPABILITIES
    assert len(worker["cap_add"]) == len(WORKER_CAPABILITIES)
    assert worker["cap_drop"] == ["ALL"]
    assert not worker.get("privileged", False)
    assert "seccomp=unconfined" not in worker["security_opt"]
    text = COMPOSE.read_text()
    for capability in WORKER_CAPABILITIES:
        assert re.search(rf"#\s+[A-Z_, ]*\b{capability}\b", text), f"{capability} explained"


def test_compose_starts_each_part_after_what_it_needs() -> None:
    services = compose()["services"]
    for name in ("api", "worker"):
        needs = services[name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully"
        assert needs["rabbitmq"]["condition"] == "service_healthy"
        assert needs["redis"]["condition"] == "service_healthy"
        assert "healthcheck" in services[name]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, name
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], dependency


@pytest.mark.parametrize("name", ["api", "worker"])
def test_compose_stops_after_the_drain(name: str) -> None:
    service = compose_service(name)
    grace = float(service["environment"].get("CODEACTIONS_SHUTDOWN_GRACE_SECONDS", DEFAULT_GRACE))
    assert float(service["stop_grace_period"].removesuffix("s")) > grace


def test_compose_names_only_real_settings() -> None:
    names: set[str] = set()
    for service in compose()["services"].values():
        if ours(service):
            names |= set(service.get("environment", {}))
    assert names
    assert not unknown_settings(names)


# ------------------------------------------------------------------------------------- Dockerfile


@cache
def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped (as Docker does)."""
    found = []
    current = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        keyword, _, rest = (current + stripped).partition(" ")
        found.append((keyword.upper(), rest.strip()))
        current = ""
    return found


def arguments(keyword: str) -> list[str]:
    return [rest for word, rest in instructions() if word == keyword]


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last = max(index for index, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last:]


def image_env() -> dict[str, str]:
    env = {}
    for word, rest in final_stage():
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def dockerignored() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerfile_copies_only_what_the_repository_has() -> None:
    ignored = dockerignored()
    for rest in arguments("COPY"):
        words = shlex.split(rest)
        if any(word.startswith("--from=") for word in words):
            continue
        for source in [word for word in words if not word.startswith("--")][:-1]:
            assert (REPO / source).exists(), source
            assert source.rstrip("/") not in ignored, source


def test_dockerfile_builds_from_the_lock_files_make_uses() -> None:
    runs = " ".join(arguments("RUN"))
    copies = " ".join(arguments("COPY"))
    assert "pip install -q -r requirements.lock" in runs
    assert "pip install -q --no-deps -e ." in runs  # as make: the runner needs src/ (see there)
    assert "python -m venv /app/.venv-runtime" in runs
    assert "/app/.venv-runtime/bin/pip install -q -r runtime/requirements.txt" in runs
    assert "npm ci" in runs and "console/package-lock.json" in copies
    assert "tsc --noEmit" in runs and "vite build" in runs
    packages = " ".join(rest for word, rest in final_stage() if word == "RUN").split()
    assert {"golang-go", "nodejs", "ffmpeg", "iptables"} <= set(packages)


def test_dockerfile_ships_the_console_vite_builds() -> None:
    out_dir = re.search(r'outDir:\s*"([^"]+)"', (REPO / "console/vite.config.ts").read_text())
    assert out_dir is not None
    stage = workdir = ""
    for word, rest in instructions():
        if word == "FROM":
            stage = rest.split()[-1] if " AS " in rest.upper() else ""
        if word == "WORKDIR" and stage == "console":
            workdir = rest
    built = posixpath.normpath(posixpath.join(workdir, out_dir[1]))
    assert any(
        rest.split()[:2] == ["--from=console", built]
        and rest.split()[2] == "/app/src/codeactions/console/dist"
        for rest in arguments("COPY")
    )


def test_the_image_listens_on_every_interface_and_uses_its_own_interpreters() -> None:
    env = image_env()
    assert env["CODEACTIONS_HOST"] == "0.0.0.0"
    assert env["CODEACTIONS_WORKER_HOST"] == "0.0.0.0"
    assert env["CODEACTIONS_RUNNER_PYTHON"] == "/app/.venv-runtime/bin/python"
    assert env["CODEACTIONS_RUNNER_NODE"] == "/usr/bin/node"
    assert env["CODEACTIONS_RUNNER_GO"] == "/usr/bin/go"
    assert not unknown_settings({name for name in env if name.startswith("CODEACTIONS_")})


def test_the_image_serves_by_default_and_runs_workers_on_demand() -> None:
    assert final_stage()[0][1].startswith("python:3.11-slim-bookworm")
    assert arguments("ENTRYPOINT")[-1] == '["codeactions"]'
    assert arguments("CMD")[-1] == '["serve"]'
    assert set(" ".join(arguments("EXPOSE")).split()) == {str(API_PORT), str(WORKER_PORT)}
    assert arguments("USER")[-1].split(":")[0] not in ("0", "root")


def test_dockerignore_keeps_local_environments_out() -> None:
    assert {".git", ".venv", ".venv-runtime", "console/node_modules"} <= set(dockerignored())
