"""Workloads and their measurements: exactly which code and configuration an enclave runs.

A :class:`Workload` names the Atoll package files it runs (nothing else of Atoll can be
imported inside: the enclave's loader refuses any ``atoll`` module that is not one of
them), the third-party distributions it needs (pinned by version and by the hash of their
installed ``RECORD``, which lists every file of the distribution with its own hash), the
interpreter, and a small configuration. Its *manifest* is that list with each file's
SHA-256; its *measurement* is the SHA-256 of the canonical manifest. Change one byte of one
file, one version or one configuration value and the measurement changes.

An *image* is a folder holding copies of the workload's files and ``manifest.json``: what
the simulated backend runs and what the Gramine manifest lists as trusted files. The
enclave's boot code (:mod:`atoll.tee.enclave_boot`) re-hashes each file as it imports it
and refuses one whose hash is not in the manifest (Gramine's trusted-files rule).
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from atoll.errors import ConfigError

#: the Atoll files of the training / scoring enclave (paths inside the source root)
_TEE_ML_FILES = (
    "atoll/__init__.py",
    "atoll/_version.py",
    "atoll/errors.py",
    "atoll/wire.py",
    "atoll/tee/__init__.py",
    "atoll/tee/base.py",
    "atoll/tee/measure.py",
    "atoll/tee/simulated.py",
    "atoll/tee/gramine.py",
    "atoll/tee/channel.py",
    "atoll/tee/envelope.py",
    "atoll/tee/storage.py",
    "atoll/tee/authorisation.py",
    "atoll/tee/keyrelease.py",
    "atoll/tee/training.py",
    "atoll/tee/enclave_main.py",
    "atoll/tee/enclave_boot.py",
)
#: third-party distributions whose exact installed files the workload runs (alternatives: any one)
_TEE_ML_DISTS = (("numpy",), ("scipy",), ("scikit-learn",), ("xgboost", "xgboost-cpu"),
                 ("cryptography",), ("pydantic",), ("pydantic_core", "pydantic-core"), ("joblib",),
                 ("threadpoolctl",))


@dataclass(frozen=True)
class Workload:
    """A named program an enclave may run."""

    name: str
    entry: str                       # module the boot code runs, e.g. "atoll.tee.enclave_main"
    files: tuple[str, ...]
    dists: tuple[tuple[str, ...], ...] = ()
    config: dict[str, Any] = field(default_factory=dict)


#: the workloads Atoll ships (name -> Workload)
WORKLOADS: dict[str, Workload] = {
    "tee-ml": Workload("tee-ml", "atoll.tee.enclave_main", _TEE_ML_FILES, _TEE_ML_DISTS,
                       {"algorithms": ["xgboost", "logistic_regression"], "protocol": 1}),
}


def get_workload(name: str) -> Workload:
    w = WORKLOADS.get(name)
    if w is None:
        raise ConfigError(f"unknown enclave workload {name!r}; known: {', '.join(sorted(WORKLOADS))}")
    return w


def source_root() -> Path:
    """The folder that holds the installed ``atoll`` package."""
    import atoll

    return Path(atoll.__file__).resolve().parent.parent


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def runtime_pins(dists: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    """The interpreter and each distribution: version + SHA-256 of its RECORD (or None if absent)."""
    pins: dict[str, Any] = {}
    for names in dists:
        found = None
        for n in names:
            try:
                d = metadata.distribution(n)
            except metadata.PackageNotFoundError:
                continue
            record = d.read_text("RECORD") or ""
            found = {"name": d.metadata["Name"], "version": d.version,
                     "record_sha256": hashlib.sha256(record.encode()).hexdigest()}
            break
        pins["/".join(names)] = found
    return {"python": f"{platform.python_implementation()} {platform.python_version()}",
            "interpreter_sha256": _sha256_file(Path(sys.executable).resolve()), "dists": pins}


def manifest(workload: Workload, root: Path | None = None) -> dict[str, Any]:
    """The workload's manifest from the files under ``root`` (default: the installed Atoll)."""
    root = Path(root) if root is not None else source_root()
    files = {}
    for rel in workload.files:
        p = root / rel
        if not p.is_file():
            raise ConfigError(f"workload {workload.name!r}: file {rel} is missing under {root}")
        files[rel] = _sha256_file(p)
    return {"format": "atoll-tee-manifest/1", "workload": workload.name, "entry": workload.entry,
            "files": files, "config": workload.config, "runtime": runtime_pins(workload.dists)}


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def measurement_of(man: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical manifest."""
    return hashlib.sha256(canonical(man)).hexdigest()


def measure(workload: Workload | str, root: Path | None = None) -> str:
    """The measurement of a workload as the files under ``root`` (default: installed Atoll) make it."""
    w = get_workload(workload) if isinstance(workload, str) else workload
    return measurement_of(manifest(w, root))


@dataclass(frozen=True)
class Image:
    path: Path
    manifest: dict[str, Any]
    measurement: str


def build_image(workload: Workload | str, dest: Path, root: Path | None = None) -> Image:
    """Copy the workload's files from ``root`` into ``dest`` and write ``manifest.json``."""
    w = get_workload(workload) if isinstance(workload, str) else workload
    root = Path(root) if root is not None else source_root()
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    for rel in w.files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, dest / rel)
    man = manifest(w, dest)  # hashed from the copies: what will run
    (dest / "manifest.json").write_bytes(canonical(man))
    return Image(dest, man, measurement_of(man))
