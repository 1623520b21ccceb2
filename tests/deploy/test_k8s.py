"""deploy/k8s: both overlays render, validate against the Kubernetes and CRD schemas, and say
what the worker really does (probes, port, settings, consumer group, topics, partitions)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from memberpulse.streams.settings import Settings
from tests.deploy.support import (
    ENV_PREFIX,
    K8S,
    OVERLAYS,
    crd_schemas,
    dockerfile_stages,
    drain_bound_s,
    field_for,
    kustomize,
    one,
    pod_env,
    quantity_bytes,
    quantity_cores,
    settings_from_env,
    validate_object,
)

Objects = list[dict[str, Any]]
DEFAULTS = Settings()
WRITABLE = ("/tmp",)  # besides MEMBERPULSE_HOME; the root filesystem is read-only


@pytest.fixture(scope="module")
def rendered() -> dict[str, Objects]:
    """`kubectl kustomize` of every overlay."""
    return {overlay: kustomize(K8S / "overlays" / overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="module")
def with_sasl(tmp_path_factory: pytest.TempPathFactory) -> Objects:
    """The cpu overlay with the kafka-sasl component, as an operator would combine them."""
    here = tmp_path_factory.mktemp("sasl-overlay")
    up = Path(os.path.relpath(K8S, here))  # kustomize refuses absolute paths
    (here / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {up / 'overlays' / 'cpu'}\n"
        f"components:\n  - {up / 'components' / 'kafka-sasl'}\n"
    )
    return kustomize(here)


def _container(objects: Objects) -> dict[str, Any]:
    container: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]
    return container


def _pod(objects: Objects) -> dict[str, Any]:
    pod: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"]
    return pod


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_validates_against_its_schema(
    rendered: dict[str, Objects], overlay: str
) -> None:
    objects = rendered[overlay]
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "ScaledObject",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
        ]
    )
    crds = crd_schemas()
    for obj in objects:
        validate_object(obj, crds)
        assert obj["metadata"].get("namespace") == "memberpulse", obj["metadata"]
    assert not [o for o in objects if o["kind"] == "Secret"]  # secrets are never rendered


def test_validation_rejects_a_misspelled_field(rendered: dict[str, Objects]) -> None:
    """The schemas are strict: a typo fails here instead of being pruned by the API server."""
    crds = crd_schemas()
    deployment = copy.deepcopy(one(rendered["cpu"], "Deployment"))
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 60
    with pytest.raises(Exception, match="terminationGracePeriod"):
        validate_object(deployment, crds)
    scaled = copy.deepcopy(one(rendered["cpu"], "ScaledObject"))
    scaled["spec"]["maxReplicas"] = 4
    with pytest.raises(jsonschema.ValidationError, match="maxReplicas"):
        validate_object(scaled, crds)
    monitor = copy.deepcopy(one(rendered["cpu"], "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError, match="intervall"):
        validate_object(monitor, crds)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_holds_only_real_settings_and_the_pod_settings_load(
    rendered: dict[str, Objects], overlay: str
) -> None:
    objects = rendered[overlay]
    data = one(objects, "ConfigMap")["data"]
    secret_fields = {"redis_password", "kafka_sasl_password", "kafka_ssl_key_password"}
    for key in data:
        assert field_for(key) not in secret_fields, f"{key} belongs in a Secret"
    assert "@" not in data["MEMBERPULSE_REDIS_URL"]  # no password in the URL either
    env = pod_env(objects)
    for key in env:
        field_for(key)
    settings = settings_from_env(env)
    assert settings.kafka.profile == "production"
    assert settings.redis.password is not None  # from the memberpulse-redis Secret
    assert settings.worker.group_id == DEFAULTS.worker.group_id
    assert settings.kafka.input_topics == DEFAULTS.kafka.input_topics
    assert settings.kafka.output_topics == DEFAULTS.kafka.output_topics


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_referenced_never_inlined(rendered: dict[str, Objects], overlay: str) -> None:
    refs = {
        item["name"]: item["valueFrom"]["secretKeyRef"]
        for item in _container(rendered[overlay]).get("env", [])
        if "valueFrom" in item
    }
    assert refs["MEMBERPULSE_REDIS_PASSWORD"] == {"name": "memberpulse-redis", "key": "password"}
    assert refs["MEMBERPULSE_KAFKA_SASL_USERNAME"]["name"] == "memberpulse-kafka"
    assert refs["MEMBERPULSE_KAFKA_SASL_PASSWORD"]["name"] == "memberpulse-kafka"
    assert refs["MEMBERPULSE_KAFKA_SASL_PASSWORD"]["optional"] is True  # only for SASL
    for name in refs:
        field_for(name)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_port_and_command_match_the_worker(
    rendered: dict[str, Objects], overlay: str
) -> None:
    objects = rendered[overlay]
    settings = settings_from_env(pod_env(objects))
    container = _container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": settings.worker.web_port}
    assert settings.worker.web_port == DEFAULTS.worker.web_port
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "metrics"}
    assert container["startupProbe"]["httpGet"] == {"path": "/health", "port": "metrics"}
    # No command or args: the image's own `memberpulse worker` runs (test_images checks it).
    assert "command" not in container
    assert "args" not in container
    service = one(objects, "Service")
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "metrics"
    assert port["port"] == settings.worker.web_port
    monitor = one(objects, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"]
    assert endpoint["path"] == "/metrics"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_resources_and_onnxruntime_threads_fit_the_pod(
    rendered: dict[str, Objects], overlay: str
) -> None:
    objects = rendered[overlay]
    resources = _container(objects)["resources"]
    for kind in ("cpu", "memory"):
        assert kind in resources["requests"]
        assert kind in resources["limits"]
    requests, limits = resources["requests"], resources["limits"]
    assert quantity_cores(requests["cpu"]) <= quantity_cores(limits["cpu"])
    assert quantity_bytes(requests["memory"]) <= quantity_bytes(limits["memory"])
    settings = settings_from_env(pod_env(objects))
    # onnxruntime would otherwise start a thread per core of the node
    assert 1 <= settings.serving.scorer_threads <= quantity_cores(limits["cpu"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_runs_as_the_images_non_root_user_on_a_read_only_root(
    rendered: dict[str, Objects], overlay: str
) -> None:
    objects = rendered[overlay]
    pod, container = _pod(objects), _container(objects)
    image_users = {
        s.name: s.args("USER")[-1] for s in dockerfile_stages() if s.name.startswith("worker-")
    }
    uid, gid = (int(part) for part in image_users["worker-cpu"].split(":"))
    assert set(image_users.values()) == {f"{uid}:{gid}"}
    assert uid != 0
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    assert pod["securityContext"]["runAsGroup"] == gid
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    settings = settings_from_env(pod_env(objects))
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {str(settings.home), *WRITABLE} <= mounts
    assert str(settings.registry_root) == "/models/registry"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_shutdown_grace_outlasts_the_workers_drain(
    rendered: dict[str, Objects], overlay: str
) -> None:
    objects = rendered[overlay]
    settings = settings_from_env(pod_env(objects))
    grace = _pod(objects)["terminationGracePeriodSeconds"]
    assert grace > drain_bound_s(settings), (grace, drain_bound_s(settings))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rollouts_and_disruptions_take_one_worker_at_a_time(
    rendered: dict[str, Objects], overlay: str
) -> None:
    objects = rendered[overlay]
    deployment = one(objects, "Deployment")
    assert "replicas" not in deployment["spec"]  # KEDA's HPA owns the count
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_scales_the_workers_group_on_the_input_topics_up_to_the_partitions(
    rendered: dict[str, Objects], overlay: str
) -> None:
    objects = rendered[overlay]
    env = pod_env(objects)
    settings = settings_from_env(env)
    scaled = one(objects, "ScaledObject")["spec"]
    assert scaled["scaleTargetRef"]["name"] == one(objects, "Deployment")["metadata"]["name"]
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]  # the CRD's CEL rule
    assert (
        scaled["maxReplicaCount"]
        == settings.kafka.input_partitions
        == DEFAULTS.kafka.input_partitions
    )
    topics = []
    for trigger in scaled["triggers"]:
        assert trigger["type"] == "kafka"
        meta = trigger["metadata"]
        for name in ("bootstrapServers", "consumerGroup", "topic"):
            assert name not in meta, f"{name} must come from the worker's env ({name}FromEnv)"
        assert field_for(meta["bootstrapServersFromEnv"]) == "kafka_bootstrap"
        assert env[meta["bootstrapServersFromEnv"]] == settings.kafka.bootstrap
        assert field_for(meta["consumerGroupFromEnv"]) == "worker_group_id"
        assert env[meta["consumerGroupFromEnv"]] == settings.worker.group_id
        assert env[meta["consumerGroupFromEnv"]] == DEFAULTS.worker.group_id
        topics.append(settings.value(field_for(meta["topicFromEnv"])))
        assert meta["offsetResetPolicy"] == settings.worker.offset_reset
        assert meta["allowIdleConsumers"] == "false"
        assert int(meta["lagThreshold"]) > 0
    assert tuple(topics) == settings.kafka.input_topics == DEFAULTS.kafka.input_topics


def test_gpu_overlay_asks_for_a_gpu_node_and_the_cuda_image(rendered: dict[str, Objects]) -> None:
    gpu, cpu = rendered["gpu"], rendered["cpu"]
    assert _container(gpu)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in _container(cpu)["resources"]["limits"]
    assert _pod(gpu)["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in _pod(gpu)[
        "tolerations"
    ]
    assert _container(gpu)["image"].endswith("-cuda")
    assert _container(cpu)["image"].endswith("-cpu")


def test_kafka_sasl_component_configures_worker_and_keda_alike(with_sasl: Objects) -> None:
    crds = crd_schemas()
    for obj in with_sasl:
        validate_object(obj, crds)
    settings = settings_from_env(pod_env(with_sasl))  # the SASL check in Settings passes
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.kafka.sasl_username
    assert settings.kafka.sasl_password
    keda_sasl = {
        "PLAIN": "plaintext",
        "SCRAM-SHA-256": "scram_sha256",
        "SCRAM-SHA-512": "scram_sha512",
    }
    auth = one(with_sasl, "TriggerAuthentication")
    by_parameter = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
    worker_refs = {
        field_for(item["name"]): item["valueFrom"]["secretKeyRef"]
        for item in _container(with_sasl)["env"]
        if "valueFrom" in item
    }
    for parameter, setting in (
        ("username", "kafka_sasl_username"),
        ("password", "kafka_sasl_password"),
    ):
        assert by_parameter[parameter]["name"] == worker_refs[setting]["name"]
        assert by_parameter[parameter]["key"] == worker_refs[setting]["key"]
    for trigger in one(with_sasl, "ScaledObject")["spec"]["triggers"]:
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
        assert trigger["metadata"]["sasl"] == keda_sasl[str(settings.kafka.sasl_mechanism)]
        tls = settings.kafka.security_protocol.endswith("SSL")
        assert trigger["metadata"]["tls"] == ("enable" if tls else "disable")


def test_settings_env_file_names_only_real_settings() -> None:
    """The base's env file itself (comments aside), before kustomize."""
    lines = (K8S / "base" / "settings.env").read_text().splitlines()
    keys = [line.split("=", 1)[0] for line in lines if line and not line.startswith("#")]
    assert keys
    assert len(keys) == len(set(keys))
    for key in keys:
        assert key.startswith(ENV_PREFIX)
        field_for(key)
