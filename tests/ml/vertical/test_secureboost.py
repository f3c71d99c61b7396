"""SecureBoost against XGBoost (oracle) and its own plaintext mode.

Keys are 1024-bit here (tests only; the library default is 2048). Encrypted runs
use small slices where the full set would be slow, and say so.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, log_loss, mean_squared_error, roc_auc_score

from atoll import datasets, wire
from atoll.errors import ConfigError, DataError
from atoll.federation import PartyFailed
from atoll.ml.vertical import HeteroSecureBoost
from atoll.ml.vertical.boosting_binning import BinMapper, quantile_cuts
from atoll.crypto import he
from atoll.ml.vertical.boosting_cipher import plain_histogram
from atoll.ml.vertical.boosting_core import SLOT_BITS, best_splits, calc_gain, quantize, quantize_bits

xgb = pytest.importorskip("xgboost")

KEY_BITS = 1024


def load(name: str, seed: int = 0, n: int | None = None):
    g = datasets.load(name, "hetero", "guest")
    h = datasets.load(name, "hetero", "host").loc[g.index]
    y = g.pop("y").to_numpy(np.float64)
    xg, xh = g.to_numpy(np.float64), h.to_numpy(np.float64)
    perm = np.random.default_rng(seed).permutation(len(y))
    if n is not None:
        perm = perm[:n]
    cut = int(0.8 * len(perm))
    tr, te = perm[:cut], perm[cut:]
    return (xg[tr], xh[tr], y[tr]), (xg[te], xh[te], y[te])


def xgb_model(objective: str, **kw):
    common = dict(tree_method="hist", n_jobs=1, reg_lambda=kw.pop("reg_lambda", 1.0))
    if objective == "reg:squarederror":
        return xgb.XGBRegressor(**common, **kw)
    return xgb.XGBClassifier(objective=objective, **common, **kw)


def fed(model: HeteroSecureBoost, split, hosts=1):
    xg, xh, y = split
    if hosts == 1:
        return model.fit({"guest": (xg, y), "host_0": xh})
    parts = np.array_split(np.arange(xh.shape[1]), hosts)
    return model.fit({"guest": (xg, y), **{f"host_{i}": xh[:, p] for i, p in enumerate(parts)}})


def parties(split, hosts=1):
    xg, xh, _ = split
    if hosts == 1:
        return {"guest": xg, "host_0": xh}
    parts = np.array_split(np.arange(xh.shape[1]), hosts)
    return {"guest": xg, **{f"host_{i}": xh[:, p] for i, p in enumerate(parts)}}


PARAMS = dict(n_estimators=5, max_depth=3, learning_rate=0.3, max_bin=32)


# ----------------------------------------------------------------------------- pure functions

def test_quantile_cuts_match_xgboost_on_breast():
    (xg, xh, y), _ = load("breast")
    x = np.hstack([xg, xh])
    ip, vals = xgb.QuantileDMatrix(x, label=y, max_bin=32).get_quantile_cut()
    same = sum(np.allclose(quantile_cuts(x[:, j], 32), vals[ip[j] + 1:ip[j + 1] - 1]) for j in range(x.shape[1])
               if len(quantile_cuts(x[:, j], 32)) == ip[j + 1] - ip[j] - 2)
    assert same >= 27  # measured: 28 of 30 features identical on this split; the others differ in a cut or two


def test_bins_and_thresholds_agree_with_missing_values():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 3))
    x[rng.random(x.shape) < 0.1] = np.nan
    m = BinMapper.fit(x, 16)
    codes = m.transform(x)
    assert codes.max() == 16 and (codes[np.isnan(x)] == 16).all()
    for f in range(3):
        for t in range(-1, 16):
            thr = m.threshold(f, t)
            ok = ~np.isnan(x[:, f])
            assert np.array_equal(codes[ok, f] <= t, x[ok, f].astype(np.float32) < thr)


def test_best_split_equals_brute_force():
    rng = np.random.default_rng(2)
    d, nb = 4, 9
    hist = np.abs(rng.normal(size=(d, nb, 2)))
    hist[..., 0] -= 0.5
    hist[1, -1] = 0  # feature 1 without missing values
    total = hist.sum(axis=1)[0]
    hist[1:, :, :] *= (total / hist[1:].sum(axis=1))[:, None, :]  # every feature sums to the node total
    s = best_splits(hist, total, 1.0, 0.1)
    best = -np.inf
    for f in range(d):
        for t in range(nb - 1):
            for miss_left in (False, True):
                if miss_left and f == 1:
                    continue
                left = hist[f, :t + 1].sum(0) + (hist[f, -1] if miss_left else 0)
                right = total - left
                if min(left[1], right[1]) < 0.1:
                    continue
                gain = (calc_gain(left[0], left[1], 1.0, 0.1) + calc_gain(right[0], right[1], 1.0, 0.1)
                        - calc_gain(total[0], total[1], 1.0, 0.1))
                best = max(best, gain)
    assert s is not None and s.gain == pytest.approx(best, rel=1e-6)


def test_packing_round_trip_with_negative_slots_and_sums():
    """SecureBoost's row layout: the crypto Packer with signed SLOT_BITS-bit slots (1024-bit key: capacity only)."""
    rng = np.random.default_rng(3)
    bits = (quantize_bits(1000, 1.0), quantize_bits(1000, 0.25))
    qg, qh = quantize(rng.uniform(-1, 1, (1000, 2)), rng.uniform(0, 0.25, (1000, 2)), bits)
    slots = np.stack([qg[:, 0], qh[:, 0], qg[:, 1], qh[:, 1]], axis=1)
    packer = he.Packer(he.generate_keypair("ou", KEY_BITS).public_key, value_bits=SLOT_BITS, signed=True)
    packed = packer.pack_ints(slots.astype(np.int64)).tolist()
    assert all(v > 0 for v in packed)
    assert np.array_equal(packer.unpack_ints(packed, 4), slots)
    assert np.array_equal(packer.unpack_ints([sum(packed)], 4)[0], slots.sum(axis=0))
    codes = rng.integers(0, 5, (1000, 3)).astype(np.uint8)
    h = plain_histogram(slots, codes, 5)
    assert np.array_equal(h[2, 3], slots[codes[:, 2] == 3].sum(axis=0))


@pytest.mark.parametrize("jobs", [1, 2])
def test_he_histograms_from_the_crypto_kernels_equal_the_plaintext_ones(jobs, monkeypatch):
    """Guest encrypt_rows -> host rows / histograms (RowHistograms, Packer.pack, rerandomize) -> guest decode
    gives exactly plain_histogram's sums, two outputs per row plaintext, for one and two workers."""
    from atoll.ml.vertical import boosting_cipher

    monkeypatch.setattr(boosting_cipher, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(boosting_cipher, "PARALLEL_MIN_ROWS", 0)
    rng = np.random.default_rng(9)
    m, d, nb = 400, 5, 17
    bits = (quantize_bits(m, 1.0), quantize_bits(m, 0.25))
    qg, qh = quantize(rng.uniform(-1, 1, (m, 2)), rng.uniform(0, 0.25, (m, 2)), bits)
    slots = np.stack([qg[:, 0], qh[:, 0], qg[:, 1], qh[:, 1]], axis=1)
    codes = rng.integers(0, nb, (m, d)).astype(np.uint8)
    guest = boosting_cipher.make_guest_cipher("ou", KEY_BITS, jobs)
    host = boosting_cipher.make_host_cipher("ou", wire.loads(wire.dumps(guest.public())), jobs)
    payload = host.prepare(wire.loads(wire.dumps(guest.encrypt_rows(slots))))
    nodes = [np.arange(m), np.sort(rng.choice(m, 90, replace=False)), np.array([7, 8])]
    rows = host.rows(payload, codes, nb)
    try:
        hists = wire.loads(wire.dumps(host.histograms(rows, nodes, 4)))
    finally:
        rows.close()
    got = guest.decode(hists, d, nb, 4)
    for r, h in zip(nodes, got):
        assert np.array_equal(h, plain_histogram(slots[r], codes[r], nb))
    work = "parallel_histograms" if jobs > 1 else "histograms"
    assert host.stats[work] == 3 and guest.stats["parallel_encryptions"] == (jobs > 1)


# ----------------------------------------------------------------------------- vs XGBoost

def test_plain_mode_equals_xgboost_on_breast():
    train, test = load("breast")
    m = fed(HeteroSecureBoost(scheme="plain", **PARAMS), train)
    ref = xgb_model("binary:logistic", **PARAMS).fit(np.hstack(train[:2]), train[2])
    p = m.predict_proba(parties(test))[:, 1]
    q = ref.predict_proba(np.hstack(test[:2]))[:, 1]
    assert np.abs(p - q).max() < 1e-5
    assert abs(roc_auc_score(test[2], p) - roc_auc_score(test[2], q)) <= 0.001


def test_missing_values_follow_xgboost_default_directions():
    train, test = load("breast")
    rng = np.random.default_rng(5)

    def holes(split):
        xg, xh, y = (a.copy() for a in split)
        xg[rng.random(xg.shape) < 0.15] = np.nan
        xh[rng.random(xh.shape) < 0.15] = np.nan
        return xg, xh, y

    train, test = holes(train), holes(test)
    plain = fed(HeteroSecureBoost(scheme="plain", **PARAMS), train)
    ref = xgb_model("binary:logistic", **PARAMS).fit(np.hstack(train[:2]), train[2])
    p = plain.predict_proba(parties(test))[:, 1]
    assert np.abs(p - ref.predict_proba(np.hstack(test[:2]))[:, 1]).max() < 1e-5  # measured 7e-8
    kw = dict(PARAMS, n_estimators=2)
    enc = fed(HeteroSecureBoost(scheme="ou", key_bits=KEY_BITS, **kw), train)
    plain2 = fed(HeteroSecureBoost(scheme="plain", **kw), train)
    np.testing.assert_allclose(enc.predict_proba(parties(test)), plain2.predict_proba(parties(test)), atol=1e-12)


@pytest.fixture(scope="module")
def breast_ou():
    train, test = load("breast")
    enc = fed(HeteroSecureBoost(scheme="ou", key_bits=KEY_BITS, **PARAMS), train)
    return train, test, enc


def test_ou_equals_plain_and_xgboost_auc_on_breast(breast_ou):
    train, test, enc = breast_ou
    plain = fed(HeteroSecureBoost(scheme="plain", **PARAMS), train)
    pe, pp = enc.predict_proba(parties(test))[:, 1], plain.predict_proba(parties(test))[:, 1]
    np.testing.assert_allclose(pe, pp, rtol=0, atol=1e-12)
    ref = xgb_model("binary:logistic", **PARAMS).fit(np.hstack(train[:2]), train[2])
    q = ref.predict_proba(np.hstack(test[:2]))[:, 1]
    assert abs(roc_auc_score(test[2], pe) - roc_auc_score(test[2], q)) <= 0.001
    imp = enc.feature_importances_
    ref_imp = ref.feature_importances_
    assert imp.shape == (30,) and imp.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(imp, ref_imp, atol=1e-4)


def test_parallel_histograms_equal_plain(monkeypatch):
    from atoll.ml.vertical import boosting_cipher

    monkeypatch.setattr(boosting_cipher, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(boosting_cipher, "PARALLEL_MIN_ROWS", 0)
    train, test = load("breast", n=300)
    kw = dict(PARAMS, n_estimators=2)
    enc = fed(HeteroSecureBoost(scheme="ou", key_bits=KEY_BITS, n_jobs=2, **kw), train)
    plain = fed(HeteroSecureBoost(scheme="plain", **kw), train)
    np.testing.assert_allclose(enc.predict_proba(parties(test)), plain.predict_proba(parties(test)), atol=1e-12)
    # and the worker pools really did the work
    assert enc.guest_model_.stats["parallel_encryptions"] > 0
    assert enc.host_models_["host_0"].stats["parallel_histograms"] > 0


def test_paillier_equals_plain_on_breast_slice():
    train, test = load("breast", n=300)  # slice: Paillier decryption is the slow part
    kw = dict(PARAMS, n_estimators=2)
    enc = fed(HeteroSecureBoost(scheme="paillier", key_bits=KEY_BITS, **kw), train)
    plain = fed(HeteroSecureBoost(scheme="plain", **kw), train)
    np.testing.assert_allclose(enc.predict_proba(parties(test)), plain.predict_proba(parties(test)), atol=1e-12)


@pytest.mark.slow
def test_default_credit_ou_equals_plain_and_auc_within_0001_of_xgboost():
    train, test = load("default_credit")  # the full split: 24,000 training rows, 6,000 held out
    enc = fed(HeteroSecureBoost(scheme="ou", key_bits=KEY_BITS, **PARAMS), train)
    plain = fed(HeteroSecureBoost(scheme="plain", **PARAMS), train)
    pe = enc.predict_proba(parties(test))[:, 1]
    np.testing.assert_allclose(pe, plain.predict_proba(parties(test))[:, 1], rtol=0, atol=1e-12)
    ref = xgb_model("binary:logistic", **PARAMS).fit(np.hstack(train[:2]), train[2])
    auc_ref = roc_auc_score(test[2], ref.predict_proba(np.hstack(test[:2]))[:, 1])
    assert abs(roc_auc_score(test[2], pe) - auc_ref) <= 0.001


def test_multiclass_vehicle_within_one_percent_of_xgboost():
    train, test = load("vehicle_scale")
    kw = dict(PARAMS, n_estimators=4)
    enc = fed(HeteroSecureBoost(objective="multi:softprob", scheme="ou", key_bits=KEY_BITS, **kw), train)
    plain = fed(HeteroSecureBoost(objective="multi:softprob", scheme="plain", **kw), train)
    p = enc.predict_proba(parties(test))
    np.testing.assert_allclose(p, plain.predict_proba(parties(test)), atol=1e-12)
    ref = xgb_model("multi:softprob", **kw).fit(np.hstack(train[:2]), train[2])
    q = ref.predict_proba(np.hstack(test[:2]))
    labels = np.arange(4)
    assert log_loss(test[2], p, labels=labels) == pytest.approx(log_loss(test[2], q, labels=labels), rel=0.01)
    assert abs(accuracy_score(test[2], p.argmax(1)) - accuracy_score(test[2], q.argmax(1))) <= 0.01
    assert np.array_equal(enc.predict(parties(test)), p.argmax(1))


def test_regression_student_within_one_percent_of_xgboost():
    train, test = load("student")
    enc = fed(HeteroSecureBoost(objective="reg:squarederror", scheme="ou", key_bits=KEY_BITS, **PARAMS), train)
    ref = xgb_model("reg:squarederror", **PARAMS).fit(np.hstack(train[:2]), train[2])
    rmse = mean_squared_error(test[2], enc.predict(parties(test))) ** 0.5
    rmse_ref = mean_squared_error(test[2], ref.predict(np.hstack(test[:2]))) ** 0.5
    assert rmse == pytest.approx(rmse_ref, rel=0.01)


# ----------------------------------------------------------------------------- protocol properties

def test_two_hosts_equal_one_host_with_both_feature_sets():
    train, test = load("breast")
    one = fed(HeteroSecureBoost(scheme="ou", key_bits=KEY_BITS, **PARAMS), train, hosts=1)
    two = fed(HeteroSecureBoost(scheme="ou", key_bits=KEY_BITS, **PARAMS), train, hosts=2)
    np.testing.assert_allclose(two.predict_proba(parties(test, 2)), one.predict_proba(parties(test, 1)), atol=1e-12)
    np.testing.assert_allclose(two.feature_importances_, one.feature_importances_, atol=1e-12)


def _walk(value, out):
    """Collect every number and array inside a decoded wire value."""
    if isinstance(value, dict):
        for v in value.values():
            _walk(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _walk(v, out)
    elif isinstance(value, np.ndarray):
        out.append(value)
    elif isinstance(value, (float, int)) and not isinstance(value, bool):
        out.append(np.array([value]))
    elif hasattr(value, "data") and hasattr(value, "pk"):  # CipherArray: only ciphertexts
        out.append(("cipher", value))


def test_wire_audit_hosts_see_no_gradients_guest_sees_no_thresholds():
    train, test = load("breast", n=300)
    seen: list[tuple[str, str, str, bytes]] = []
    m = HeteroSecureBoost(scheme="ou", key_bits=KEY_BITS, **dict(PARAMS, n_estimators=2))
    m.fit({"guest": (train[0], train[2]), "host_0": train[1]},
          recorder=lambda s, r, a, b: seen.append((s, r, a, b)))
    m.predict_margin(parties(test), recorder=lambda s, r, a, b: seen.append((s, r, a, b)))
    host_cuts = np.concatenate(BinMapper.fit(train[1], 32).cuts)
    y = train[2]
    n_cipher = 0
    for sender, receiver, address, payload in seen:
        found: list = []
        _walk(wire.loads(payload), found)
        for item in found:
            if isinstance(item, tuple):
                n_cipher += 1
                continue
            if receiver.startswith("host") and address.endswith("/setup") and item.size == 1:
                continue  # hyperparameters (max_bin, colsample_bytree, ...)
            if receiver.startswith("host"):
                # nothing real-valued reaches a host: no gradient, hessian or label
                assert item.dtype.kind in "iub", f"host got a {item.dtype} array from {sender}"
                assert not (item.size == len(y) and np.array_equal(item.astype(np.float64), y))
            else:
                assert item.dtype.kind != "f", f"guest got real numbers from {sender}"
                vals = item.astype(np.float64).ravel()
                assert not np.isin(vals, host_cuts).any(), "a host threshold reached the guest"
    assert n_cipher > 0
    # cipher compression: each node's histogram of 20 features x 33 bins comes in ceil(660 / per) ciphertexts,
    # ``per`` bins of two 53-bit slots (g, h) packed into each plaintext
    hist_msgs = [wire.loads(b) for s, r, a, b in seen if s == "host_0" and a.endswith("/hist")]
    assert hist_msgs
    for msg in hist_msgs:
        for h in msg["hists"].values():
            per = (int(h["ct"].pk.max_int).bit_length() - 1) // (2 * 53)
            assert per >= 3 and len(h["ct"]) == -(-20 * 33 // per)


def test_subsample_colsample_and_early_stopping():
    train, test = load("breast")
    kw = dict(PARAMS, learning_rate=1.0, n_estimators=30, subsample=0.8, colsample_bytree=0.7,
              random_state=7, early_stopping_rounds=3)
    ev = {"guest": (test[0], test[2]), "host_0": test[1]}
    enc = HeteroSecureBoost(scheme="ou", key_bits=KEY_BITS, **kw).fit(
        {"guest": (train[0], train[2]), "host_0": train[1]}, eval_set=ev)
    plain = HeteroSecureBoost(scheme="plain", **kw).fit({"guest": (train[0], train[2]), "host_0": train[1]},
                                                        eval_set=ev)
    assert enc.best_iteration == plain.best_iteration and enc.best_iteration < 26  # measured: stops at 12 rounds
    assert len(enc.guest_model_.trees) == enc.best_iteration + 1
    assert len(enc.guest_model_.seconds_per_round) == enc.best_iteration + 4
    np.testing.assert_allclose(enc.predict_proba(parties(test)), plain.predict_proba(parties(test)), atol=1e-12)
    assert roc_auc_score(test[2], enc.predict_proba(parties(test))[:, 1]) > 0.95


def test_goss_encrypted_equals_plain_and_stays_accurate():
    train, test = load("breast")
    kw = dict(PARAMS, n_estimators=10, goss=True, top_rate=0.3, other_rate=0.2, random_state=3)
    enc = fed(HeteroSecureBoost(scheme="ou", key_bits=KEY_BITS, **kw), train)
    plain = fed(HeteroSecureBoost(scheme="plain", **kw), train)
    p = enc.predict_proba(parties(test))[:, 1]
    np.testing.assert_allclose(p, plain.predict_proba(parties(test))[:, 1], atol=1e-12)
    full = fed(HeteroSecureBoost(scheme="plain", **dict(PARAMS, n_estimators=10)), train)
    auc_full = roc_auc_score(test[2], full.predict_proba(parties(test))[:, 1])
    assert roc_auc_score(test[2], p) >= auc_full - 0.02  # half the rows per tree, nearly the same AUC


def test_processes_transport_with_worker_pools_matches_threads():
    """Every party a gRPC process with 2 HE worker processes of its own (party processes are not daemonic)."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=1500, n_features=25, n_informative=10, random_state=4)
    train, test = (x[:1200, :5], x[:1200, 5:], y[:1200]), (x[1200:, :5], x[1200:, 5:], y[1200:])
    kw = dict(PARAMS, n_estimators=2)
    a = fed(HeteroSecureBoost(scheme="ou", key_bits=KEY_BITS, transport="processes", n_jobs=2, **kw), train)
    b = fed(HeteroSecureBoost(scheme="plain", **kw), train)
    np.testing.assert_allclose(a.predict_proba(parties(test)), b.predict_proba(parties(test)), atol=1e-12)
    # 1,200 rows >= PARALLEL_MIN_ROWS: each round encrypted by the guest's workers; the root (1,200 rows x
    # 20 host features >= PARALLEL_MIN_WORK) built by the host's workers, the smaller nodes in-process
    assert a.guest_model_.stats["parallel_encryptions"] == 2
    host = a.host_models_["host_0"].stats
    assert host["parallel_histograms"] >= 2 and host["histograms"] > 0


def test_hyperparameters_match_xgboost_on_the_same_bins():
    """Non-default max_bin, depth, learning rate, lambda, gamma and min_child_weight: encrypted == XGBoost.

    XGBoost's own sketch picks slightly different cuts than ours at max_bin=16 on breast (see
    boosting_binning), so XGBoost is trained on our bin codes: every code is then its own XGBoost bin,
    and both models choose among the same candidate splits.
    """
    train, test = load("breast")
    kw = dict(n_estimators=6, max_depth=4, learning_rate=0.1, reg_lambda=5.0, gamma=0.3, min_child_weight=3.0,
              max_bin=16)
    enc = fed(HeteroSecureBoost(scheme="ou", key_bits=KEY_BITS, **kw), train)
    maps = [BinMapper.fit(train[i], 16) for i in (0, 1)]

    def codes(split):
        return np.hstack([maps[i].transform(split[i]) for i in (0, 1)]).astype(np.float64)

    ref = xgb_model("binary:logistic", **dict(kw, max_bin=256)).fit(codes(train), train[2])
    p = enc.predict_proba(parties(test))[:, 1]
    q = ref.predict_proba(codes(test))[:, 1]
    assert np.abs(p - q).max() < 1e-5
    # the constraints bind: a looser model grows more leaves
    loose = fed(HeteroSecureBoost(scheme="plain", **dict(kw, reg_lambda=1.0, gamma=0.0, min_child_weight=1.0)),
                train)
    n_leaves = [sum(len(t.leaves()) for t in m.guest_model_.trees) for m in (enc, loose)]
    assert n_leaves[0] < n_leaves[1]


def test_errors_are_actionable():
    train, _ = load("breast", n=100)
    with pytest.raises(ConfigError, match="scheme"):
        HeteroSecureBoost(scheme="rsa").fit({"guest": (train[0], train[2]), "host_0": train[1]})
    with pytest.raises(DataError, match="align"):
        HeteroSecureBoost(scheme="plain").fit({"guest": (train[0], train[2]), "host_0": train[1][:50]})
    with pytest.raises((DataError, PartyFailed)):
        HeteroSecureBoost(scheme="plain").fit({"guest": (train[0], train[2] + 2), "host_0": train[1]})


def test_huge_regression_targets_stay_exact_between_modes():
    train, test = load("student")
    big = (train[0], train[1], train[2] * 1e13)  # sums exceed 2**51: gradients are rounded coarser
    kw = dict(PARAMS, n_estimators=2, objective="reg:squarederror")
    enc = fed(HeteroSecureBoost(scheme="ou", key_bits=KEY_BITS, **kw), big)
    plain = fed(HeteroSecureBoost(scheme="plain", **kw), big)
    small = fed(HeteroSecureBoost(scheme="plain", **kw), train)
    pe = enc.predict(parties(test))
    np.testing.assert_allclose(pe, plain.predict(parties(test)), rtol=1e-15)
    np.testing.assert_allclose(pe / 1e13, small.predict(parties(test)), rtol=1e-9)
