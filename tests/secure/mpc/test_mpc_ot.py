"""Two-party OT over the in-process federation: random / chosen / correlated 1-out-of-2 (IKNP),
KKRT OPRF and 1-out-of-N, each against a direct check; several batches; a hostile peer; and a
wire audit (what each side receives is independent of the other's choices and messages)."""

from __future__ import annotations

import numpy as np
import pytest

from atoll import wire
from atoll.crypto import ot as otc
from atoll.errors import CryptoError
from atoll.federation import Party, launch
from atoll.federation.launch import PartyFailed
from atoll.secure.mpc import ot as mot
from atoll.secure.mpc.ot import OPRFReceiver, OPRFSender, OTNReceiver, OTNSender, ot_session
from mpc_wire_audit import arrays_in, looks_uniform

N = 1000


def _two(sender, receiver, recorder=None):
    out = launch({"s": Party("s", sender), "r": Party("r", receiver)}, recorder=recorder, timeout=60)
    return out["s"], out["r"]


def _choices(n=N, seed=0):
    return np.random.default_rng(seed).integers(0, 2, n).astype(np.uint8)


def test_random_chosen_and_correlated_ot():
    c = _choices()
    rng = np.random.default_rng(1)
    m0 = rng.integers(0, 2**64, (N, 3), dtype=np.uint64)
    m1 = rng.integers(0, 2**64, (N, 3), dtype=np.uint64)
    d64 = rng.integers(0, 2**64, N, dtype=np.uint64)
    d8 = rng.integers(0, 256, (N, 2), dtype=np.uint64).astype(np.uint8)

    def sender(ctx):
        s = ot_session(ctx, "r").sender
        r0, r1 = s.rot(N, words=2)
        q = s.cot(N)
        s.send(m0, m1)
        x64 = s.send_correlated(d64)
        x8 = s.send_correlated(d8)
        return r0, r1, q, s.delta, x64, x8

    def receiver(ctx):
        r = ot_session(ctx, "s").receiver
        rc, rm = r.rot(N, words=2)
        t = r.cot(c)
        got = r.recv(c, words=3)
        z64 = r.recv_correlated(c)
        z8 = r.recv_correlated(c, 2, np.uint8)
        return rc, rm, t, got, z64, z8

    (r0, r1, q, delta, x64, x8), (rc, rm, t, got, z64, z8) = _two(sender, receiver)
    # random OT: the receiver's random choice picks one of the sender's random messages
    assert 300 < rc.sum() < 700
    np.testing.assert_array_equal(rm, np.where(rc[:, None] == 1, r1, r0))
    assert not (r0 == r1).all(axis=1).any()
    # raw correlated OT: t = q ^ c * delta, with the lowest bit of delta set
    assert delta[0] & 1
    np.testing.assert_array_equal(t, q ^ (c[:, None].astype(np.uint64) * delta))
    # chosen-message OT
    np.testing.assert_array_equal(got, np.where(c[:, None] == 1, m1, m0))
    # additive correlated OT, mod 2^64 and mod 2^8
    np.testing.assert_array_equal(z64[:, 0], x64 + c.astype(np.uint64) * d64)
    assert z8.dtype == np.uint8 and x8.dtype == np.uint8
    np.testing.assert_array_equal(z8, x8 + c[:, None] * d8)


def test_large_requests_span_several_batches(monkeypatch):
    monkeypatch.setattr(mot, "MAX_BATCH", 256)  # 256 OTs per message (64 for KKRT)
    c = _choices(1000, 2)
    m0 = np.arange(1000, dtype=np.uint64)
    m1 = m0 + np.uint64(10**6)

    x = np.zeros((150, 2), np.uint64)
    x[:, 0] = np.arange(150)

    def sender(ctx):
        s = ot_session(ctx, "r").sender
        s.send(m0, m1)
        o = OPRFSender(ctx, "r")
        return s._batches, o.expand(150).eval_all(x), o._batches

    def receiver(ctx):
        return ot_session(ctx, "s").receiver.recv(c)[:, 0], OPRFReceiver(ctx, "s").query(x)

    (batches, f_s, kkrt_batches), (got, f_r) = _two(sender, receiver)
    assert batches == 4 and kkrt_batches == 3
    np.testing.assert_array_equal(got, np.where(c == 1, m1, m0))
    np.testing.assert_array_equal(f_s, f_r)


def test_kkrt_oprf_on_arbitrary_128_bit_inputs():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 2**64, (300, 2), dtype=np.uint64)
    x[:10] = 0
    x[10:20, 0] = np.arange(10)
    other = rng.integers(0, 2**64, (300, 2), dtype=np.uint64)

    def sender(ctx):
        o = OPRFSender(ctx, "r")
        b = o.expand(300)
        j = np.arange(300)
        return b.eval_all(x), b.eval(j, other), b.eval(np.zeros(300, int), x), b.eval_all(x, out_words=4), \
            o.expand(300).eval_all(x)

    def receiver(ctx):
        o = OPRFReceiver(ctx, "s")
        return o.query(x), o.query(x, out_words=2)

    (f_mine, f_other, f_j0, f4, f_second), (q1, q2) = _two(sender, receiver)
    np.testing.assert_array_equal(q1, f_mine)          # F_j(x_j) agrees
    assert not (f_other == q1).all(axis=1).any()       # another input gives another value
    assert not (f_j0[1:] == q1[1:]).all(axis=1).any()  # another instance gives another value
    assert f4.shape == (300, 4) and not (f4[:, :2] == f_mine).all(axis=1).any()
    np.testing.assert_array_equal(q2, f_second)        # a second batch works ...
    assert not (q2 == q1).all(axis=1).any()            # ... with fresh, unrelated outputs
    # equal inputs in different instances give unrelated outputs (the instance index is hashed)
    assert len({tuple(r) for r in q1[:10].tolist()}) == 10


def test_one_out_of_n_chosen_message_ot():
    rng = np.random.default_rng(4)
    n, big_n = 200, 11
    msgs = rng.integers(0, 2**64, (n, big_n, 3), dtype=np.uint64)
    c = rng.integers(0, big_n, n)

    def sender(ctx):
        OTNSender(ctx, "r").send(msgs)

    def receiver(ctx):
        return OTNReceiver(ctx, "s").recv(c, big_n, 3)

    _, got = _two(sender, receiver)
    np.testing.assert_array_equal(got, msgs[np.arange(n), c])


def test_peer_with_other_parameters_or_bad_points_is_refused():
    def honest_receiver(ctx):
        ot_session(ctx, "s").receiver.recv(_choices(10))

    def cheat_sender(ctx):  # answers the setup with identity points
        got = ctx.recv("r", "ot.s>r.setup")
        ctx.send("r", "ot.s>r.setup", {"hello": got["hello"], "B": (1).to_bytes(32, "little") * 128,
                                       "nonce": bytes(16)})

    with pytest.raises(PartyFailed) as err:
        _two(cheat_sender, honest_receiver)
    assert isinstance(err.value.error, CryptoError) and "valid edwards25519 point" in str(err.value)

    def old_version_sender(ctx):
        got = ctx.recv("r", "ot.s>r.setup")
        ctx.send("r", "ot.s>r.setup", {"hello": {**got["hello"], "version": 0},
                                       "B": got["A"] * 128, "nonce": bytes(16)})

    with pytest.raises(PartyFailed) as err:
        _two(old_version_sender, honest_receiver)
    assert "same Atoll version" in str(err.value)

    def honest_sender(ctx):
        ot_session(ctx, "r").sender.send(np.zeros(10, np.uint64), np.ones(10, np.uint64))

    def short_receiver(ctx):  # asks for fewer OTs than the sender sends
        ot_session(ctx, "s").receiver.recv(_choices(300))

    with pytest.raises(PartyFailed) as err:
        _two(honest_sender, short_receiver)
    assert isinstance(err.value.error, CryptoError) and "same transfers" in str(err.value)


# ------------------------------------------------------------------------------- wire audit
def test_wire_audit_choices_and_messages_never_cross_in_clear():
    """Structured secrets (constant messages, all-zero and alternating choices) make leaks visible:
    every array either party receives must look uniform, hold no 8-byte secret message, and be
    independent of the choice bits (each u row agrees with the choices about half of the time)."""
    n = 2048
    secret0 = np.full(n, 0x0123456789ABCDEF, np.uint64)
    secret1 = np.full(n, 0x0FEDCBA987654321, np.uint64)
    seen = []

    for choices in (np.zeros(n, np.uint8), np.arange(n, dtype=np.uint8) % 2):
        seen.clear()

        def sender(ctx):
            s = ot_session(ctx, "r").sender
            s.send(secret0, secret1)
            s.send_correlated(secret1)
            o = OPRFSender(ctx, "r")
            o.expand(n)

        def receiver(ctx, choices=choices):
            r = ot_session(ctx, "s").receiver
            got = r.recv(choices)
            r.recv_correlated(choices)
            x = np.zeros((n, 2), np.uint64)
            x[:, 0] = choices  # low-entropy OPRF inputs
            OPRFReceiver(ctx, "s").query(x)
            return got

        _, got = _two(sender, receiver, recorder=lambda s, r, a, p: seen.append((s, r, a, bytes(p))))
        np.testing.assert_array_equal(got[:, 0], np.where(choices == 1, secret1, secret0))
        to_receiver = [p for s, r, a, p in seen if r == "r"]
        to_sender = [p for s, r, a, p in seen if r == "s"]
        for p in to_receiver:
            for m in (secret0[:1], secret1[:1]):
                assert m.tobytes() not in p, "a secret message crossed in clear"
        for p in to_sender:
            assert np.packbits(choices[:512]).tobytes() not in p, "choice bits crossed in clear"
        arrays = arrays_in(to_receiver + to_sender)
        assert len(arrays) >= 4
        assert all(looks_uniform(a) for a in arrays)
        u = [wire.loads(p) for s, r, a, p in seen if a.endswith(".u") and r == "s"]
        u = [v for v in u if v.shape[0] == otc.KAPPA]  # the 1-out-of-2 batches (KKRT's have 512 rows)
        assert u
        cbits = np.packbits(np.resize(choices, u[0].shape[1] * 64), bitorder="little").view(np.uint64)
        agree = np.unpackbits((~(u[0] ^ cbits)).view(np.uint8)).reshape(otc.KAPPA, -1).mean(axis=1)
        assert np.all(np.abs(agree - 0.5) < 0.06)
    # every message decodes with the safe codec into plain types only
    kinds = {type(wire.loads(p)).__name__ for _, _, _, p in seen}
    assert kinds <= {"dict", "ndarray"}, kinds
