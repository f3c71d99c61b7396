"""Process helpers shared by the launcher and the worker pools."""

from __future__ import annotations

import multiprocessing
import os
import threading


def cpu_count() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's core count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def die_with_parent() -> None:
    """End this process as soon as the process that started it is gone.

    For children started by :mod:`multiprocessing` (party processes, HE workers; use it
    as a pool ``initializer``): a non-daemonic child blocked on a queue or a socket
    would otherwise outlive a parent that was killed, as an orphan. The parent's
    sentinel becomes readable when it exits, however it exits.
    """
    parent = multiprocessing.parent_process()
    if parent is None:  # not started by multiprocessing: nothing to watch
        return

    def watch() -> None:
        parent.join()
        os._exit(3)

    threading.Thread(target=watch, name="atoll-parent-watch", daemon=True).start()
