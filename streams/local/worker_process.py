"""Running `memberpulse worker` as a child process (the demo, benchmarks and tests).

The child gets every setting through `MEMBERPULSE_*` variables, so it runs exactly what
`memberpulse worker` runs for a user. Its /metrics and /ready answer how it is doing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import IO, Any, Final

from pydantic import SecretStr

from memberpulse.streams.local.stack import free_port
from memberpulse.streams.settings import Settings

_HTTP_TIMEOUT_S: Final = 2.0
_SAMPLE: Final = re.compile(r"^(memberpulse_[a-z0-9_]+?)(\{[^}]*\})? ([0-9.e+-]+|[+-]Inf|NaN)$")
_LABEL: Final = re.compile(r'([a-z_]+)="([^"]*)"')


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting as a MEMBERPULSE_* variable (secrets included: for a child only)."""
    env: dict[str, str] = {}
    for name, value in settings.flat().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, tuple | list | dict):
            value = json.dumps(value)
        env[f"MEMBERPULSE_{name.upper()}"] = str(value)
    return env


class Metrics(dict[tuple[str, tuple[tuple[str, str], ...]], float]):
    """Parsed Prometheus samples: (name, labels) → value."""

    def total(self, name: str, **labels: str) -> float:
        """Sum of a metric over every label set matching `labels`."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.items() if n == name and wanted <= set(ls))

    def accounted(self) -> float:
        """Input events applied, skipped as duplicates or dead-lettered (conservation)."""
        names = (
            "memberpulse_events_applied_total",
            "memberpulse_duplicates_total",
            "memberpulse_dlq_total",
        )
        return sum(self.total(name) for name in names)

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """A metric summed per value of one label."""
        out: dict[str, float] = defaultdict(float)
        for (n, ls), v in self.items():
            if n == name:
                out[dict(ls).get(label, "")] += v
        return dict(out)

    def quantile(self, name: str, q: float) -> float | None:
        """A quantile from a histogram's buckets (linear inside a bucket, as Prometheus)."""
        buckets = sorted(
            (float(dict(ls)["le"]), v) for (n, ls), v in self.items() if n == f"{name}_bucket"
        )
        if not buckets or buckets[-1][1] == 0:
            return None
        rank = q * buckets[-1][1]
        lower_bound, lower_count = 0.0, 0.0
        for bound, count in buckets:
            if count >= rank:
                if bound == float("inf"):
                    return lower_bound
                share = (rank - lower_count) / (count - lower_count) if count > lower_count else 0
                return lower_bound + (bound - lower_bound) * share
            lower_bound, lower_count = bound, count
        return None


def parse_metrics(text: str) -> Metrics:
    """Prometheus text format → `Metrics` (our own metrics only)."""
    parsed = Metrics()
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            labels = tuple(sorted(_LABEL.findall(match[2] or "")))
            parsed[(match[1], labels)] = float(match[3])
    return parsed


class WorkerProcess:
    """One `memberpulse worker` child process."""

    def __init__(self, settings: Settings, log: Path, **overrides: Any) -> None:
        settings = settings.model_copy(update=overrides)
        port = settings.worker.web_port or free_port()
        settings = settings.model_copy(update={"worker_web_port": port})
        self.settings = settings
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEMBERPULSE_")}
        env |= settings_env(settings)
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from memberpulse.streams.cli.main import main; main()",
                "worker",
            ],
            env=env,
            stdout=self._log,
            stderr=self._log,
        )

    def _get(self, path: str) -> bytes | None:
        """The body of an answer, an error status's included (/ready says why with 503);
        None when nothing answers."""
        try:
            url = self.url + path  # always http://127.0.0.1:<port>/…, built above
            with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT_S) as answer:  # noqa: S310
                body: bytes = answer.read()
                return body
        except urllib.error.HTTPError as refused:
            with refused:
                error_body: bytes = refused.read()
                return error_body
        except OSError:
            return None

    def metrics(self) -> Metrics:
        """The worker's metrics now (empty while it does not answer)."""
        body = self._get("/metrics")
        return parse_metrics(body.decode()) if body else Metrics()

    def readiness(self) -> dict[str, Any]:
        """What /ready answers ({} while the worker does not answer)."""
        body = self._get("/ready")
        answer: dict[str, Any] = json.loads(body) if body else {}
        return answer

    def ready(self) -> bool:
        """Whether /ready says so (partitions assigned, no failing batch)."""
        return bool(self.readiness().get("ready"))

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc.poll() is None

    def stop(self, timeout_s: float) -> int:
        """SIGTERM, then wait; SIGKILL when it does not exit in time. Returns the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)

    def kill(self) -> None:
        """SIGKILL (a crash), then reap."""
        if self.alive():
            self.proc.kill()
            self.proc.wait()
        self._log.close()
