"""deploy/compose: the compose file validates against the Compose Specification schema and
wires Kafka (KRaft), Redis (AOF, password), two workers, the simulator, Prometheus, Grafana."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from memberpulse.streams.cli.main import app
from memberpulse.streams.settings import Settings
from tests.deploy.support import DASHBOARD, DEPLOY, ROOT, drain_bound_s, field_for

COMPOSE = DEPLOY / "compose"
DEFAULTS = Settings()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


def _env_value(value: object) -> str:
    return str(value)


def _duration_s(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smh])", text))


def test_compose_file_validates_against_the_compose_specification(
    compose: dict[str, Any],
) -> None:
    schema = json.loads((COMPOSE / "schema" / "compose-spec.json").read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator_class(schema).validate(compose)
    broken = compose | {"services": {"worker": {"image": "x", "replica": 2}}}
    with pytest.raises(jsonschema.ValidationError, match="replica"):
        validator_class(schema).validate(broken)


def test_kafka_runs_in_kraft_mode_from_the_official_image(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    for name, service in services.items():  # no ZooKeeper anywhere
        assert "zookeeper" not in name
        assert "zookeeper" not in service.get("image", "")
        assert not [key for key in service.get("environment", {}) if "ZOOKEEPER" in key]


def test_topics_are_created_as_the_worker_names_them(services: dict[str, Any]) -> None:
    script = services["kafka-init"]["command"][0]
    created = re.findall(r"member\.[a-z.-]+", script.split("; do")[0])
    assert tuple(created) == (
        *DEFAULTS.kafka.input_topics,
        DEFAULTS.kafka.topic_dlq,
        *DEFAULTS.kafka.output_topics,
    )
    assert services["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_redis_7_with_aof_and_a_password_from_the_environment(services: dict[str, Any]) -> None:
    redis = services["redis"]
    assert re.fullmatch(r"redis:7(\.\d+)*(-\w+)?", redis["image"])
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert '--requirepass "$$REDIS_PASSWORD"' in command
    assert "--maxmemory-policy noeviction" in command
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    assert any(volume.endswith(":/data") for volume in redis["volumes"])


def test_no_secret_is_written_in_the_compose_file(services: dict[str, Any]) -> None:
    for name, service in services.items():
        env = service.get("environment", {})
        for key, value in env.items():
            if re.search(r"(PASSWORD|_AUTH)$", key):
                assert _env_value(value).startswith("${"), f"{name}.{key} is a literal secret"


def test_two_workers_in_one_group_with_real_settings(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert worker["deploy"]["replicas"] == 2
    env = {key: _env_value(value) for key, value in worker["environment"].items()}
    for key in env:
        field_for(key)
    assert env["MEMBERPULSE_WORKER_GROUP_ID"] == DEFAULTS.worker.group_id
    assert env["MEMBERPULSE_KAFKA_PROFILE"] == "production"
    assert env["MEMBERPULSE_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["MEMBERPULSE_REDIS_URL"] == "redis://redis:6379/0"
    assert worker["build"]["target"] == "worker-cpu"
    assert (ROOT / worker["build"]["dockerfile"]).exists()
    assert (COMPOSE / worker["build"]["context"]).resolve() == ROOT
    assert worker["read_only"] is True
    assert any(mount.endswith(":/models/registry:ro") for mount in worker["volumes"])
    assert _duration_s(worker["stop_grace_period"]) > drain_bound_s(DEFAULTS)
    assert worker["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "command" not in worker  # the image's `memberpulse worker`


def test_simulator_is_an_optional_profile_running_a_real_command(
    services: dict[str, Any],
) -> None:
    simulator = services["simulator"]
    assert simulator["profiles"] == ["simulator"]
    command = simulator["command"]
    assert command[:2] == ["simulate", "--to-kafka"]
    help_text = CliRunner().invoke(app, ["simulate", "--help"], terminal_width=200).output
    for option in command[2:]:
        name = option.split("=")[0]
        assert name in help_text, f"`memberpulse simulate` has no {name}"
    assert simulator["image"] == services["worker"]["image"]
    for key in simulator["environment"]:
        field_for(key)


def test_prometheus_scrapes_every_worker_replica(services: dict[str, Any]) -> None:
    config = yaml.safe_load((COMPOSE / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "memberpulse-worker"  # = the Kubernetes Service's name
    assert job["metrics_path"] == "/metrics"
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["worker"]
    assert discovery["port"] == DEFAULTS.worker.web_port
    assert "worker" in services
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    assert any(
        v.startswith("./prometheus:/etc/prometheus") for v in services["prometheus"]["volumes"]
    )


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard(
    services: dict[str, Any],
) -> None:
    grafana = services["grafana"]
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in grafana["volumes"])
    provisioning = COMPOSE / mounts_key(mounts, "/etc/grafana/provisioning")
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "memberpulse.yaml").read_text())
    (provider,) = providers["providers"]
    dashboards = (COMPOSE / mounts_key(mounts, provider["options"]["path"])).resolve()
    assert dashboards == DASHBOARD.parent
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith("${")


def mounts_key(mounts: dict[str, str], target: str) -> str:
    """The host side of the bind mount onto `target`."""
    (source,) = [host for host, inside in mounts.items() if inside == target]
    return source


def test_env_file_with_secrets_is_git_ignored() -> None:
    assert ".env" in (COMPOSE / ".gitignore").read_text().split()
    assert (
        not (COMPOSE / ".env").exists()
        or "deploy/compose/.env" in (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text()
    )
