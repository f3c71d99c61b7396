"""HE values cross parties through the real Context (threads transport): the vertical-LR gradient exchange in miniature."""

from __future__ import annotations

import numpy as np

from atoll.crypto import he
from atoll.federation import Party, launch


def _guest(ctx, residual, scheme):
    pk, sk = he.generate_keypair(scheme, key_bits=1024)
    ctx.send("host", "pk", pk)
    ctx.send("host", "enc_residual", pk.encrypt(residual))
    packed = ctx.recv("host", "grad_packed")
    packer = he.Packer(pk, value_bits=100)
    return packer.decrypt_packed(sk, packed, 3), int(sk.p)


def _host(ctx, x):
    pk = ctx.recv("guest", "pk")
    enc = ctx.recv("guest", "enc_residual")
    grad = (x.T @ enc).rerandomize()
    ctx.send("guest", "grad_packed", he.Packer(pk, value_bits=100).pack(grad))
    return grad.shape


def test_gradient_exchange_over_context_with_wire_audit(paillier_kp):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(40, 3))
    residual = rng.normal(size=40)
    seen = []
    for scheme in ("paillier", "ou"):
        out = launch({"guest": Party("guest", _guest, {"residual": residual, "scheme": scheme}),
                      "host": Party("host", _host, {"x": x})},
                     recorder=lambda s, r, a, n: seen.append((s, r, a, n)))
        assert out["host"] == (3,)
        grad, p = out["guest"]
        assert np.allclose(grad, x.T @ residual, atol=1e-5)
        secret = p.to_bytes((p.bit_length() + 7) // 8, "big")
        assert not any(secret in bytes(payload) for _, _, _, payload in seen)  # the private key never travels
    # one packed ciphertext carries the 3 gradients back
    packed_msgs = [payload for _, _, a, payload in seen if "grad_packed" in str(a)]
    assert len(packed_msgs) == 2 and all(len(m) < 4_000 for m in packed_msgs)
