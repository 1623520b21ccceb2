"""The local stack launcher against the real tansu and redis-server binaries."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from memberpulse.models.errors import StackError
from memberpulse.streams.local import launcher, stack
from memberpulse.streams.settings import Settings
from memberpulse.streams.worker.kafka import partition_counts, wait_for_broker

pytestmark = pytest.mark.integration


@pytest.fixture
def home_settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", stack_stop_grace_s=1.0)


def test_up_status_down_cycle(home_settings: Settings) -> None:
    info = launcher.up(home_settings)
    try:
        assert not info.already_running
        assert stack.state_file(home_settings).exists()
        live = info.apply_to(home_settings)
        assert wait_for_broker(live.kafka, timeout_s=5) == 1
        assert partition_counts(live.kafka, live.kafka.input_topics) == dict.fromkeys(
            live.kafka.input_topics, 4
        )
        client = redis.Redis.from_url(live.redis.url.get_secret_value())
        assert client.ping()
        assert all(item.answering for item in launcher.status(home_settings))
        again = launcher.up(home_settings)
        assert again.already_running
        assert again.records == info.records
    finally:
        stopped = launcher.down(home_settings)
    assert sorted(stopped) == ["kafka", "redis"]
    assert not any(stack.is_alive(record) for record in info.records.values())
    assert launcher.status(home_settings) == []
    assert not stack.state_file(home_settings).exists()


def test_two_homes_run_side_by_side(tmp_path: Path) -> None:
    first = Settings(home=tmp_path / "a", stack_stop_grace_s=1.0)
    second = Settings(home=tmp_path / "b", stack_stop_grace_s=1.0)
    one = launcher.up(first)
    try:
        two = launcher.up(second)
        try:
            ports = {r.port for r in one.records.values()} | {r.port for r in two.records.values()}
            assert len(ports) == 4
            assert all(item.answering for item in launcher.status(second))
        finally:
            launcher.down(second)
        assert all(item.answering for item in launcher.status(first))
    finally:
        launcher.down(first)


def test_down_never_kills_a_recycled_pid(home_settings: Settings) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ticks = stack.process_start_ticks(bystander.pid)
        assert ticks is not None
        # A state file whose pid now belongs to another process (different start time).
        impostor = stack.ProcessRecord(
            "kafka", bystander.pid, 1, ticks + 1, 0.0, ["tansu"], str(home_settings.home / "x")
        )
        stack.save_state(home_settings, {"kafka": impostor})
        assert launcher.down(home_settings) == []
        assert bystander.poll() is None, "the launcher killed a process it did not start"
    finally:
        bystander.kill()
        bystander.wait()


def test_sigkill_after_grace_for_a_process_that_ignores_sigterm(home_settings: Settings) -> None:
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)",
    ]
    log = home_settings.home / "stubborn.log"
    record = stack.spawn("stubborn", stubborn, 0, log)
    assert stack.is_alive(record)
    assert stack.stop(replace(record), grace_s=0.3)
    assert not stack.is_alive(record)


def test_configured_port_in_use_is_a_clear_error(home_settings: Settings) -> None:
    info = launcher.up(home_settings, components=["redis"])
    try:
        taken = info.records["redis"].port
        other = Settings(home=home_settings.home.parent / "other", stack_redis_port=taken)
        with pytest.raises(StackError, match=f"port {taken}"):
            launcher.up(other, components=["redis"])
    finally:
        launcher.down(home_settings)


def test_missing_binary_is_a_clear_error(home_settings: Settings, tmp_path: Path) -> None:
    settings = home_settings.model_copy(update={"tansu_bin": tmp_path / "no-such-tansu"})
    with pytest.raises(StackError, match="MEMBERPULSE_TANSU_BIN"):
        launcher.up(settings, components=["kafka"])


def test_a_server_that_dies_at_start_reports_its_log(
    home_settings: Settings, tmp_path: Path
) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'FATAL: cannot start' >&2\nexit 3\n")
    fake.chmod(0o755)
    settings = home_settings.model_copy(update={"redis_server_bin": fake})
    with pytest.raises(StackError, match="cannot start"):
        launcher.up(settings, components=["redis"])
    assert not stack.state_file(settings).exists()


def test_signal_zero_probe_is_not_used_for_identity() -> None:
    # Our own pid is alive, but a record with another start time is not "ours".
    ticks = stack.process_start_ticks(os.getpid())
    assert ticks is not None
    record = stack.ProcessRecord("self", os.getpid(), 0, ticks, 0.0, [], "")
    assert stack.is_alive(record)
    assert not stack.is_alive(replace(record, start_ticks=ticks - 1))
