"""CipherArray algebra for both schemes: round trips, identities (hypothesis), X.T @ enc, scales, overflow, wire."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atoll import wire
from atoll.crypto import he
from atoll.errors import CryptoError

ATOL = 1e-9


def test_roundtrip_floats_ints_negatives_zero_extremes(kp):
    pk, sk = kp
    x = np.array([0.0, -0.0, 1.0, -1.0, 1e-9, -1e-9, 123456.789, -987654.321, 2.0 ** 60, -(2.0 ** 60)])
    assert np.allclose(sk.decrypt(pk.encrypt(x)), x, rtol=0, atol=1e-12)
    ints = np.array([0, 1, -1, 2 ** 62, -(2 ** 62)], dtype=np.int64)
    enc = pk.encrypt(ints)
    assert enc.exp == 0
    assert sk.decrypt_int(enc).tolist() == ints.tolist()
    big = [pk.max_int, -pk.max_int, 0]
    assert sk.decrypt_int(pk.encrypt_int(big)).tolist() == big
    m = np.arange(6, dtype=float).reshape(2, 3) - 2.5
    assert sk.decrypt(pk.encrypt(m)).shape == (2, 3)
    assert sk.decrypt(pk.encrypt(1.25)).shape == ()
    with pytest.raises(CryptoError):
        pk.encrypt(np.array([np.nan]))


def test_operators(kp):
    pk, sk = kp
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=6), rng.normal(size=6) * 100
    ea, eb = pk.encrypt(a), pk.encrypt(b)
    assert np.allclose(sk.decrypt(ea + eb), a + b, atol=ATOL)
    assert np.allclose(sk.decrypt(ea - eb), a - b, atol=ATOL)
    assert np.allclose(sk.decrypt(-ea), -a, atol=ATOL)
    assert np.allclose(sk.decrypt(ea + 2.5), a + 2.5, atol=ATOL)
    assert np.allclose(sk.decrypt(3 - ea), 3 - a, atol=ATOL)
    assert np.allclose(sk.decrypt(ea * b), a * b, atol=1e-4)  # b in 24-bit fixed point
    assert np.allclose(sk.decrypt(b * ea), a * b, atol=1e-4)
    assert np.allclose(sk.decrypt(ea * 3), 3 * a, atol=ATOL)
    assert np.allclose(sk.decrypt(ea * -2), -2 * a, atol=ATOL)
    assert np.allclose(sk.decrypt(ea / 4), a / 4, atol=ATOL)
    assert np.allclose(sk.decrypt(ea * 0), 0)
    assert np.allclose(sk.decrypt(ea.sum()), a.sum(), atol=ATOL)
    m = pk.encrypt(rng.normal(size=(3, 4)))
    mv = sk.decrypt(m)
    assert np.allclose(sk.decrypt(m.sum(axis=0)), mv.sum(axis=0), atol=ATOL)
    assert np.allclose(sk.decrypt(m.sum(axis=1)), mv.sum(axis=1), atol=ATOL)
    assert np.allclose(sk.decrypt(m * np.array([1.0, -2.0, 0.5, 3.0])), mv * [1, -2, 0.5, 3], atol=1e-6)
    with pytest.raises(TypeError, match="additively"):
        ea * eb
    with pytest.raises(TypeError):
        ea @ eb


def test_indexing_and_concatenation(kp):
    pk, sk = kp
    x = np.arange(10, dtype=float) - 4.5
    enc = pk.encrypt(x)
    assert len(enc) == 10 and enc.shape == (10,)
    assert np.allclose(sk.decrypt(enc[2:7:2]), x[2:7:2])
    assert np.allclose(sk.decrypt(enc[x > 0]), x[x > 0])
    idx = np.array([9, 0, 3, 3])
    assert np.allclose(sk.decrypt(enc[idx]), x[idx])
    assert sk.decrypt(enc[3]).shape == () and sk.decrypt(enc[3]) == x[3]
    both = he.concatenate([enc[:3], pk.encrypt_int([7, 8])])  # exponents 40 and 0 aligned
    assert np.allclose(sk.decrypt(both), np.r_[x[:3], 7, 8])
    st2 = he.stack([enc[:2], enc[2:4]])
    assert st2.shape == (2, 2) and np.allclose(sk.decrypt(st2), x[:4].reshape(2, 2))


def test_mixed_scales_align(kp):
    pk, sk = kp
    a = pk.encrypt(np.array([1.5, -2.0]), precision=10)
    b = pk.encrypt(np.array([0.25, 0.125]), precision=30)
    s = a + b
    assert s.exp == 30
    assert np.allclose(sk.decrypt(s), [1.75, -1.875])
    p = a * np.array([0.5, 0.5])  # exp 10 + 24
    assert p.exp == 34 and np.allclose(sk.decrypt(p + b), [1.0, -0.875])


def test_matvec_t_equals_plaintext_product(kp):
    pk, sk = kp
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 5))
    X[:, 1] = rng.integers(0, 2, size=300)  # integral column
    v = rng.normal(size=300)
    enc = pk.encrypt(v)
    got = sk.decrypt(X.T @ enc)
    assert np.allclose(got, X.T @ v, atol=300 * 2.0 ** -24 * 4)
    assert np.allclose(sk.decrypt(enc.matvec_t(X)), got, atol=1e-9)
    assert np.allclose(sk.decrypt(enc @ X), got, atol=1e-9)
    # integer matrices are exact
    Xi = rng.integers(-50, 50, size=(300, 3))
    vi = rng.integers(-1000, 1000, size=300)
    ei = pk.encrypt(vi)
    assert sk.decrypt_int(Xi.T @ ei).tolist() == (Xi.T @ vi).tolist()
    # cipher matrix (n, k): X.T @ E
    E = pk.encrypt(rng.normal(size=(300, 2)))
    Ev = sk.decrypt(E)
    assert np.allclose(sk.decrypt(X.T @ E), X.T @ Ev, atol=1e-3)
    # cipher (m, n) @ plaintext (n,)
    w = rng.normal(size=2)
    assert np.allclose(sk.decrypt(E @ w), Ev @ w, atol=1e-4)


def test_matvec_parallel_matches(paillier_kp):
    pk, sk = paillier_kp
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 4))
    v = rng.normal(size=200)
    enc = pk.encrypt(v, jobs=2)
    assert np.allclose(sk.decrypt(enc, jobs=2), v, atol=ATOL)
    assert np.allclose(sk.decrypt(enc.matvec_t(X, jobs=2)), sk.decrypt(enc.matvec_t(X)), atol=1e-12)
    k = rng.normal(size=200)
    assert np.allclose(sk.decrypt(enc.mul(k, jobs=2), jobs=2), v * k, atol=1e-6)
    assert np.allclose(sk.decrypt(enc[:3].matvec_t(X[:3, :1], jobs=2)), X[:3, 0] @ v[:3], atol=1e-6)


def test_overflow_raises(kp):
    pk, sk = kp
    big = pk.encrypt_int([pk.max_int // 2 + 1])
    with pytest.raises(CryptoError, match="safe plaintext range"):
        big + big
    with pytest.raises(CryptoError, match="safe plaintext range"):
        big * 3
    with pytest.raises(CryptoError, match="safe range"):
        pk.encrypt(np.array([1.0]), precision=pk.max_int.bit_length() + 1)
    e = pk.encrypt(np.array([1.0]))
    with pytest.raises(CryptoError):
        e.upscale(e.exp - 1)


def test_randomness_pool_is_used_once(kp):
    pk, sk = kp
    pk.precompute(5)
    assert pk.pool_size >= 5
    before = pk.pool_size
    enc = pk.encrypt_int([1, 2, 3])
    assert pk.pool_size == before - 3
    assert len(set(int(c) for c in enc.data)) == 3
    assert sk.decrypt_int(enc).tolist() == [1, 2, 3]
    rr = enc.rerandomize()
    assert all(int(a) != int(b) for a, b in zip(rr.data, enc.data))
    assert sk.decrypt_int(rr).tolist() == [1, 2, 3]
    # a copy of the key received over the wire shares the (public) tables but never the randomness pool
    copy = wire.loads(wire.dumps(pk))
    assert copy == pk and copy.pool_size == 0 and copy._pool is not pk._pool


def test_wire_roundtrip_and_refusals(kp):
    pk, sk = kp
    enc = pk.encrypt(np.array([[1.5, -2.0], [0.0, 3.0]]))
    blob = wire.dumps({"enc": enc, "pk": pk})
    back = wire.loads(blob)
    assert back["pk"] == pk and back["enc"].shape == (2, 2) and back["enc"].exp == enc.exp
    assert np.allclose(sk.decrypt(back["enc"]), [[1.5, -2.0], [0.0, 3.0]])
    assert len(blob) < enc.size * pk.cipher_bytes + 2048
    with pytest.raises(Exception):
        wire.dumps(sk)
    other_pk, _ = he.generate_keypair(pk.scheme, key_bits=1024)
    with pytest.raises(CryptoError, match="another public key"):
        sk.decrypt(other_pk.encrypt(np.array([1.0])))
    with pytest.raises(CryptoError, match="different public keys"):
        enc + other_pk.encrypt(np.array([[1.0, 1.0], [1.0, 1.0]]))


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=st.lists(finite, min_size=1, max_size=4), k=st.integers(-1000, 1000), c=finite)
def test_homomorphic_identities(paillier_kp, ou_kp, a, k, c):
    for pk, sk in (paillier_kp, ou_kp):
        x = np.array(a)
        e = pk.encrypt(x)
        tol = 1e-6 + 1e-9 * np.abs(x).max()
        assert np.allclose(sk.decrypt(e + e), 2 * x, atol=tol)
        assert np.allclose(sk.decrypt(e * k), k * x, atol=abs(k) * tol + tol)
        assert np.allclose(sk.decrypt(e - e), 0, atol=tol)
        assert np.allclose(sk.decrypt(e + c), x + c, atol=tol)
        assert np.allclose(sk.decrypt(-e + e * 2), x, atol=tol)
        assert np.isclose(float(sk.decrypt(e.sum())), x.sum(), atol=len(a) * tol)


def test_bincount_groups_rows(kp):
    pk, sk = kp
    rng = np.random.default_rng(4)
    v = rng.normal(size=(50, 2))
    groups = rng.integers(0, 6, size=50)
    groups[groups == 4] = 5  # group 4 stays empty
    enc = pk.encrypt(v)
    got = sk.decrypt(enc.bincount(groups, 7))
    want = np.zeros((7, 2))
    np.add.at(want, groups, v)
    assert got.shape == (7, 2) and np.allclose(got, want, atol=1e-9)
    # packed rows keep their packing through bincount
    packer = he.Packer(pk, value_bits=10, max_terms=64)
    M = rng.integers(0, 1024, size=(50, 3))
    s = packer.decrypt_ints(sk, packer.encrypt_ints(M).bincount(groups, 7), k=3)
    want_i = np.zeros((7, 3), dtype=np.int64)
    np.add.at(want_i, groups, M)
    assert np.array_equal(s, want_i)
    with pytest.raises(CryptoError):
        enc.bincount(groups[:10])


def test_jobs_fall_back_in_process_inside_daemonic_parties(paillier_kp, monkeypatch):
    """A daemonic process (not a launch() party any more, but e.g. a user's own) may not have children."""
    from types import SimpleNamespace

    from atoll.crypto import engine

    monkeypatch.setattr(engine.multiprocessing, "current_process", lambda: SimpleNamespace(daemon=True))
    pk, sk = paillier_kp
    x = np.linspace(-1, 1, 300)
    enc = pk.encrypt(x, jobs=2)
    assert np.allclose(sk.decrypt(enc, jobs=2), x, atol=1e-9)
    assert not engine.can_fork_workers()
