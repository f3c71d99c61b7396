"""A party's served model part: the saved part, the preprocessing fitted before it, its hash.

A part comes from a finished run (``RUN/PARTY/STEP/model.bin``, the file ``atoll predict``
loads) or from raw bytes (the node's model store keeps the same bytes). From a run, the
``scale`` steps on the model's training path are found in the job file and their fitted
statistics (this party's, from ``RUN/PARTY/SCALE_STEP/model.bin``) are applied to every
looked-up row first, exactly as ``atoll predict`` replays them; ``reader``, ``psi`` and
``split`` pass rows through. Any other step on that path is refused (serving cannot replay it).

``sha256`` pins the version: SHA-256 over the part's bytes and each preprocessing state's,
so two parties agree on a version only if they serve the very bytes they published.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from atoll import wire
from atoll.errors import ConfigError, DataError, WireError
from atoll.serving.models import Adapter, adapter

#: steps that hand rows on unchanged at prediction time
_PASS_THROUGH = {"reader", "psi", "split"}
MAX_PART_BYTES = 256 << 20


@dataclass
class ServedPart:
    """One party's part of one model version (see the module docstring)."""

    algorithm: str
    role: str
    columns: list[str]
    model: Any
    sha256: str
    scalers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def adapter(self) -> Adapter:
        return adapter(self.algorithm)

    def __post_init__(self) -> None:
        # each scale state as (positions in this part's columns, offsets, divisors), computed once
        self._scale = []
        for st in self.scalers:
            cols = list(st["columns"])
            idx = [k for k, c in enumerate(self.columns) if c in cols]
            pos = [cols.index(self.columns[k]) for k in idx]
            self._scale.append((np.asarray(idx, dtype=np.int64), np.asarray(st["offset"], np.float64)[pos],
                                np.asarray(st["divisor"], np.float64)[pos]))

    def preprocess(self, x: np.ndarray) -> np.ndarray:
        """Apply the fitted scale steps to raw rows of this part's columns (in place)."""
        for idx, off, div in self._scale:
            x[:, idx] = (x[:, idx] - off) / div
        return x

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """Rows given as a frame (its columns by name) as the model's input, preprocessed."""
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise ConfigError(f"the feature source lacks {len(missing)} of the model's columns "
                              f"(e.g. {missing[0]!r}); serve it the columns the model was trained on")
        return self.preprocess(frame.loc[:, self.columns].to_numpy(dtype=np.float64, copy=True))

    def rows(self, source: Any, ids: list[str]) -> np.ndarray:
        """The rows of ``ids`` from a feature source as the model's input, preprocessed."""
        return self.preprocess(source.rows(ids, self.columns))


def part_from_bytes(blob: bytes, scalers: list[bytes] = ()) -> ServedPart:
    """A part from its saved bytes (and the saved bytes of the scale states before it)."""
    if len(blob) > MAX_PART_BYTES:
        raise ConfigError(f"a model part of {len(blob)} bytes exceeds serving's limit")
    try:
        d = wire.loads(blob, max_bytes=MAX_PART_BYTES)
        states = [wire.loads(s) for s in scalers]
    except WireError as e:
        raise ConfigError(f"not a saved model part: {e}") from None
    if not isinstance(d, dict) or not isinstance(d.get("component"), str) or d.get("role") not in ("guest", "host"):
        raise ConfigError("not a guest's or host's saved model part (no component / role)")
    for st in states:
        if not isinstance(st, dict) or st.get("component") != "scale":
            raise ConfigError("a preprocessing state that is not a scale step's")
    h = hashlib.sha256(blob)
    for s in scalers:
        h.update(hashlib.sha256(s).digest())
    a = adapter(d["component"])
    try:
        model = a.load(d)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"the {d['component']} model part is malformed ({type(e).__name__})") from None
    return ServedPart(d["component"], d["role"], [str(c) for c in d["columns"]], model, h.hexdigest(), states)


def part_from_run(run_dir: str | Path, party: str, step: str) -> ServedPart:
    """``party``'s part of the model trained by ``step`` of a finished run, with its preprocessing."""
    import yaml

    root = Path(run_dir)
    try:
        raw = yaml.safe_load((root / "job.yaml").read_text())
    except OSError:
        raise ConfigError(f"{root} is not a finished run folder (no job.yaml)") from None
    steps = {s["id"]: s for s in raw.get("pipeline", [])}
    if step not in steps:
        raise ConfigError(f"the run has no step {step!r} (steps: {', '.join(steps)})")
    blob = _read(root / party / step / "model.bin", f"{party}'s part of {step}")
    scalers: list[bytes] = []
    current = steps[step]
    while True:
        inputs = current.get("inputs") or {}
        src = inputs.get("train") or inputs.get("data")
        if not src:
            break
        prev = steps.get(str(src).partition(".")[0])
        if prev is None:
            raise DataError(f"step {current['id']!r} reads from an unknown step {src!r}")
        if prev["component"] == "scale":
            scalers.insert(0, _read(root / party / prev["id"] / "model.bin", f"{party}'s {prev['id']} state"))
        elif prev["component"] not in _PASS_THROUGH:
            raise ConfigError(f"step {prev['id']!r} ({prev['component']}) precedes the model; serving "
                              "replays only scale, reader, psi and split steps")
        current = prev
    return part_from_bytes(blob, scalers)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        raise ConfigError(f"{what} is missing ({path}); is the run finished?") from None
