"""The CLI: help everywhere, plain output without a TTY, exit codes, no torch in serving."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest
import typer
from typer.testing import CliRunner

from memberpulse.streams.cli.main import app
from memberpulse.streams.settings import Settings

RUNNER = CliRunner()


def all_command_paths() -> list[list[str]]:
    root = typer.main.get_command(app)
    paths: list[list[str]] = [[]]

    def walk(command: object, prefix: list[str]) -> None:
        # typer vendors click: duck-type groups instead of isinstance(click.Group)
        for name, sub in getattr(command, "commands", {}).items():
            paths.append([*prefix, name])
            walk(sub, [*prefix, name])

    walk(root, [])
    return paths


def test_the_cli_has_the_documented_commands() -> None:
    names = {" ".join(path) for path in all_command_paths()}
    for expected in (
        "stack up",
        "stack down",
        "stack status",
        "simulate",
        "demo",
        "config show",
        "bench decode",
        "bench e2e",
        "bench startup",
        "worker",
        "tail",
    ):
        assert expected in names


@pytest.mark.parametrize("path", all_command_paths(), ids=lambda p: " ".join(p) or "root")
def test_help_on_every_command(path: list[str]) -> None:
    result = RUNNER.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert "Traceback" not in result.output


def test_help_never_shows_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMBERPULSE_REDIS_URL", "redis://:topsecret@127.0.0.1:1/0")
    outputs = [RUNNER.invoke(app, [*path, "--help"]).output for path in all_command_paths()]
    assert not any("topsecret" in output for output in outputs)


def test_config_show_masks_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEMBERPULSE_REDIS_URL", "redis://:topsecret@127.0.0.1:1/0")
    monkeypatch.setenv("MEMBERPULSE_REDIS_PASSWORD", "alsosecret")
    result = RUNNER.invoke(app, ["--home", str(tmp_path), "config", "show", "--json"])
    assert result.exit_code == 0, result.output
    shown = orjson.loads(result.output)
    assert shown["redis_url"] == "redis://:***@127.0.0.1:1/0"
    assert shown["redis_password"] == "**********"
    assert "topsecret" not in result.output
    assert "alsosecret" not in result.output


def test_set_overrides_a_setting(tmp_path: Path) -> None:
    result = RUNNER.invoke(
        app, ["--home", str(tmp_path), "--set", "input_partitions=12", "config", "show", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.output)["input_partitions"] == 12


def test_bad_override_exits_non_zero(tmp_path: Path) -> None:
    result = RUNNER.invoke(app, ["--home", str(tmp_path), "--set", "nonsense", "config", "show"])
    assert result.exit_code != 0
    assert "KEY=VALUE" in result.output


def run_cli(
    *args: str, home: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The installed `memberpulse` entry point, no TTY (stdout is a pipe)."""
    exe = Path(sys.executable).parent / "memberpulse"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MEMBERPULSE_")}
    full_env |= {"MEMBERPULSE_HOME": str(home)} | (env or {})
    return subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


def test_status_without_a_stack_exits_non_zero(tmp_path: Path) -> None:
    result = run_cli("stack", "status", home=tmp_path)
    assert result.returncode == 1
    assert "no stack" in result.stdout


@pytest.mark.integration
def test_stack_commands_from_the_shell(tmp_path: Path) -> None:
    up = run_cli("stack", "up", home=tmp_path)
    try:
        assert up.returncode == 0, up.stderr
        assert "MEMBERPULSE_KAFKA_BOOTSTRAP=127.0.0.1:" in up.stdout
        assert "\x1b[" not in up.stdout, "no terminal escapes without a TTY"
        status = run_cli("stack", "status", home=tmp_path)
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("healthy") == 2
        shown = orjson.loads(run_cli("config", "show", "--json", home=tmp_path).stdout)
        assert shown["kafka_bootstrap"] in up.stdout, "commands find the running stack"
    finally:
        down = run_cli("stack", "down", home=tmp_path)
    assert down.returncode == 0
    assert "kafka" in down.stdout
    assert "redis" in down.stdout
    assert run_cli("stack", "status", home=tmp_path).returncode == 1


def test_simulate_to_kafka_without_a_broker_fails_clearly(tmp_path: Path) -> None:
    result = run_cli(
        "simulate",
        "--to-kafka",
        "--members",
        "5",
        "--seconds",
        "1",
        home=tmp_path,
        env={
            "MEMBERPULSE_KAFKA_BOOTSTRAP": "127.0.0.1:9",
            "MEMBERPULSE_KAFKA_CONNECT_TIMEOUT_S": "1",
        },
    )
    assert result.returncode == 2  # every MemberPulseError: one line, exit code 2
    assert "error: Kafka at 127.0.0.1:9 is unavailable" in result.stderr
    assert "Traceback" not in result.stderr


#: A default model small enough for a test: 300 members, 1 epoch, a 16-wide network.
TINY_DEFAULT_MODEL = (
    "--set", "default_model_members=300", "--set", "default_model_epochs=1",
    "--set", "train_hidden=16", "--set", "train_heads=2", "--set", "train_ffn=32",
    "--set", "train_layers=1", "--set", "train_sequence_length=16",
)  # fmt: skip


def test_serving_imports_without_torch(tmp_path: Path) -> None:
    """Serving code must run from a plain install (no `train` extra): torch made unimportable."""
    script = textwrap.dedent(
        """
        import sys
        for name in ("torch", "transformers"):
            sys.modules[name] = None  # any import of them raises ImportError
        import pkgutil, importlib
        import memberpulse.streams as streams
        for module in pkgutil.walk_packages(streams.__path__, "memberpulse.streams."):
            importlib.import_module(module.name)
        import memberpulse.streams.serving.registry  # the worker side: scorer, registry
        from memberpulse.streams.worker.app import Worker  # the Faust app, its batch path and sink
        from typer.testing import CliRunner
        from memberpulse.streams.cli.main import app
        result = CliRunner().invoke(app, ["--help"])
        assert result.exit_code == 0, result.output
        for path in (["stack", "--help"], ["simulate", "--help"], ["demo", "--help"],
                     ["model", "--help"], ["train", "--help"], ["export", "--help"],
                     ["worker", "--help"], ["tail", "--help"]):
            assert CliRunner().invoke(app, path).exit_code == 0
        print("ok", sorted(m for m in sys.modules if m.startswith("memberpulse")).__len__())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok ")


def test_settings_are_plain_defaults_without_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("MEMBERPULSE_"):
            monkeypatch.delenv(key)
    assert Settings().kafka.profile == "local"


@pytest.mark.integration
@pytest.mark.slow
def test_demo_runs_the_whole_pipeline_and_stops_its_stack(tmp_path: Path) -> None:
    # A tiny model's risks sit far below the default alert threshold and the default
    # coupon rules: lower both, so that every output kind shows in a short run.
    rules = tmp_path / "rules.toml"
    rules.write_text(
        (Path(__file__).parents[3] / "streams" / "decisions" / "coupons.default.toml")
        .read_text()
        .replace("value = 0.5 }", "value = 0.0 }")
        .replace('{ signal = "minutes_since_intent", op = "<=", value = 60 },', "")
    )
    result = run_cli(
        *TINY_DEFAULT_MODEL,
        "--set", "churn_alert_threshold=0.02", "--set", "churn_rearm_threshold=0.01",
        "--set", f"coupon_rules={rules}",
        "demo", "--seconds", "15", "--members", "300", "--rate", "400",
        "--bad-fraction", "0.05", home=tmp_path, timeout=280,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "worker ready at" in out
    assert "dead-letter reason" in out
    assert "outputs: churn_alert" in out  # exit code 0 already means every kind appeared
    assert "worker stopped on SIGTERM with exit code 0" in out
    assert "stack stopped" in out
    assert run_cli("stack", "status", home=tmp_path).returncode == 1


@pytest.mark.integration
def test_simulate_to_kafka_produces_to_a_given_broker(servers: Settings, tmp_path: Path) -> None:
    result = run_cli("simulate", "--to-kafka", "--members", "50", "--seconds", "2",
                     "--speed", "86400", "--rate", "5000", home=tmp_path,
                     env={"MEMBERPULSE_KAFKA_BOOTSTRAP": servers.kafka.bootstrap})  # fmt: skip
    assert result.returncode == 0, result.stderr
    sent = int(result.stdout.split("sent ")[1].split(" events")[0].replace(",", ""))
    assert sent > 0
    assert "failed 0" in result.stdout


def test_simulate_to_file_writes_parquet_and_truth(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "events.parquet"
    result = run_cli("simulate", "--to-file", str(path), "--members", "40", "--days", "20",
                     "--seed", "3", "--bad-fraction", "0.1", home=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = pq.read_table(path)
    assert table.num_rows > 0
    assert "member_id" in table.column_names
    assert (tmp_path / "events.truth.parquet").exists()
    types = set(table.column("type").to_pylist())
    assert "teleport" in types, "bad rows were injected as asked"


def test_bench_state_reports_throughput_round_trips_and_memory(
    servers: Settings, tmp_path: Path
) -> None:
    redis_url = servers.redis.url.get_secret_value()
    result = run_cli("bench", "state", "--json", "--members", "40", "--days", "3",
                     home=tmp_path, env={"MEMBERPULSE_REDIS_URL": redis_url})  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = orjson.loads(result.stdout)
    assert [row["batch_size"] for row in report["results"]] == [1, 64, 512]
    for row in report["results"]:
        assert row["events"] == min(report["events"], 20_000 if row["batch_size"] == 1 else 10**9)
        assert row["events_per_s"] > 0
        assert row["overlapped_events_per_s"] > 0
        assert row["round_trips_per_batch"] == 1.0
    # a member whose sequence spans 16 days keeps buckets for the other 44 days of the windows
    assert 0 < report["bytes_per_member"] < report["bytes_per_member_dense"]
    detail = report["bytes_per_member_detail"]
    assert detail["total"] == pytest.approx(detail["state_key"] + detail["other_keys"])
    assert detail["other_keys"] == 0  # the decision state is in the state key's value
