"""Helpers of the TEE tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from atoll.tee.measure import get_workload, source_root


def changed_source(dest: Path, rel: str = "atoll/tee/training.py") -> Path:
    """A copy of the tee-ml workload's files with one byte of ``rel`` changed (a docstring letter)."""
    for f in get_workload("tee-ml").files:
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source_root() / f, dest / f)
    data = bytearray((dest / rel).read_bytes())
    i = data.index(b"Pooled")
    data[i] = ord("p")
    (dest / rel).write_bytes(bytes(data))
    return dest
