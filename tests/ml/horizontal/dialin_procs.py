"""Client processes of the dial-in tests (module-level, so a forkserver child can run them)."""

from __future__ import annotations

import os

import numpy as np


class _CrashAt:
    """A model whose ``n``-th local training kills its process (a client that vanishes mid-round)."""

    def __init__(self, model, n):
        self.model, self.n, self.fits = model, n, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def fit(self, x, y, config, rng):
        self.fits += 1
        if self.fits == self.n:
            os._exit(17)  # no goodbye, no flush: the connection just drops
        return self.model.fit(x, y, config, rng)


def client(address: str, name: str, data, out, certdir: str | None = None, token: str | None = None,
           crash_at_fit: int | None = None) -> None:
    from atoll.federation.certs import TlsConfig
    from atoll.hfl import HflClient

    def model_fn(spec):
        m = spec.build()
        return m if crash_at_fit is None else _CrashAt(m, crash_at_fit)

    try:
        if token is not None:
            with open(os.path.join(certdir, "ca.pem"), "rb") as f:
                ca = f.read()
            c = HflClient(address, data, token=token, ca_cert=ca, model_fn=model_fn)
        else:
            c = HflClient(address, data, tls=TlsConfig.load(certdir, name), model_fn=model_fn)
        r = c.run()
        flat = None if r.weights is None else np.concatenate([np.ravel(w) for w in r.weights])
        out.put((name, "ok", r.sessions, r.rounds_trained, r.ended, flat))
    except BaseException as e:  # noqa: BLE001 - reported to the test
        out.put((name, "err", 0, 0, f"{type(e).__name__}: {e}", None))
