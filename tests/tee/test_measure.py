"""Measurements pin exactly the code and configuration; the enclave's loader runs only what was measured."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import pytest

from atoll.tee.base import TeeError
from atoll.tee.measure import build_image, canonical, get_workload, manifest, measure, measurement_of
from atoll.tee.simulated import EnclaveProcess
from helpers_tee import changed_source


def test_measurement_is_stable_and_matches_the_running_enclave(enclave):
    assert measure("tee-ml") == measure("tee-ml") == enclave.measurement
    man = manifest(get_workload("tee-ml"))
    assert set(man["files"]) == set(get_workload("tee-ml").files)
    assert man["runtime"]["dists"]["numpy"]["version"]


def test_one_changed_byte_or_setting_changes_it(tmp_path):
    w = get_workload("tee-ml")
    root = changed_source(tmp_path / "src")
    assert measure(w, root) != measure(w)
    assert measure(replace(w, config={**w.config, "protocol": 2})) != measure(w)
    image = build_image(w, tmp_path / "img", root)
    assert image.measurement == measure(w, root) == measurement_of(json.loads((image.path / "manifest.json").read_text()))


def _boot(image, tmp_path, platform):
    cmd = [sys.executable, "-I", str(image.path / "atoll" / "tee" / "enclave_boot.py"), "--backend", "simulated",
           "--platform", str(platform.folder)]
    return EnclaveProcess.start(cmd, image, tmp_path, "simulated", None, timeout=30)


def test_loader_refuses_a_file_changed_after_measuring(tmp_path, platform):
    image = build_image("tee-ml", tmp_path / "img")
    f = image.path / "atoll" / "tee" / "enclave_main.py"
    f.write_bytes(f.read_bytes().replace(b"listening", b"LISTENING"))
    with pytest.raises(TeeError, match="did not start") as e:
        _boot(image, tmp_path, platform)
    assert "does not match the enclave's manifest" in str(e.value)


def test_loader_refuses_other_libraries_than_pinned(tmp_path, platform):
    image = build_image("tee-ml", tmp_path / "img")
    man = dict(image.manifest)
    man["runtime"] = json.loads(json.dumps(man["runtime"]))
    man["runtime"]["dists"]["numpy"]["version"] = "0.0.1"
    (image.path / "manifest.json").write_bytes(canonical(man))
    with pytest.raises(TeeError, match="did not start") as e:
        _boot(replace(image, manifest=man, measurement=measurement_of(man)), tmp_path, platform)
    assert "pinned library differs" in str(e.value)


def test_loader_serves_only_listed_atoll_modules(tmp_path):
    from atoll.tee.enclave_boot import _TrustedFinder

    image = build_image("tee-ml", tmp_path / "img")
    finder = _TrustedFinder(image.path, image.manifest["files"])
    assert finder.find_spec("atoll.tee.training") is not None
    assert finder.find_spec("numpy") is None                       # third-party: the pinned install
    with pytest.raises(ImportError, match="not a trusted file"):
        finder.find_spec("atoll.jobs.runner")
