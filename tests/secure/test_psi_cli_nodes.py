"""``atoll psi`` in two-node mode: two separate OS processes, each running the CLI verb, over gRPC + mutual TLS."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from atoll.federation.certs import init_certs
from atoll.federation.launch import free_port

ATOLL = [sys.executable, "-m", "atoll.cli"]


def _start(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(ATOLL + ["psi", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)


def _finish(proc: subprocess.Popen) -> str:
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    assert proc.returncode == 0, out
    return out


def test_two_nodes_align_over_mutual_tls(tmp_path: Path):
    certs = init_certs(["guest", "host_0"], tmp_path / "certs")
    guest_ids = [f"cust-{i:05d}" for i in range(0, 900, 3)] + [7, 8]          # ints too: 7 matches "7"
    host_ids = [f"cust-{i:05d}" for i in range(0, 900, 5)] + ["7", " 8 "]
    pd.DataFrame({"customer": guest_ids, "score": range(len(guest_ids))}).to_csv(tmp_path / "g.csv", index=False)
    pd.DataFrame({"customer": host_ids}).to_csv(tmp_path / "h.csv", index=False)
    pg, ph = free_port(), free_port()
    guest = _start(["--role", "guest", "--ids", str(tmp_path / "g.csv"), "--address", f"127.0.0.1:{pg}",
                    "--peer", f"host_0=127.0.0.1:{ph}", "--certs", str(certs), "--out", str(tmp_path / "g_out.csv")])
    host = _start(["--role", "host", "--ids", str(tmp_path / "h.csv"), "--address", f"127.0.0.1:{ph}",
                   "--peer", f"guest=127.0.0.1:{pg}", "--certs", str(certs), "--out", str(tmp_path / "h_out.csv")])
    out_g, out_h = _finish(guest), _finish(host)
    want = sorted({str(x).strip() for x in guest_ids} & {str(x).strip() for x in host_ids})
    assert len(want) == 60 + 2 and f"{len(want)} ids in common" in out_g and f"{len(want)} ids in common" in out_h
    # each node writes its own ids (as read from its CSV, as text), in the same agreed order
    g = pd.read_csv(tmp_path / "g_out.csv", dtype=str, keep_default_na=False)["customer"].tolist()
    h = pd.read_csv(tmp_path / "h_out.csv", dtype=str, keep_default_na=False)["customer"].tolist()
    assert g == [x for x in want] and [x.strip() for x in h] == want and " 8 " in h


def test_two_nodes_stream_kkrt(tmp_path: Path):
    """``--protocol kkrt --stream`` in two-node mode: each node streams its own file and writes its result."""
    certs = init_certs(["guest", "host_0"], tmp_path / "certs")
    pd.DataFrame({"customer": [f"c{i}" for i in range(0, 3000, 2)]}).to_csv(tmp_path / "g.csv", index=False)
    pd.DataFrame({"customer": [f"c{i}" for i in range(0, 3000, 3)]}).to_parquet(tmp_path / "h.parquet")
    pg, ph = free_port(), free_port()
    common = ["--protocol", "kkrt", "--stream", "--chunk-rows", "500", "--certs", str(certs)]
    guest = _start(["--role", "guest", "--ids", str(tmp_path / "g.csv"), "--address", f"127.0.0.1:{pg}",
                    "--peer", f"host_0=127.0.0.1:{ph}", "--out", str(tmp_path / "g_out.csv"), *common])
    host = _start(["--role", "host", "--ids", str(tmp_path / "h.parquet"), "--address", f"127.0.0.1:{ph}",
                   "--peer", f"guest=127.0.0.1:{pg}", "--out", str(tmp_path / "h_out.csv"), *common])
    out_g, out_h = _finish(guest), _finish(host)
    assert "500 ids in common" in out_g and "500 ids in common" in out_h
    g = pd.read_csv(tmp_path / "g_out.csv", dtype=str)["customer"].tolist()
    h = pd.read_csv(tmp_path / "h_out.csv", dtype=str)["customer"].tolist()
    assert g == h and sorted(g) == sorted(f"c{i}" for i in range(0, 3000, 6))
