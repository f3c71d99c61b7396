"""The Data Lab flow end to end with a simulated enclave process (SIMULATED: NO HARDWARE PROTECTION).

Bank and shop encrypt their halves of default_credit to the attested enclave; the enclave joins
them by id and trains XGBoost; the model equals XGBoost trained on the plaintext join (same
parameters and seed): identical model dump and predictions. Around it: another measurement gets no
key and the encrypt tool refuses it, replays are refused, revoking stops the next run, and neither
the files nor what the host relays contain a raw value.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from atoll import datasets
from atoll.tee import datalab
from atoll.tee.base import SIMULATED_MARK, AttestationError, KeyReleaseRefused, PolicyError, TeeError
from atoll.tee.channel import Framed
from atoll.tee.keyrelease import KeyReleaseService
from atoll.tee.simulated import SimulatedBackend, SimulatedRuntime
from atoll.tee.training import DatasetRef, JobRequest, TeeTrainParams, predict_payload
from helpers_tee import changed_source

PARAMS = TeeTrainParams(n_estimators=8, max_depth=4, learning_rate=0.3, max_bin=64, n_jobs=2)


@pytest.fixture(scope="module")
def halves():
    """The bank's labelled half (all rows) and the shop's half (90 % of the ids, shuffled)."""
    g = datasets.load("default_credit", "hetero", "guest")
    h = datasets.load("default_credit", "hetero", "host")
    h = h.sample(frac=0.9, random_state=3)
    return g, h


@pytest.fixture
def owners(tmp_path, keys, platform):
    pin = [platform.public_key.hex()]
    return {"bank": KeyReleaseService(tmp_path / "krs-bank", keys["bank"], pin),
            "shop": KeyReleaseService(tmp_path / "krs-shop", keys["shop"], pin)}


def encrypt(tmp_path, halves, owners, target, chunk_rows=4096):
    g, h = halves
    gx = g.drop(columns="y")
    hb = datalab.encrypt_table(g.index.to_numpy(), gx.to_numpy(), g["y"].to_numpy(np.float64), list(gx.columns),
                               "y", tmp_path / "bank.atd", "bank", "credit_bank", target, owners["bank"], chunk_rows)
    hs = datalab.encrypt_table(h.index.to_numpy(), h.to_numpy(), None, list(h.columns), None, tmp_path / "shop.atd",
                               "shop", "credit_shop", target, owners["shop"], chunk_rows)
    return hb, hs


def request(tmp_path, owners, headers, measurement, keys, job="credit-1", params=PARAMS, recipients=("bank",),
            backends=("simulated",), locations=None):
    allowed = {n: keys[n].public().box_key for n in ("bank", "auditor")}
    refs = []
    for owner, header, loc in zip(("bank", "shop"), headers, locations or (tmp_path / "bank.atd", tmp_path / "shop.atd")):
        auth = owners[owner].authorise(header["key_id"], header["dataset"], job, [measurement], allowed,
                                       backends=list(backends))
        refs.append(DatasetRef(location=str(loc), authorisation={"body": auth.body.hex(),
                                                                 "signature": auth.signature.hex()}))
    return JobRequest(job=job, seed=7, params=params, datasets=refs, recipients=list(recipients))


def plaintext_join(halves):
    g, h = halves
    j = g.join(h.add_suffix("_shop"), how="inner")
    return j.drop(columns="y").to_numpy(np.float64), j["y"].to_numpy(np.float64)


def test_pooled_xgboost_equals_xgboost_on_the_plaintext_join(tmp_path, halves, owners, keys, enclave, policy):
    target, attested = datalab.attest_enclave(enclave.address, policy)
    assert attested.simulated and attested.measurement == enclave.measurement
    headers = encrypt(tmp_path, halves, owners, target)
    req = request(tmp_path, owners, headers, enclave.measurement, keys)
    with enclave.connect(policy) as chan:
        result = datalab.run_job(chan, req, [owners["bank"], owners["shop"]])
    rep = result["report"]
    x, y = plaintext_join(halves)
    assert rep["rows_joined"] == len(y) == 27000 and rep["features"] == 23 and rep["streamed"]
    assert rep["backend"] == "simulated" and rep["mark"] == SIMULATED_MARK and rep["peak_rss_mb"] > 0
    assert sorted(result["to"]) == ["bank"]                              # the shop and the host get no model
    model = datalab.open_result(result, keys["bank"], req.job)
    twin = PARAMS.estimator(7).fit(x, y)                                  # XGBClassifier, same params and seed
    assert bytes(model["model"]) == bytes(twin.get_booster().save_raw("json"))
    from atoll.tee.training import load_model

    assert load_model(model).get_dump() == twin.get_booster().get_dump()
    rng = np.random.default_rng(0)
    new = x[rng.choice(len(x), 500, replace=False)] + rng.normal(0, 0.01, (500, x.shape[1]))  # unseen rows
    assert np.array_equal(predict_payload(model, new), twin.predict_proba(new)[:, 1])
    with pytest.raises(TeeError, match="no result"):
        datalab.open_result(result, keys["shop"], req.job)


def test_logistic_regression_and_no_cap_give_the_same_model(tmp_path, owners, keys, enclave, policy):
    g = datasets.load("breast", "hetero", "guest")
    h = datasets.load("breast", "hetero", "host").iloc[::-1]
    target, _ = datalab.attest_enclave(enclave.address, policy)
    headers = encrypt(tmp_path, (g, h), owners, target, chunk_rows=64)
    x, y = plaintext_join((g, h))
    twin = TeeTrainParams(algorithm="logistic_regression", max_iter=500).estimator(7).fit(x, y)
    for cap in (64.0, None):
        p = TeeTrainParams(algorithm="logistic_regression", max_iter=500, memory_cap_mb=cap)
        req = request(tmp_path, owners, headers, enclave.measurement, keys, job=f"lr-{cap}", params=p)
        with enclave.connect(policy) as chan:
            result = datalab.run_job(chan, req, [owners["bank"], owners["shop"]])
        m = datalab.open_result(result, keys["bank"], req.job)
        np.testing.assert_allclose(m["model"]["coef"], twin.coef_, rtol=0, atol=1e-12)
        np.testing.assert_allclose(predict_payload(m, x), twin.predict_proba(x)[:, 1], rtol=0, atol=1e-12)
        assert result["report"]["streamed"] == (cap is not None)


def test_memory_cap_is_enforced_before_any_decryption(tmp_path, halves, owners, keys, enclave, policy):
    target, _ = datalab.attest_enclave(enclave.address, policy)
    headers = encrypt(tmp_path, halves, owners, target)
    req = request(tmp_path, owners, headers, enclave.measurement, keys,
                  params=PARAMS.model_copy(update={"memory_cap_mb": 2.0}))
    with enclave.connect(policy) as chan, pytest.raises(TeeError, match="EnclaveMemoryError.*memory cap of 2 MB"):
        datalab.run_job(chan, req, [owners["bank"], owners["shop"]])


def test_another_measurement_gets_no_key_and_the_encrypt_tool_refuses_it(tmp_path, halves, owners, keys, platform,
                                                                         enclave, policy):
    other = SimulatedBackend().launch("tee-ml", workdir=tmp_path / "other", platform_dir=platform.folder,
                                      root=changed_source(tmp_path / "src"))
    try:
        assert other.measurement != enclave.measurement
        with pytest.raises(PolicyError, match="allow-list"):              # atoll tee encrypt refuses it
            datalab.attest_enclave(other.address, policy.model_copy(update={"address": None}))
        # the genuine enclave's data: the modified one cannot even ask for its key ...
        target, _ = datalab.attest_enclave(enclave.address, policy)
        headers = encrypt(tmp_path, halves, owners, target)
        req = request(tmp_path, owners, headers, enclave.measurement, keys)
        other_policy = platform.policy([other.measurement])
        with other.connect(other_policy) as chan, pytest.raises(TeeError, match="measurement"):
            datalab.run_job(chan, req, [owners["bank"], owners["shop"]])
        # ... and the owner's key-release service refuses it even when asked directly
        rt = SimulatedRuntime(other.measurement, platform)
        from atoll.tee.envelope import x25519_keypair
        from atoll.tee.keyrelease import key_request_report_data, request_digest

        body = req.as_json()
        nonce, (_, run_pub) = owners["bank"].challenge(), x25519_keypair()
        ev = rt.evidence(key_request_report_data(run_pub, nonce, request_digest(body), headers[0]["key_id"]))
        msg = {"request": json.dumps(body), "key_id": headers[0]["key_id"], "run_public": run_pub, "nonce": nonce,
               "evidence": ev.to_wire()}
        with pytest.raises(KeyReleaseRefused, match="allow-list"):
            owners["bank"].release(msg)
        with pytest.raises(KeyReleaseRefused, match="used or expired"):  # and the challenge is spent
            owners["bank"].release(msg)
    finally:
        other.stop()


def test_replayed_or_stale_attestations_are_refused(tmp_path, halves, owners, keys, enclave, policy):
    with enclave.connect(policy) as chan:
        nonce = os.urandom(32)
        answer = chan.call({"op": "attest", "nonce": nonce})
    datalab.check_wrap_key(answer, nonce, policy)
    with pytest.raises(AttestationError, match="replayed or stale"):     # the same answer to a new challenge
        datalab.check_wrap_key(answer, os.urandom(32), policy)
    import time

    with pytest.raises(AttestationError, match="older than"):
        datalab.check_wrap_key(answer, nonce, policy, now=time.time() + 3600)
    # a key-release answer replayed into a second run is refused: each run draws fresh challenges
    target, _ = datalab.attest_enclave(enclave.address, policy)
    headers = encrypt(tmp_path, halves, owners, target)
    req = request(tmp_path, owners, headers, enclave.measurement, keys)

    class Replaying:
        def __init__(self, krs):
            self.krs, self.first = krs, None

        def challenge(self):
            if self.first is None:
                self.first = self.krs.challenge()
            return self.first

        def release(self, m):
            return self.krs.release(m)

    relays = [Replaying(owners["bank"]), Replaying(owners["shop"])]
    with enclave.connect(policy) as chan:
        datalab.run_job(chan, req, relays)
    with enclave.connect(policy) as chan, pytest.raises(KeyReleaseRefused, match="replayed or stale"):
        datalab.run_job(chan, req, relays)


def test_revoking_stops_the_next_training_run(tmp_path, halves, owners, keys, enclave, policy):
    target, _ = datalab.attest_enclave(enclave.address, policy)
    headers = encrypt(tmp_path, halves, owners, target)
    req = request(tmp_path, owners, headers, enclave.measurement, keys)
    with enclave.connect(policy) as chan:
        datalab.run_job(chan, req, [owners["bank"], owners["shop"]])    # allowed
    shop_auth = json.loads(bytes.fromhex(req.datasets[1].authorisation["body"]))["id"]
    owners["shop"].revoke(shop_auth)
    with enclave.connect(policy) as chan, pytest.raises(KeyReleaseRefused, match="revoked"):
        datalab.run_job(chan, req, [owners["bank"], owners["shop"]])
    # the revocation is persisted: a restarted service refuses too
    again = KeyReleaseService(owners["shop"].folder, keys["shop"], owners["shop"].simulated_platform_keys)
    with enclave.connect(policy) as chan, pytest.raises(KeyReleaseRefused, match="revoked"):
        datalab.run_job(chan, req, [owners["bank"], again])


def test_authorisation_limits_job_recipients_and_backend(tmp_path, halves, owners, keys, enclave, policy):
    target, _ = datalab.attest_enclave(enclave.address, policy)
    headers = encrypt(tmp_path, halves, owners, target)
    cases = [(dict(recipients=("bank", "shop")), "does not allow"),             # the shop is no allowed recipient
             (dict(backends=("sgx-dcap",)), "accepts only")]                 # the owner wants real SGX
    for kw, why in cases:
        req = request(tmp_path, owners, headers, enclave.measurement, keys, **kw)
        with enclave.connect(policy) as chan, pytest.raises((TeeError, KeyReleaseRefused), match=why):
            datalab.run_job(chan, req, [owners["bank"], owners["shop"]])
    req = request(tmp_path, owners, headers, enclave.measurement, keys)
    req2 = req.model_copy(update={"job": "another-job"})                     # authorised for credit-1 only
    with enclave.connect(policy) as chan, pytest.raises(TeeError, match="another job"):
        datalab.run_job(chan, req2, [owners["bank"], owners["shop"]])


def test_wire_and_disk_audit_no_raw_value(tmp_path, owners, keys, enclave, policy, monkeypatch):
    """Everything the host relays (the channel's frames before TLS, the key-release messages) and
    every file in storage holds no feature value of either party, in float64, float32 or text."""
    g = datasets.load("breast", "hetero", "guest")
    h = datasets.load("breast", "hetero", "host")
    frames: list[bytes] = []
    from atoll import wire

    real_send, real_recv = Framed.send, Framed.recv

    def send(self, obj):
        frames.append(wire.dumps(obj))
        return real_send(self, obj)

    def recv(self):
        obj = real_recv(self)
        frames.append(wire.dumps(obj))
        return obj

    monkeypatch.setattr(Framed, "send", send)
    monkeypatch.setattr(Framed, "recv", recv)
    target, _ = datalab.attest_enclave(enclave.address, policy)
    headers = encrypt(tmp_path, (g, h), owners, target, chunk_rows=50)
    req = request(tmp_path, owners, headers, enclave.measurement, keys)
    with enclave.connect(policy) as chan:
        result = datalab.run_job(chan, req, [owners["bank"], owners["shop"]])
    assert result["report"]["rows_joined"] == 569
    disk = (tmp_path / "bank.atd").read_bytes() + (tmp_path / "shop.atd").read_bytes()
    relayed = b"".join(frames)
    assert len(relayed) > 1000
    values = np.unique(np.concatenate([g.drop(columns="y").to_numpy().ravel(), h.to_numpy().ravel()]))
    values = values[np.abs(values) > 1e-6]
    rows32 = np.hstack([g.drop(columns="y").to_numpy(np.float32), h.to_numpy(np.float32)])
    pairs32 = {rows32[i, j:j + 2].tobytes() for i in range(len(rows32)) for j in range(rows32.shape[1] - 1)}
    for blob in (disk, relayed):
        w8 = {blob[i:i + 8] for i in range(len(blob) - 7)}
        assert not any(v.tobytes() in w8 for v in values)
        assert not any(pair in w8 for pair in pairs32)  # two neighbouring features as float32
        text = blob.decode("latin-1")
        assert not any(f"{v:.6f}" in text or repr(float(v)) in text for v in values[::50])
    # positive control: the recipient's decrypted model holds split thresholds the audit would see
    model = datalab.open_result(result, keys["bank"], req.job)
    assert b"split_conditions" in bytes(model["model"])
