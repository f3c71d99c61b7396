"""What flows between components, and how each party keeps it on its own disk.

* ``data``: a :class:`Table` (features indexed by sample id; the label where the
  party holds one). Stored as ``.npz`` (no pickle).
* ``model``, ``scores``, ``metrics``: plain dicts of wire-typed values (numbers,
  strings, numpy arrays, lists, dicts), stored with :mod:`atoll.wire` (the safe
  codec; no pickle). ``scores`` carries ``ids``, ``score`` (and ``label``).

Every output a party produced is persisted by the run store (:mod:`atoll.jobs.store`;
the run folder keeps it under ``RUN/PARTY/STEP/``) before the step counts as done: that
is what ``--resume`` and ``atoll predict`` load.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from atoll import wire
from atoll.errors import DataError

KINDS = ("data", "model", "scores", "metrics")


@dataclass
class Table:
    """One party's rows: features ``x`` (index = sample ids) and, for label holders, ``y``.

    ``exposure`` (Poisson models, label holder only) is a per-row column kept apart from the
    features like the label: no step scales it or trains on it as a feature.
    """

    x: pd.DataFrame
    y: pd.Series | None = None
    exposure: pd.Series | None = None

    def __post_init__(self) -> None:
        for name, col in (("label", self.y), ("exposure", self.exposure)):
            if col is not None and not self.x.index.equals(col.index):
                raise DataError(f"{name} and features must have the same ids in the same order")

    @property
    def ids(self) -> pd.Index:
        return self.x.index

    def __len__(self) -> int:
        return len(self.x)

    def _side(self, pick: Any) -> dict[str, pd.Series | None]:
        return {k: None if v is None else pick(v) for k, v in (("y", self.y), ("exposure", self.exposure))}

    def take(self, ids: Any) -> "Table":
        """The rows with these ids, in this order."""
        missing = pd.Index(ids).difference(self.x.index)
        if len(missing):
            raise DataError(f"{len(missing)} requested ids are not in this party's data "
                            f"(e.g. {list(missing[:3])}); were the parties aligned (psi) first?")
        return Table(self.x.loc[ids], **self._side(lambda s: s.loc[ids]))

    def rows(self, positions: Any) -> "Table":
        """The rows at these positions, in this order."""
        return Table(self.x.iloc[positions], **self._side(lambda s: s.iloc[positions]))

    def with_x(self, x: pd.DataFrame) -> "Table":
        """The same rows, label and exposure with other feature values (same index)."""
        return Table(x, self.y, self.exposure)

    def values(self) -> np.ndarray:
        return self.x.to_numpy(dtype=np.float64)

    def save(self, path: Path) -> None:
        with open(path, "wb") as f:
            self._write(f)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        self._write(buf)
        return buf.getvalue()

    def _write(self, f: Any) -> None:
        ids = np.asarray(self.x.index)
        if ids.dtype == object:
            ids = ids.astype(str)
        arrays = {"ids": ids, "columns": np.asarray(self.x.columns, dtype=str),
                  "x": self.values(), "id_name": np.asarray(str(self.x.index.name or "id"))}
        if self.y is not None:
            arrays["y"] = self.y.to_numpy()
            arrays["label_name"] = np.asarray(str(self.y.name))
        if self.exposure is not None:
            arrays["exposure"] = self.exposure.to_numpy(dtype=np.float64)
            arrays["exposure_name"] = np.asarray(str(self.exposure.name))
        np.savez(f, **arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Table":
        return cls.load(io.BytesIO(data))

    @classmethod
    def load(cls, path: Path | io.BytesIO) -> "Table":
        with np.load(path, allow_pickle=False) as z:
            index = pd.Index(z["ids"], name=str(z["id_name"]))
            x = pd.DataFrame(z["x"], index=index, columns=[str(c) for c in z["columns"]])
            y = pd.Series(z["y"], index=index, name=str(z["label_name"])) if "y" in z else None
            e = (pd.Series(z["exposure"], index=index, name=str(z["exposure_name"]))
                 if "exposure" in z else None)
        return cls(x, y, e)


def ids_to_wire(ids: pd.Index) -> Any:
    """Sample ids as a wire value: an int64 array, or a list of strings."""
    if pd.api.types.is_integer_dtype(ids.dtype):
        return np.asarray(ids, dtype=np.int64)
    return [str(i) for i in ids]


def encode_output(value: Any) -> tuple[str, bytes]:
    """One output as (format, bytes): ``"npz"`` for a :class:`Table`, ``"bin"`` (wire codec) otherwise.
    What every run store keeps, whatever its medium (files, database rows)."""
    if isinstance(value, Table):
        return "npz", value.to_bytes()
    return "bin", wire.dumps(value)


def decode_output(fmt: str, data: bytes) -> Any:
    if fmt == "npz":
        return Table.from_bytes(data)
    if fmt == "bin":
        return wire.loads(data)
    raise DataError(f"unknown output format {fmt!r}")


def save_output(folder: Path, name: str, value: Any) -> str:
    """Persist one output; return the file name."""
    fmt, data = encode_output(value)
    fname = f"{name}.{fmt}"
    (folder / fname).write_bytes(data)
    return fname


def load_output(folder: Path, fname: str) -> Any:
    return decode_output(fname.rpartition(".")[2], (folder / fname).read_bytes())


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=_json_default))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON: {type(o).__name__}")
