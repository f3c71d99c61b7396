"""What every benchmark prints about the machine it ran on.

Benchmarks run as scripts (``python benchmarks/x.py``), so this module is imported as
``from _common import hardware``.
"""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def hardware() -> dict:
    """CPU, cores, load and Python, for the header line and the JSON of a benchmark."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": cpu_model(), "cores": cores(), "load_1min": load,
            "python": platform.python_version()}


def header(title: str) -> str:
    """One line naming the benchmark and the machine, printed first by every benchmark."""
    h = hardware()
    return (f"{title} | {h['cpu']} | {h['cores']} cores | load {h['load_1min']:.2f} | "
            f"Python {h['python']}") if h["load_1min"] is not None else f"{title} | {h['cpu']} | {h['cores']} cores"
