"""S3-compatible storage (moto's server on loopback) read by the enclave, and the ``atoll tee`` CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from atoll import datasets
from atoll.cli import app
from atoll.tee import datalab, storage
from atoll.tee.keyrelease import KeyReleaseService
from atoll.tee.simulated import SimulatedBackend
from atoll.tee.training import DatasetRef, JobRequest, TeeTrainParams

DCAP = Path(__file__).parent / "data" / "dcap"


@pytest.fixture(scope="module")
def s3(platform, tmp_path_factory):
    pytest.importorskip("boto3")
    server_mod = pytest.importorskip("moto.server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{server._server.server_address[1]}"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    boto3.client("s3").create_bucket(Bucket="atoll-data")
    enclave = SimulatedBackend().launch("tee-ml", workdir=tmp_path_factory.mktemp("s3-enclave"),
                                        platform_dir=platform.folder, env=env)
    yield enclave
    enclave.stop()
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_enclave_streams_ciphertext_from_an_s3_bucket(s3, platform, keys, tmp_path):
    enclave = s3
    pol = platform.policy([enclave.measurement])
    target, _ = datalab.attest_enclave(enclave.address, pol)
    g = datasets.load("breast", "hetero", "guest")
    h = datasets.load("breast", "hetero", "host")
    y = g.pop("y")
    krs = {n: KeyReleaseService(tmp_path / n, keys[n], [platform.public_key.hex()]) for n in ("bank", "shop")}
    refs = []
    for name, df, lab in (("bank", g, y.to_numpy(np.float64)), ("shop", h, None)):
        hd = datalab.encrypt_table(df.index.to_numpy(), df.to_numpy(), lab, list(df.columns), "y" if lab is not None
                                   else None, tmp_path / f"{name}.atd", name, name, target, krs[name], 100)
        loc = storage.upload(tmp_path / f"{name}.atd", storage.join("s3://atoll-data/tee", f"{name}.atd"))
        auth = krs[name].authorise(hd["key_id"], name, "s3-job", [enclave.measurement],
                                   {"bank": keys["bank"].public().box_key}, backends=["simulated"])
        refs.append(DatasetRef(location=loc, authorisation={"body": auth.body.hex(), "signature": auth.signature.hex()}))
    assert refs[0].location == "s3://atoll-data/tee/bank.atd"
    p = TeeTrainParams(n_estimators=4, max_depth=3)
    req = JobRequest(job="s3-job", seed=3, params=p, datasets=refs, recipients=["bank"])
    with enclave.connect(pol) as chan:
        result = datalab.run_job(chan, req, [krs["bank"], krs["shop"]])
    model = datalab.open_result(result, keys["bank"], "s3-job")
    x = np.hstack([g.to_numpy(), h.loc[g.index].to_numpy()])
    twin = p.estimator(3).fit(x, y.to_numpy())
    assert bytes(model["model"]) == bytes(twin.get_booster().save_raw("json"))
    with storage.open_read(refs[1].location) as f:
        assert f.read(16) == b"ATOLLTEE-DATA/1\n"


def test_cli_keys_policy_encrypt_authorise_revoke(enclave, platform, tmp_path):
    r = CliRunner()
    ok = lambda res: (res.exit_code == 0) or pytest.fail(res.output)  # noqa: E731
    ok(r.invoke(app, ["tee", "keygen", "--name", "bank", "--out", str(tmp_path / "bank.keys")]))
    pub = json.loads((tmp_path / "bank.pub.json").read_text())
    assert set(pub) == {"name", "sign_key", "box_key"} and oct((tmp_path / "bank.keys").stat().st_mode)[-3:] == "600"
    res = r.invoke(app, ["tee", "measure"])
    ok(res)
    assert res.output.strip() == enclave.measurement
    res = r.invoke(app, ["tee", "sim-platform", "--dir", str(platform.folder)])
    assert "SIMULATED: NO HARDWARE PROTECTION" in res.output and platform.public_key.hex() in res.output
    addr = f"{enclave.address[0]}:{enclave.address[1]}"
    ok(r.invoke(app, ["tee", "policy", "--measurement", enclave.measurement, "--address", addr, "--backend",
                      "simulated", "--sim-dir", str(platform.folder), "--out", str(tmp_path / "policy.json")]))
    g = datasets.load("breast", "hetero", "guest")
    g.to_csv(tmp_path / "bank.csv")
    common = ["--owner", "bank", "--keys", str(tmp_path / "bank.keys"), "--krs", str(tmp_path / "krs"),
              "--label", "y", "--chunk-rows", "100"]
    res = r.invoke(app, ["tee", "encrypt", str(tmp_path / "bank.csv"), "--to", str(tmp_path / "policy.json"),
                         "--out", str(tmp_path / "bank.atd"), "--upload", str(tmp_path / "store"), *common])
    ok(res)
    assert "SIMULATED" in res.output and "569 rows x 10 columns" in res.output
    assert (tmp_path / "store" / "bank.atd").read_bytes() == (tmp_path / "bank.atd").read_bytes()
    key_id = res.output.split("key id: ")[1].split()[0]
    # a policy naming another measurement: the tool refuses to encrypt
    ok(r.invoke(app, ["tee", "policy", "--measurement", "ab" * 32, "--address", addr, "--backend", "simulated",
                      "--sim-dir", str(platform.folder), "--out", str(tmp_path / "other.json")]))
    res = r.invoke(app, ["tee", "encrypt", str(tmp_path / "bank.csv"), "--to", str(tmp_path / "other.json"),
                         "--out", str(tmp_path / "no.atd"), *common])
    assert res.exit_code == 1 and "allow-list" in res.output and not (tmp_path / "no.atd").exists()
    res = r.invoke(app, ["tee", "authorise", "--keys", str(tmp_path / "bank.keys"), "--krs", str(tmp_path / "krs"),
                         "--key-id", key_id, "--job", "j1", "--measurement", enclave.measurement, "--recipient",
                         str(tmp_path / "bank.pub.json"), "--backend", "simulated", "--out", str(tmp_path / "auth.json")])
    ok(res)
    auth_id = res.output.split()[1]
    ok(r.invoke(app, ["tee", "revoke", "--keys", str(tmp_path / "bank.keys"), "--krs", str(tmp_path / "krs"), auth_id]))
    assert auth_id in json.loads(bytes.fromhex(json.loads((tmp_path / "krs" / "revoked.json").read_text())["body"]))["revoked"]


def test_cli_verify_quote_and_gramine_manifest(tmp_path):
    pytest.importorskip("dcap_qvl")
    r = CliRunner()
    res = r.invoke(app, ["tee", "verify-quote", str(DCAP / "sgx_quote"), "--collateral",
                         str(DCAP / "sgx_quote_collateral.json"), "--at", "1751328000"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["tcb_status"] == "ConfigurationAndSWHardeningNeeded" and out["advisories"] == ["INTEL-SA-00289",
                                                                                              "INTEL-SA-00615"]
    res = r.invoke(app, ["tee", "verify-quote", str(DCAP / "sgx_quote"), "--collateral",
                         str(DCAP / "sgx_quote_collateral.json")])
    assert res.exit_code == 1 and "Expired" in res.output
    res = r.invoke(app, ["tee", "gramine-manifest", "--out", str(tmp_path / "g")])
    assert res.exit_code == 0 and (tmp_path / "g" / "python.manifest.template").exists()
