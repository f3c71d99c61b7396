"""Serving configs and the CLI: YAML for hosts and a guest (routes, masked level with CLI-made keys)."""

from __future__ import annotations

import numpy as np
import yaml
from typer.testing import CliRunner

from atoll.cli import app
from atoll.serving.config import build_guest, build_host, load_config


def test_yaml_configs_build_a_masked_canary_deployment(lr_run, lr_run_v2, certs, tmp_path):
    runner = CliRunner()
    pubs = {}
    for h in ("host_0", "host_1"):
        res = runner.invoke(app, ["serve", "mask-key", "--out", str(tmp_path / f"{h}.mask")])
        assert res.exit_code == 0, res.output
        pubs[h] = res.output.strip()
        assert len(bytes.fromhex(pubs[h])) == 32 and (tmp_path / f"{h}.mask").stat().st_mode & 0o077 == 0
    servers, addrs = [], {}
    try:
        for h in ("host_0", "host_1"):
            f = tmp_path / f"{h}.yaml"
            f.write_text(yaml.safe_dump({
                "party": h, "role": "host", "session": "s1", "listen": "127.0.0.1:0", "certs": str(certs),
                "features": {"path": str(lr_run["files"][h])}, "levels": ["masked"],
                "mask_key": f"{h}.mask", "mask_peers": {o: pubs[o] for o in pubs if o != h},
                "models": {"v1": {"run": str(lr_run["run"])}, "v2": {"run": str(lr_run_v2["run"])}}}))
            host, tls = build_host(load_config(f))
            servers.append(host.serve("127.0.0.1:0", tls))
            addrs[h] = [f"127.0.0.1:{host.port}"]
        g = tmp_path / "guest.yaml"
        g.write_text(yaml.safe_dump({
            "party": "guest", "role": "guest", "session": "s1", "listen": "127.0.0.1:0", "certs": str(certs),
            "features": {"path": str(lr_run["files"]["guest"])}, "hosts": addrs, "level": "masked",
            "models": {"v1": {"run": str(lr_run["run"])}, "v2": {"run": str(lr_run_v2["run"])}},
            "routes": {"stable": "v1", "canary": "v2", "fraction": 0.5, "salt": "x"}, "health_interval_s": 0}))
        guest = build_guest(load_config(g))
        try:
            ids = [str(i) for i in lr_run["predict"].index[:30]]
            got = guest.score(ids)
            assert set(got.versions) == {"v1", "v2"} and got.level == "masked"
            for run, v in ((lr_run, "v1"), (lr_run_v2, "v2")):
                sel = [k for k, ver in enumerate(got.versions) if ver == v]
                want = run["predict"].loc[[int(ids[k]) for k in sel], "score"].to_numpy()
                np.testing.assert_allclose(got.scores[sel], want, atol=1e-8)
        finally:
            guest.close()
    finally:
        for s in servers:
            s.stop(0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("role: guest\nparty: guest\n")
    res = runner.invoke(app, ["serve", "guest", "--config", str(bad)])
    assert res.exit_code == 1 and "not a valid serving config" in res.output


def test_example_configs_are_valid():
    from pathlib import Path

    from atoll.serving.config import GuestConfig, HostConfig
    from atoll.serving.features import open_source

    root = Path(__file__).resolve().parents[2] / "examples" / "serving"
    host, guest = load_config(root / "host_0.yaml"), load_config(root / "guest.yaml")
    assert isinstance(host, HostConfig) and isinstance(guest, GuestConfig)
    assert host.session == guest.session and set(guest.hosts) == {"host_0"}
    assert len(open_source(host.features).lookup(["10274", "10365"])) == 2
