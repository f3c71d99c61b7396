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


class CpuMeter:
    """CPU seconds of this process and of every process below it while the block runs.

    ``resource.RUSAGE_CHILDREN`` misses descendants nobody waits for (e.g. HE workers forked by a
    ``forkserver``), so the descendants are sampled with psutil every ``interval`` seconds and each
    one's last reading is kept (a process that lives shorter than ``interval`` may be missed).

        with CpuMeter() as m:
            work()
        m.seconds
    """

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.seconds = 0.0

    def _sample(self) -> None:
        import psutil

        try:
            procs = self._me.children(recursive=True)
        except psutil.Error:
            return
        for p in procs:
            try:
                t = p.cpu_times()
                self._seen[(p.pid, p.create_time())] = t.user + t.system
            except psutil.Error:
                pass

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "CpuMeter":
        import threading

        import psutil

        self._me = psutil.Process()
        self._seen: dict = {}
        self._sample()
        self._before = dict(self._seen)
        t = self._me.cpu_times()
        self._self0 = t.user + t.system
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        t = self._me.cpu_times()
        kids = sum(v - self._before.get(k, 0.0) for k, v in self._seen.items())
        self.seconds = t.user + t.system - self._self0 + kids
