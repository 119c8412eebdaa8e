"""The Kubernetes reference deployment (deploy/k8s), checked offline.

Every manifest is validated against the Kubernetes OpenAPI schemas that ``kubernetes-validate`` bundles (strict:
an unknown or misspelt field fails), for the oldest and the newest Kubernetes release we claim. Then the
invariants that matter and that no schema sees: the probes reach real routes on the container's port and the
liveness probe survives a database outage, the PodDisruptionBudget, Service and autoscaler select and target this
Deployment, every variable it sets is a real ``BLINA_CDS_*`` setting (and the whole environment starts the app),
every Secret it reads exists in the example with that key, and the image is the one the Dockerfile documents.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from fastapi import FastAPI

from service.main import create_app
from service.settings import Settings
from service.store import engine_url
from tests.test_dockerfile import DOCKERFILE, documented_tag, instructions

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
"""Oldest and newest release the manifests are checked against (kubernetes-validate bundles 1.25–1.37)."""
SECRETS_EXAMPLE = K8S / "secrets.example.yaml"
PLACEHOLDER = "REPLACE-ME"


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            for doc in documents(path):
                yield path, doc


def the(kind: str) -> dict[str, Any]:
    found = [doc for path, doc in manifests() if doc["kind"] == kind and path != SECRETS_EXAMPLE]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return the("Deployment")


@pytest.fixture(scope="module")
def pod(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod["containers"]
    return dict(only)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are checked here"
    match = selector["matchLabels"]
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def example_secrets() -> dict[str, dict[str, str]]:
    return {doc["metadata"]["name"]: doc["stringData"] for doc in documents(SECRETS_EXAMPLE)}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_for_kubernetes_strictly(version: str) -> None:
    checked = []
    for path, doc in manifests():
        # SchemaNotFoundError (an unknown kind or apiVersion) is raised, not a warning as on the command line
        kubernetes_validate.validate(doc, version, strict=True)
        checked.append(f"{path.name}:{doc['kind']}")
    assert {c.split(":")[1] for c in checked} >= {"Deployment", "Service", "PodDisruptionBudget",
                                                  "HorizontalPodAutoscaler", "Secret", "ServiceAccount"}


def test_strict_validation_refuses_a_misspelt_field(deployment: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 5
    with pytest.raises(kubernetes_validate.ValidationError, match="periodSecond"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest_but_never_the_example_secrets() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", SECRETS_EXAMPLE.name}
    assert listed == on_disk  # applying the folder must not overwrite real credentials with placeholders


def test_replicas_rollout_and_spread(deployment: dict[str, Any], pod: dict[str, Any]) -> None:
    spec = deployment["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["replicas"] >= 2
    assert selects(spec["selector"], labels)
    rolling = spec["strategy"]["rollingUpdate"]
    assert spec["strategy"]["type"] == "RollingUpdate" and rolling["maxUnavailable"] in (0, 1)
    assert rolling["maxUnavailable"] == 0 or rolling["maxSurge"] >= 1
    by_node = [c for c in pod["topologySpreadConstraints"] if c["topologyKey"] == "kubernetes.io/hostname"]
    assert by_node and by_node[0]["maxSkew"] == 1 and selects(by_node[0]["labelSelector"], labels)


def test_probes_reach_the_container_port_and_liveness_never_asks_the_database(container: dict[str, Any]) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert ports["http"] == int(env["BLINA_CDS_PORT"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] in ("http", ports["http"]), probe
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"  # the database answered once before traffic
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/livez"
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 30  # a busy minute does not restart a pod


def manifest_environment(container: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    """The Deployment's environment as the pod sees it: Secret references resolved from the example Secrets
    (the database URL swapped for SQLite in ``tmp_path``), the issuers file written to ``tmp_path``."""
    secrets = example_secrets()
    env: dict[str, str] = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]][ref["key"]]
    url = engine_url(env["BLINA_CDS_DATABASE_URL"])  # a URL the store accepts...
    assert url.get_backend_name() == "postgresql"  # ...and PostgreSQL: several replicas share it
    assert url.query["connect_timeout"] == "5"  # an unreachable database fails fast, not after the TCP timeout
    env["BLINA_CDS_DATABASE_URL"] = f"sqlite:///{tmp_path}/k8s.db"
    issuers = tmp_path / Path(env["BLINA_CDS_TRUSTED_ISSUERS_FILE"]).name
    issuers.write_text(secrets["blina-cds-issuers"]["issuers.json"])
    env["BLINA_CDS_TRUSTED_ISSUERS_FILE"] = str(issuers)
    return env


def test_every_variable_the_deployment_sets_is_a_real_setting(container: dict[str, Any]) -> None:
    names = [e["name"] for e in container["env"]]
    settings = {f"BLINA_CDS_{name.upper()}" for name in Settings.model_fields}
    assert len(names) == len(set(names))
    assert [n for n in names if n not in settings] == []


@asynccontextmanager
async def running(app: FastAPI) -> Any:
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        yield client


async def test_the_deployment_environment_starts_the_service_and_its_probes_answer(
        pod: dict[str, Any], container: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in manifest_environment(container, tmp_path).items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.auth == "jwt" and settings.workers == 1 and settings.preview_enabled is False
    # preStop, then the longest hook call (every FHIR fetch, then a worker's evaluation) must end in the grace period
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace = pod["terminationGracePeriodSeconds"]
    assert grace >= pre_stop + settings.fhir_timeout_s + settings.cpu_deadline_s + 5

    app = create_app(settings)  # the example issuers file loads: its shape is the real one
    startup, readiness, liveness = (container[p]["httpGet"]["path"]
                                    for p in ("startupProbe", "readinessProbe", "livenessProbe"))
    async with running(app) as client:
        for path in (startup, readiness, liveness):
            assert (await client.get(path)).status_code == 200, path
        await app.state.store.close()  # the database is gone
        # a running pod stays up and in rotation (a new one cannot start: the store's tables are made at start-up)
        assert (await client.get(startup)).json() == {"status": "degraded", "store": "unreachable"}
        assert (await client.get(liveness)).status_code == 200  # a running one is not restarted
        assert (await client.get(readiness)).status_code == 200  # nor taken out: hook calls need no database


def test_every_secret_the_deployment_reads_is_in_the_example_with_that_key(
        pod: dict[str, Any], container: dict[str, Any]) -> None:
    secrets = example_secrets()
    read = {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for e in container["env"] if "valueFrom" in e}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    for volume in pod["volumes"]:
        if "secret" in volume:
            for item in volume["secret"]["items"]:
                read.add((volume["secret"]["secretName"], item["key"]))
                mounted = f"{mounts[volume['name']]}/{item['path']}"
                if volume["name"] == "issuers":
                    assert env["BLINA_CDS_TRUSTED_ISSUERS_FILE"] == mounted
    assert read == {(name, key) for name, data in secrets.items() for key in data}
    for data in secrets.values():
        assert all(PLACEHOLDER in value for value in data.values())  # no value that could pass for a real one


def test_pod_disruption_budget_keeps_one_replica_and_never_blocks_a_drain(deployment: dict[str, Any]) -> None:
    pdb, hpa = the("PodDisruptionBudget"), the("HorizontalPodAutoscaler")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(pdb["spec"]["selector"], labels)
    assert 1 <= pdb["spec"]["minAvailable"] < min(deployment["spec"]["replicas"], hpa["spec"]["minReplicas"])


def test_autoscaler_targets_the_deployment_on_cpu(deployment: dict[str, Any], container: dict[str, Any]) -> None:
    hpa = the("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": deployment["apiVersion"], "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert 2 <= hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    assert "cpu" in container["resources"]["requests"]  # utilisation is a share of the request


def test_service_selects_the_pods_and_targets_the_named_port(deployment: dict[str, Any],
                                                             container: dict[str, Any]) -> None:
    service = the("Service")
    assert selects({"matchLabels": service["spec"]["selector"]}, deployment["spec"]["template"]["metadata"]["labels"])
    names = {p["name"] for p in container["ports"]}
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"] and "http" in names


def quantity(value: str) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for unit, factor in units.items():
        if value.endswith(unit):
            return float(value[: -len(unit)]) * factor
    return float(value)


def test_resources_are_requested_and_bounded(container: dict[str, Any]) -> None:
    resources = container["resources"]
    for name in ("cpu", "memory"):
        assert quantity(resources["requests"][name]) <= quantity(resources["limits"][name]), name
    # tests.bench.memory: two maximal (20 MiB) calls at once took one server process to 430 MiB (PSS)
    assert quantity(resources["limits"]["memory"]) >= 512 * 2**20


def test_pod_runs_as_the_images_user_without_privileges_on_a_read_only_root(pod: dict[str, Any],
                                                                             container: dict[str, Any]) -> None:
    user, group = instructions("USER")[-1].split(":")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (int(user), int(group))
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    writable = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    assert {m["mountPath"] for m in container["volumeMounts"] if m["name"] in writable} == {"/tmp"}


def test_image_is_the_one_the_dockerfile_documents(container: dict[str, Any]) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert container["image"] == documented_tag(DOCKERFILE.read_text()) == f"blina-cds:{version}"
