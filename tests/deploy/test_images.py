"""deploy/docker: hadolint-clean, serving images without torch or compilers, non-root, and the
entry command is the `memberpulse worker` the tests run."""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from typer.testing import CliRunner

from memberpulse.streams.cli.main import app
from memberpulse.streams.settings import Settings
from tests.deploy.support import DEPLOY, DOCKERFILE, ROOT, dockerfile_stages, run, stage_chain, tool

SERVING = ("worker-cpu", "worker-cuda")
DOCKER = DEPLOY / "docker"


def _project() -> dict[str, object]:
    project: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def _requirements(text: str) -> dict[str, Requirement]:
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    requirements = [Requirement(line) for line in lines if line]
    return {canonicalize_name(r.name): r for r in requirements}


def test_dockerfile_passes_hadolint() -> None:
    run([tool("hadolint"), "--failure-threshold", "style", "--no-color", DOCKERFILE])


def test_serving_images_run_memberpulse_worker_as_the_tests_do() -> None:
    stages = {s.name: s for s in dockerfile_stages()}
    for name in SERVING:
        stage = stages[name]
        assert stage.exec_form("ENTRYPOINT") + stage.exec_form("CMD") == ["memberpulse", "worker"]
    # `memberpulse` is the console script for the same main() that WorkerProcess runs as
    # `python -c "from memberpulse.streams.cli.main import main; main()" worker` (the integration
    # test in test_dashboard.py checks the argv of a real one).
    assert _project()["scripts"] == {"memberpulse": "memberpulse.streams.cli.main:main"}
    assert dockerfile_stages()[-1].name == "worker-cpu"  # the default target


def test_serving_images_are_non_root_and_health_checked_on_the_worker_port() -> None:
    stages = {s.name: s for s in dockerfile_stages()}
    port = Settings().worker.web_port
    for name in SERVING:
        stage = stages[name]
        user = stage.args("USER")[-1]
        assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), f"{name}: USER {user} (numeric, not 0)"
        assert stage.args("EXPOSE") == [str(port)]
        (check,) = stage.args("HEALTHCHECK")
        assert "/health" in check
        assert "MEMBERPULSE_WORKER_WEB_PORT" in check
    runtime_env = " ".join(stages["runtime"].args("ENV"))
    assert f"MEMBERPULSE_WORKER_WEB_PORT={port}" in runtime_env
    assert "MEMBERPULSE_MODEL_REGISTRY=/models/registry" in runtime_env


def test_serving_images_hold_no_torch_no_train_extra_and_no_compilers() -> None:
    stages = dockerfile_stages()
    for name in SERVING:
        chain = stage_chain(stages, name)
        assert "train" not in {s.name for s in chain}
        text = " ".join(f"{word} {rest}" for s in chain for word, rest in s.instructions)
        for banned in ("torch", "[train", "transformers", "apt-get", "gcc", "build-essential"):
            assert banned not in text, f"{name} builds with {banned!r}"
    train = " ".join({s.name: s for s in stages}["train"].args("RUN"))
    assert '"torch==${TORCH_VERSION}"' in train  # the separate training image has torch
    assert "[train]" in train


def test_model_is_baked_by_build_argument_or_mounted_never_downloaded() -> None:
    stages = {s.name: s for s in dockerfile_stages()}
    for venv in ("venv-cpu", "venv-cuda"):
        stage = stages[venv]
        assert "MODEL_DIR=deploy/docker/no-model" in stage.args("ARG")
        assert any(rest.startswith("${MODEL_DIR}") for rest in stage.args("COPY"))
        assert any(rest.startswith("bake-model") for rest in stage.args("RUN"))
    assert (DOCKER / "no-model").is_dir()
    assert not list((DOCKER / "no-model").glob("*.onnx"))
    script = (DOCKER / "bake-model.sh").read_text()
    assert 'memberpulse model add "$dir/$name" --promote' in script
    help_text = CliRunner().invoke(app, ["model", "add", "--help"]).output
    assert "--promote" in help_text
    for name in SERVING:
        text = " ".join(rest for _word, rest in stages[name].instructions)
        for fetch in ("curl", "wget", "http://", "https://"):
            assert fetch not in text.replace("http://127.0.0.1", ""), (name, fetch)


def test_cpu_requirements_are_pyprojects_with_plain_onnxruntime() -> None:
    core = _requirements("\n".join(str(dep) for dep in _project()["dependencies"]))  # type: ignore[attr-defined]
    gpu = core.pop("onnxruntime-gpu")
    cpu = core.pop("onnxruntime")
    assert gpu.specifier == cpu.specifier
    wanted = {name: str(r.specifier) for name, r in core.items()} | {
        "onnxruntime": str(gpu.specifier)
    }
    listed = _requirements((DOCKER / "requirements-cpu.txt").read_text())
    assert {name: str(r.specifier) for name, r in listed.items()} == wanted
    assert all(r.marker is None for r in listed.values())


def test_constraints_pin_every_serving_requirement_within_range() -> None:
    pins = _requirements((DOCKER / "constraints.txt").read_text())
    for requirement in pins.values():
        (spec,) = requirement.specifier
        assert spec.operator == "=="
    listed = _requirements((DOCKER / "requirements-cpu.txt").read_text())
    for name, requirement in listed.items():
        (pin,) = pins[name].specifier
        assert requirement.specifier.contains(Version(pin.version)), (name, pin)
    assert str(pins["onnxruntime"].specifier) == str(pins["onnxruntime-gpu"].specifier)
    assert not {"torch", "transformers", "onnx", "matplotlib"} & set(pins)
    cuda = _requirements((DOCKER / "constraints-cuda.txt").read_text())
    assert all(name.startswith("nvidia-") for name in cuda)


@pytest.mark.parametrize("script", ["bake-model.sh", "../compose/up.sh"])
def test_shell_scripts_parse(script: str) -> None:
    path = DOCKER / script
    assert path.stat().st_mode & 0o111, f"{path} is not executable"
    run(["sh", "-n", path])
