"""The enclave's loader: the first code that runs in an enclave image (standard library only).

1. Read the image's ``manifest.json``; the measurement is its SHA-256.
2. Put a finder first on ``sys.meta_path`` that serves every ``atoll`` module from the
   image only, and only if the file's SHA-256 equals the manifest's (Gramine's trusted
   files): any other ``atoll`` module, or a changed file, fails to import.
3. Check that the interpreter and the pinned third-party distributions are the ones in
   the manifest, then run the workload's entry module with the measurement.

Run as ``python -I IMAGE/atoll/tee/enclave_boot.py --backend ...`` (isolated mode: no
environment-chosen paths, no user site-packages).
"""

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
from pathlib import Path

IMAGE = Path(__file__).resolve().parents[2]


class _TrustedFinder(importlib.abc.MetaPathFinder):
    def __init__(self, root: Path, files: dict):
        self.root, self.files = root, files

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "atoll" and not fullname.startswith("atoll."):
            return None
        parts = fullname.split(".")
        for rel, is_pkg in (("/".join(parts) + "/__init__.py", True), ("/".join(parts) + ".py", False)):
            if rel in self.files:
                loader = _TrustedLoader(fullname, str(self.root / rel), self.files[rel])
                spec = importlib.util.spec_from_file_location(
                    fullname, self.root / rel, loader=loader,
                    submodule_search_locations=[str((self.root / rel).parent)] if is_pkg else None)
                return spec
        raise ImportError(f"{fullname} is not a trusted file of this enclave's workload")


class _TrustedLoader(importlib.machinery.SourceFileLoader):
    def __init__(self, fullname, path, sha256):
        super().__init__(fullname, path)
        self.sha256 = sha256

    def get_code(self, fullname):
        data = self.get_data(self.path)
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise ImportError(f"{self.path} does not match the enclave's manifest: refusing to run it")
        return compile(data, self.path, "exec", dont_inherit=True)


def main() -> None:
    sys.dont_write_bytecode = True
    raw = (IMAGE / "manifest.json").read_bytes()
    manifest = json.loads(raw)
    measurement = hashlib.sha256(raw).hexdigest()
    for mod in [m for m in sys.modules if m == "atoll" or m.startswith("atoll.")]:
        del sys.modules[mod]
    sys.meta_path.insert(0, _TrustedFinder(IMAGE, manifest["files"]))
    from atoll.tee.measure import canonical, runtime_pins  # through the trusted loader

    if canonical(manifest) != raw:
        raise SystemExit("manifest.json is not canonical: refusing to start")
    pins = runtime_pins(tuple(tuple(k.split("/")) for k in manifest["runtime"]["dists"]))
    if pins != manifest["runtime"]:
        raise SystemExit("the interpreter or a pinned library differs from the manifest: refusing to start")
    entry = importlib.import_module(manifest["entry"])
    entry.main(measurement, manifest, sys.argv[1:])


if __name__ == "__main__":
    main()
