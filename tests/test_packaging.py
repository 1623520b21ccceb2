"""The built wheel: one import root, `memberpulse`; the Lua scripts and docs ship with it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_has_only_the_memberpulse_import_root(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path),
         str(ROOT)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("memberpulse-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"memberpulse", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1]
                         + ".dist-info"}  # fmt: skip
    for required in ("memberpulse/streams/cli/main.py", "memberpulse/models/fold.py",
                     "memberpulse/export/__init__.py", "memberpulse/streams/state/lua/apply.lua",
                     "memberpulse/streams/state/lua/value.lua",
                     "memberpulse/streams/py.typed",
                     "memberpulse/streams/decisions/coupons.default.toml",
                     "memberpulse/streams/decisions/schemas/dlq.schema.json",
                     "memberpulse/streams/simulate/SIMULATOR.md",
                     "memberpulse/streams/app.py"):  # fmt: skip
        assert required in names
    assert not any(name.startswith("memberpulse/__init__") for name in names)
