"""``atoll hfl``: a server (the CLI, in this process) and two client CLI processes (one with a
certificate, one with an enrolment token) train what the simulation trains; tokens are issued, listed and revoked."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from atoll import horizontal
from atoll.cli import app
from atoll.federation.certs import init_certs
from atoll.federation.launch import free_port
from atoll.ml.horizontal import FedAvg, LogisticRegression, partition


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    return train_test_split(x / 16.0, y, test_size=0.25, random_state=0, stratify=y)


def _csv(path, x, y):
    df = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])])
    df.insert(0, "id", np.arange(len(y)))
    df["y"] = y
    df.to_csv(path, index=False)
    return path


def test_token_commands_issue_list_and_revoke(tmp_path):
    r = CliRunner()
    store = tmp_path / "tokens.json"
    issued = r.invoke(app, ["hfl", "token", "issue", "--store", str(store), "--client", "phone_1", "--note", "test"])
    assert issued.exit_code == 0 and issued.output.startswith("atoll-hfl:phone_1:")
    token_id = issued.output.strip().split(":")[2]
    listed = r.invoke(app, ["hfl", "token", "list", "--store", str(store)])
    assert token_id in listed.output and "live" in listed.output and issued.output.split(":")[3] not in listed.output
    assert r.invoke(app, ["hfl", "token", "revoke", "--store", str(store), "--id", token_id]).exit_code == 0
    assert "revoked" in r.invoke(app, ["hfl", "token", "list", "--store", str(store)]).output
    again = r.invoke(app, ["hfl", "token", "revoke", "--store", str(store), "--id", token_id])
    assert again.exit_code == 1 and "no live token" in again.output


def test_server_and_clients_as_cli_processes_train_what_the_simulation_trains(tmp_path, digits):
    xtr, xte, ytr, yte = digits
    names = ["client_0", "client_1"]
    parts = partition.iid(len(xtr), 2, seed=0)
    files = [_csv(tmp_path / f"{c}.csv", xtr[p], ytr[p]) for c, p in zip(names, parts)]
    certs = init_certs(["server", "client_0"], tmp_path / "certs", days=1)
    store = tmp_path / "tokens.json"
    token = CliRunner().invoke(app, ["hfl", "token", "issue", "--store", str(store), "--client", "client_1"]
                               ).output.strip()
    port, tport = free_port(), free_port()
    cfg = {"job": "digits", "certs": "certs", "listen": f"127.0.0.1:{port}", "token_listen": f"127.0.0.1:{tport}",
           "tokens": "tokens.json", "clients": ["client_0"],
           "model": {"kind": "logistic_regression", "n_features": 64, "n_classes": 10,
                     "features": [f"x{i}" for i in range(64)]},
           "params": {"rounds": 3, "local_epochs": 1, "batch_size": 10, "learning_rate": 0.1},
           "min_clients": 2, "test_data": {"path": str(_csv(tmp_path / "test.csv", xte, yte))},
           "out": "model.npz", "seed": 0, "wait_timeout": 120}
    (tmp_path / "server.yaml").write_text(yaml.safe_dump(cfg))
    cli = [sys.executable, "-m", "atoll.cli", "hfl"]
    box = {}
    server = threading.Thread(target=lambda: box.update(
        res=CliRunner().invoke(app, ["hfl", "server", "--config", str(tmp_path / "server.yaml")])), daemon=True)
    server.start()
    clients = [subprocess.Popen([*cli, "client", "--server", f"127.0.0.1:{port}", "--data", str(f),
                                 "--certs", str(certs), "--name", c, "--job", "digits",
                                 "--out", str(tmp_path / f"{c}.npz")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for c, f in zip(names[:1], files[:1])]
    clients.append(subprocess.Popen([*cli, "client", "--server", f"127.0.0.1:{tport}", "--data", str(files[1]),
                                     "--token", token, "--ca", str(certs / "ca.pem"), "--job", "digits"],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        said = [c.communicate(timeout=120)[0] for c in clients]
        server.join(timeout=60)
    finally:
        for p in clients:
            if p.poll() is None:
                p.kill()
    res = box["res"]
    out = res.output
    assert res.exit_code == 0, (out, said)
    assert "round 2: fit 2/2 clients answered" in out and "done: 3 rounds" in out, out
    assert all(c.returncode == 0 for c in clients), said
    assert all("the job finished: trained in 3 rounds over 1 session(s)" in s for s in said), said
    saved = np.load(tmp_path / "model.npz")
    weights = [saved["w0"], saved["w1"]]
    sim = horizontal.simulate(lambda: LogisticRegression(64, 10), [(xtr[p], ytr[p]) for p in parts],
                              FedAvg(min_fit_clients=2, local={"epochs": 1, "batch_size": 10, "lr": 0.1}),
                              rounds=3, seed=0)
    for a, b in zip(weights, sim.weights):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    client0 = np.load(tmp_path / "client_0.npz")
    np.testing.assert_array_equal(client0["w0"], weights[0])  # the client kept the final model


def test_bad_configs_and_options_say_what_to_fix(tmp_path):
    r = CliRunner()
    (tmp_path / "bad.yaml").write_text("job: x\nmodel: {kind: forest, n_features: 3}\ncerts: c\n")
    res = r.invoke(app, ["hfl", "server", "--config", str(tmp_path / "bad.yaml")])
    assert res.exit_code == 1 and "kind" in res.output
    res = r.invoke(app, ["hfl", "client", "--server", "127.0.0.1:1", "--data", "x.csv"])
    assert res.exit_code != 0 and "--certs and --name" in res.output
