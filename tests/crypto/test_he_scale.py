"""Full-size keys (3072 bits) and worker pools inside real party processes (gRPC + mutual TLS)."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest

from atoll import wire
from atoll.crypto import engine, he
from atoll.federation import Party, launch


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["paillier", "ou"])
def test_3072_bit_keys(scheme):
    pk, sk = he.generate_keypair(scheme, key_bits=3072)
    assert pk.key_bits == 3072 and pk.r_bits == (512 if scheme == "paillier" else 256)
    if scheme == "paillier":
        assert sk.p.bit_length() == sk.q.bit_length() == 1536
    else:
        assert sk.p.bit_length() == 1024 and pk.n == sk.p ** 2 * sk.q
    rng = np.random.default_rng(0)
    X, v = rng.normal(size=(40, 3)), rng.normal(size=40)
    enc = wire.loads(wire.dumps(pk.encrypt(v)))
    assert np.allclose(sk.decrypt(enc), v, rtol=0, atol=1e-11)
    assert np.allclose(sk.decrypt(X.T @ enc), X.T @ v, rtol=0, atol=1e-5)
    big = [2 ** 300 + 1, -(2 ** 300)]  # (the signed range's edges are tested at 1024 bits: the OU tables for
    assert sk.decrypt_int(pk.encrypt_int(big)).tolist() == big  # 1000-bit plaintexts take seconds to build)


def _key_holder(ctx, v, scheme):
    pk, sk = he.generate_keypair(scheme, key_bits=1024)
    ctx.send("host", "pk", pk)
    ctx.send("host", "enc", pk.encrypt(v, jobs=2))
    res = ctx.recv("host", "res")
    return sk.decrypt(res, jobs=2), _pool_workers()


def _evaluator(ctx, x):
    pk = ctx.recv("guest", "pk")
    pk.warm_up(2)
    enc = ctx.recv("guest", "enc")
    ctx.send("guest", "res", enc.matvec_t(x, jobs=2).rerandomize(jobs=2))
    return _pool_workers()


def _pool_workers() -> tuple[bool, int]:
    """(this process is daemonic, live worker processes in its HE engine of 2)."""
    eng = engine._ENGINES.get(2)
    return multiprocessing.current_process().daemon, len(eng.pids()) if eng is not None else 0


def test_worker_pools_inside_party_processes():
    """Parties of launch(mode="processes") are not daemonic, so jobs=2 really starts worker processes there;
    ciphertexts and keys cross gRPC with no import workaround at the receiver."""
    rng = np.random.default_rng(1)
    x, v = rng.normal(size=(300, 4)), rng.normal(size=300)
    out = launch({"guest": Party("guest", _key_holder, {"v": v, "scheme": "ou"}),
                  "host": Party("host", _evaluator, {"x": x})}, mode="processes", timeout=120)
    got, (g_daemon, g_workers) = out["guest"]
    h_daemon, h_workers = out["host"]
    assert np.allclose(got, x.T @ v, rtol=0, atol=1e-4)
    assert not g_daemon and not h_daemon
    assert g_workers == 2 and h_workers == 2
