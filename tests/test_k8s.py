"""The Kubernetes and KServe manifests: schema-valid at a pinned Kubernetes version, and held to
what the service needs (probes, shutdown sequence, the image's start command, the key's Secret)."""

import copy
import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

from tests.conftest import ROOT

# The Kubernetes version the manifests are validated against: change it with the clusters.
KUBERNETES_VERSION = "1.34.0"
K8S = ROOT / "deploy/k8s"
INFERENCE_SERVICE = ROOT / "deploy/kserve/inferenceservice.yaml"
PRESTOP_AND_GRACE_MARGIN = 5  # seconds the supervisor needs after the graceful bound to exit


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> dict[str, dict[str, Any]]:
    """kind → the one object of that kind under deploy/k8s (the kustomization aside)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in documents(path):
            assert doc["kind"] not in found, f"a second {doc['kind']} in {path.name}"
            found[doc["kind"]] = doc
    return found


def validate(resource: dict[str, Any]) -> str:
    return kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def image_command() -> list[str]:
    """The Dockerfile's CMD (exec form), which tests/test_docker.py holds equal to `make run`'s."""
    match = re.search(r"^CMD (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert match
    return json.loads(match.group(1))


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def api_container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    (container,) = [c for c in pod_spec["containers"] if c["name"] == name]
    return container


def env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def probe_paths(container: dict[str, Any]) -> dict[str, str]:
    return {
        kind: container[f"{kind}Probe"]["httpGet"]["path"]
        for kind in ("startup", "liveness", "readiness")
    }


def startup_budget(container: dict[str, Any]) -> int:
    probe = container["startupProbe"]
    return probe["periodSeconds"] * probe["failureThreshold"]


# --- schema ------------------------------------------------------------------------------------


def test_the_pinned_version_is_bundled_so_nothing_falls_back() -> None:
    """kubernetes-validate silently uses an older schema for a version it does not bundle."""
    minor = ".".join(KUBERNETES_VERSION.split(".")[:2])
    assert minor in {".".join(version.split(".")[:2]) for version in all_versions()}


@pytest.mark.parametrize(
    "kind", ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]
)
def test_manifest_is_valid_in_strict_mode(kind: str) -> None:
    assert validate(manifests()[kind]) == "1.34"


def test_strict_validation_rejects_an_unknown_field() -> None:
    """Strict mode is on, or the test above would pass a misspelt field."""
    deployment = copy.deepcopy(manifests()["Deployment"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = documents(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    present = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    assert [image["name"] for image in kustomization["images"]] == ["fraud-api"]


# --- the Deployment ----------------------------------------------------------------------------


def deployment_pod() -> dict[str, Any]:
    return manifests()["Deployment"]["spec"]["template"]["spec"]


def test_deployment_runs_the_image_command_with_two_replicas() -> None:
    deployment = manifests()["Deployment"]
    assert deployment["spec"]["replicas"] == 2
    api = api_container(deployment_pod(), "api")
    assert api["image"].split(":")[0] == "fraud-api"
    assert api["command"] == image_command()
    assert [(p["name"], p["containerPort"]) for p in api["ports"]] == [("http", 8888)]
    # A rolling update never goes below the desired count.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_api_key_comes_from_a_secret_only() -> None:
    variables = env(api_container(deployment_pod(), "api"))
    assert variables["API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "fraud-api",
        "key": "api-key",
    }
    assert "value" not in variables["API_KEY"]
    assert not any("value" in item and "KEY" in name for name, item in variables.items())
    for optional in ("RATE_LIMIT_STORAGE_URI", "FEATURE_STORE_URI"):
        assert variables[optional]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_probes_readiness_liveness_and_startup_for_the_model_load() -> None:
    api = api_container(deployment_pod(), "api")
    assert probe_paths(api) == {
        "startup": "/health/live",  # answers once the model load is over, model or not
        "liveness": "/health/live",
        "readiness": "/health",  # 503 without a model: no traffic, no restart loop
    }
    assert all(
        api[f"{kind}Probe"]["httpGet"]["port"] == "http"
        for kind in ("startup", "liveness", "readiness")
    )
    assert startup_budget(api) >= 120  # the default model converts and loads in about a minute


def test_resources_have_requests_and_limits() -> None:
    resources = api_container(deployment_pod(), "api")["resources"]
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= resources[bound].keys(), bound


def test_non_root_with_a_read_only_root_and_a_writable_tmp() -> None:
    pod = deployment_pod()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # appuser, as the Dockerfile creates it
    assert "--uid 10001" in (ROOT / "Dockerfile").read_text()
    api = api_container(pod, "api")
    assert api["securityContext"]["readOnlyRootFilesystem"] is True
    assert api["securityContext"]["allowPrivilegeEscalation"] is False
    assert api["securityContext"]["capabilities"]["drop"] == ["ALL"]
    (mount,) = api["volumeMounts"]
    assert mount["mountPath"] == "/tmp"
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mount["name"]]


def assert_shutdown_sequence(pod: dict[str, Any], container: dict[str, Any]) -> None:
    """preStop pause → SIGTERM → graceful bound → SIGKILL only after all of it."""
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    graceful = int(flag(container["command"], "--timeout-graceful-shutdown"))
    assert pause >= 5  # endpoint removal reaches kube-proxy and ingress before SIGTERM
    assert graceful == 20
    assert pod["terminationGracePeriodSeconds"] >= pause + graceful + PRESTOP_AND_GRACE_MARGIN


def test_shutdown_drains_before_sigterm_and_finishes_before_sigkill() -> None:
    pod = deployment_pod()
    assert_shutdown_sequence(pod, api_container(pod, "api"))


def test_service_reaches_the_deployment_pods() -> None:
    service = manifests()["Service"]
    pod_labels = manifests()["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "http"
    assert service["spec"]["type"] == "ClusterIP"


def test_autoscaler_cpu_70_between_2_and_10_scaling_down_slowly() -> None:
    spec = manifests()["HorizontalPodAutoscaler"]["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": manifests()["Deployment"]["metadata"]["name"],
    }
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 10)
    (metric,) = spec["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 180


def test_disruption_budget_keeps_all_but_one_replica() -> None:
    spec = manifests()["PodDisruptionBudget"]["spec"]
    assert (
        spec["selector"]["matchLabels"]
        == manifests()["Deployment"]["spec"]["selector"]["matchLabels"]
    )
    assert spec == {"maxUnavailable": 1, "selector": spec["selector"]}


# --- KServe ------------------------------------------------------------------------------------

# ComponentExtensionSpec fields KServe adds to a predictor beside the inlined PodSpec.
KSERVE_PREDICTOR_FIELDS = {"minReplicas", "maxReplicas", "scaleMetric", "scaleTarget"}


def inference_service() -> dict[str, Any]:
    (service,) = documents(INFERENCE_SERVICE)
    return service


def predictor_pod() -> dict[str, Any]:
    """The predictor's inlined PodSpec (what KServe turns into the pods)."""
    predictor = inference_service()["spec"]["predictor"]
    return {key: value for key, value in predictor.items() if key not in KSERVE_PREDICTOR_FIELDS}


def test_inference_service_is_a_v1beta1_custom_predictor() -> None:
    service = inference_service()
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    assert service["kind"] == "InferenceService"
    assert service["spec"].keys() == {"predictor"}
    (container,) = predictor_pod()["containers"]
    assert container["name"] == "kserve-container"  # KServe's name for the custom predictor
    assert "model" not in service["spec"]["predictor"]


def test_inference_service_pod_spec_is_a_valid_pod_spec() -> None:
    """KServe inlines a core PodSpec: validate it as one, strictly, at the pinned version."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": predictor_pod()}
    assert validate(pod) == "1.34"


def test_inference_service_speaks_v2_on_8080() -> None:
    container = api_container(predictor_pod(), "kserve-container")
    expected = image_command()
    expected[expected.index("--port") + 1] = "8080"
    assert container["command"] == expected
    assert [port["containerPort"] for port in container["ports"]] == [8080]
    # KServe reads a custom predictor's protocolVersion from PROTOCOL (v1 unless set).
    assert env(container)["PROTOCOL"] == {"name": "PROTOCOL", "value": "v2"}
    assert probe_paths(container) == {
        "startup": "/v2/health/live",
        "liveness": "/v2/health/live",
        "readiness": "/v2/health/ready",
    }
    assert all(
        container[f"{kind}Probe"]["httpGet"]["port"] == 8080
        for kind in ("startup", "liveness", "readiness")
    )


def test_inference_service_key_secret_scaling_and_shutdown_match_the_deployment() -> None:
    predictor = inference_service()["spec"]["predictor"]
    container = api_container(predictor_pod(), "kserve-container")
    api = api_container(deployment_pod(), "api")
    assert env(container)["API_KEY"] == env(api)["API_KEY"]
    assert container["image"] == api["image"]
    assert container["resources"] == api["resources"]
    assert container["securityContext"] == api["securityContext"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 10)
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("cpu", 70)
    assert (
        inference_service()["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
        == "RawDeployment"
    )
    assert_shutdown_sequence(predictor_pod(), container)
