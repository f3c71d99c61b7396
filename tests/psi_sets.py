"""Shared by the PSI tests (this folder is on ``sys.path``): id sets with a known overlap, a PSI launch."""

import random

from atoll.federation import Party, launch
from atoll.secure.psi import psi


def run(guest_ids, *host_ids, recorder=None, **kw):
    """Launch a guest and hosts in threads, each calling ``psi(ctx, ids, **kw)``; ``{party: result}``."""
    parties = {"guest": Party("guest", psi, {"ids": guest_ids, **kw})}
    for i, ids in enumerate(host_ids):
        parties[f"host_{i}"] = Party("host", psi, {"ids": ids, **kw})
    return launch(parties, recorder=recorder)


def id_sets(n_guest, n_host, overlap, seed):
    """Distinct string ids with ``overlap`` of the smaller set shared."""
    rng = random.Random(seed)
    pool = rng.sample(range(10**9), n_guest + n_host)
    shared = int(overlap * min(n_guest, n_host))
    g = [f"user-{v}@example.com" for v in pool[:n_guest]]
    h = g[:shared] + [f"user-{v}@example.com" for v in pool[n_guest:n_guest + n_host - shared]]
    rng.shuffle(g)
    rng.shuffle(h)
    return g, h
