"""Shamir sharing over GF(2^521-1): reconstruction from any t shares, failure below t."""

import itertools
import secrets

import numpy as np
import pytest

from atoll.crypto import shamir
from atoll.errors import CryptoError


def test_any_t_shares_reconstruct():
    s = secrets.randbelow(shamir.PRIME)
    shares = shamir.split(s, n=6, t=3)
    for subset in itertools.combinations(shares, 3):
        assert shamir.combine(subset) == s
    assert shamir.combine(shares) == s  # more than t also works


def test_fewer_than_t_shares_give_garbage_or_error():
    s = secrets.randbelow(shamir.PRIME)
    shares = shamir.split(s, n=5, t=4)
    assert shamir.combine(shares[:3]) != s  # degree-3 polynomial: 3 points say nothing
    with pytest.raises(CryptoError, match="need 4 shares"):
        shamir.combine(shares[:3], t=4)


def test_bytes_roundtrip_keeps_leading_zeros_and_custom_points():
    secret = b"\x00\x00" + secrets.token_bytes(30)
    shares = shamir.split_bytes(secret, n=4, t=2, xs=[7, 11, 13, 99])
    assert shamir.combine_bytes([shares[3], shares[1]]) == secret


def test_bad_parameters_are_refused():
    with pytest.raises(CryptoError):
        shamir.split(5, n=3, t=4)
    with pytest.raises(CryptoError):
        shamir.split(5, n=2, t=2, xs=[1, 1])
    with pytest.raises(CryptoError):
        shamir.split(shamir.PRIME, n=2, t=2)
    with pytest.raises(CryptoError):
        shamir.split_bytes(b"x" * 65, n=2, t=2)
    shares = shamir.split(5, n=3, t=2)
    with pytest.raises(CryptoError, match="duplicate"):
        shamir.combine([shares[0], shares[0]])


def test_tampered_share_changes_secret():
    secret = secrets.token_bytes(32)
    shares = shamir.split_bytes(secret, n=3, t=2)
    bad = shamir.Share(shares[0].x, (shares[0].y + 1) % shamir.PRIME)
    with pytest.raises(CryptoError):
        assert shamir.combine_bytes([bad, shares[1]]) != secret
        raise CryptoError("reconstructed a different secret")


# ------------------------------------------------------------------ vectorised sharing over GF(2^31 - 1)

def test_vectorised_any_t_shares_reconstruct_each_secret():
    secrets_ = [secrets.token_bytes(32), b"\x00\x00" + secrets.token_bytes(30)]
    xs = [3, 5, 8, 13, 21, 34]
    shares = shamir.split_bytes_vec(secrets_, xs, t=3)
    assert shares.shape == (6, 2, shamir.vec_chunks(32)) and shares.max() < shamir.VEC_PRIME
    for subset in itertools.combinations(range(6), 3):
        for k, s in enumerate(secrets_):
            assert shamir.combine_bytes_vec([xs[i] for i in subset], shares[list(subset), k], 32) == s
    # more than t shares also work; fewer than t with t given raise
    assert shamir.combine_bytes_vec(xs, shares[:, 0], 32) == secrets_[0]
    with pytest.raises(CryptoError, match="need 3 shares"):
        shamir.combine_bytes_vec(xs[:2], shares[:2, 0], 32, t=3)


def test_vectorised_field_sharing_matches_lagrange_by_hand():
    # shares of one value: t - 1 = 1 random coefficient, so f(x) = v + a x; check f at two points by hand
    v = np.array([123456789], dtype=np.uint64)
    ys = shamir.split_field_vec(v, [1, 2], t=2)[:, 0]
    a = (int(ys[1]) - int(ys[0])) % shamir.VEC_PRIME
    assert (int(ys[0]) - a) % shamir.VEC_PRIME == 123456789
    assert int(shamir.combine_field_vec([1, 2], ys)) == 123456789


def test_vectorised_fewer_than_t_shares_do_not_reconstruct():
    secret = secrets.token_bytes(32)
    shares = shamir.split_bytes_vec([secret], [1, 2, 3, 4, 5], t=4)[:, 0]
    with pytest.raises(CryptoError):  # 3 points of a degree-3 polynomial: garbage, refused or wrong
        assert shamir.combine_bytes_vec([1, 2, 3], shares[:3], 32) != secret
        raise CryptoError("reconstructed a different secret")
    with pytest.raises(CryptoError):
        shamir.split_bytes_vec([secret], [1, 1, 2], t=2)
    with pytest.raises(CryptoError):
        shamir.split_bytes_vec([secret, b"short"], [1, 2], t=2)
