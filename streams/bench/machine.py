"""Where a benchmark's figures were measured: one description for every report.

The CPU model is the part that matters: this project's 2-core VMs are an Intel Xeon or
an AMD EPYC, whose figures differ by up to 2.5×, so figures compare only within one
machine (BENCHMARKS.md says which each came from).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine() -> str:
    """CPU model, core count, architecture and Python version, for benchmark records."""
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, {platform.machine()}, "
        f"Python {platform.python_version()}"
    )
