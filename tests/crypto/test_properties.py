"""Property tests (hypothesis) for the kernels protocols lean on: X.T @ enc, bincount and packing, both schemes.

Integer data makes every identity exact, so the oracle is numpy's own integer arithmetic.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from atoll.crypto import he

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(data=st.data(), n=st.integers(1, 30), d=st.integers(1, 4))
def test_matvec_t_exact_on_integers(paillier_kp, ou_kp, data, n, d):
    X = data.draw(hnp.arrays(np.int64, (n, d), elements=st.integers(-2 ** 20, 2 ** 20)))
    v = data.draw(hnp.arrays(np.int64, (n,), elements=st.integers(-2 ** 30, 2 ** 30)))
    for pk, sk in (paillier_kp, ou_kp):
        enc = pk.encrypt(v)
        assert sk.decrypt_int(X.T @ enc).tolist() == (X.T @ v).tolist()
        assert sk.decrypt_int(enc @ X).tolist() == (v @ X).tolist()


@SETTINGS
@given(data=st.data(), n=st.integers(1, 25), groups=st.integers(1, 6))
def test_bincount_exact(paillier_kp, ou_kp, data, n, groups):
    v = data.draw(hnp.arrays(np.int64, (n, 2), elements=st.integers(-2 ** 40, 2 ** 40)))
    g = data.draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, groups - 1)))
    want = np.zeros((groups, 2), dtype=object)
    np.add.at(want, g, v.astype(object))
    for pk, sk in (paillier_kp, ou_kp):
        assert sk.decrypt_int(pk.encrypt(v).bincount(g, groups)).tolist() == want.tolist()


@SETTINGS
@given(data=st.data(), value_bits=st.integers(1, 48), max_terms=st.integers(1, 300))
def test_packing_sums_within_headroom(paillier_kp, ou_kp, data, value_bits, max_terms):
    for pk, sk in (paillier_kp, ou_kp):
        packer = he.Packer(pk, value_bits=value_bits, max_terms=max_terms)
        k = data.draw(st.integers(1, packer.n_slots))
        rows = data.draw(st.integers(1, min(max_terms, 6)))
        M = data.draw(hnp.arrays(np.int64, (rows, k), elements=st.integers(0, 2 ** value_bits - 1)))
        enc = packer.encrypt_ints(M)
        assert np.array_equal(packer.decrypt_ints(sk, enc, k=k), M)
        assert packer.decrypt_ints(sk, enc.sum(), k=k).tolist() == M.sum(axis=0).tolist()


@SETTINGS
@given(x=hnp.arrays(np.float64, st.integers(1, 12), elements=st.floats(-1e4, 1e4)),
       value_bits=st.integers(60, 90))
def test_homomorphic_pack_roundtrip(paillier_kp, ou_kp, x, value_bits):
    for pk, sk in (paillier_kp, ou_kp):
        enc = pk.encrypt(x)
        packer = he.Packer(pk, value_bits=value_bits, max_terms=2)
        packed = packer.pack(enc)
        assert np.allclose(packer.decrypt_packed(sk, packed, len(x)), x, rtol=0, atol=2.0 ** -39)
        assert np.allclose(packer.decrypt_packed(sk, packed + packed, len(x)), 2 * x, rtol=0, atol=2.0 ** -38)
