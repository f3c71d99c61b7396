"""Shamir sharing over GF(2^521-1): reconstruction from any t shares, failure below t."""

import itertools
import secrets

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
