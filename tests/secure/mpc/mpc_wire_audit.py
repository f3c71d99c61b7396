"""Helpers of the MPC wire audits: the arrays inside recorded payloads, and a uniformity check."""

from __future__ import annotations

import numpy as np

from atoll import wire


def arrays_in(payloads: list[bytes]) -> list[np.ndarray]:
    """Every numpy array inside the decoded payloads (dicts, lists and tuples walked)."""
    out = []
    for p in payloads:
        stack = [wire.loads(p)]
        while stack:
            v = stack.pop()
            if isinstance(v, np.ndarray):
                out.append(v)
            elif isinstance(v, dict):
                stack.extend(v.values())
            elif isinstance(v, (list, tuple)):
                stack.extend(v)
    return out


def looks_uniform(a: np.ndarray, tol: float = 0.02) -> bool:
    """Bit frequency within 0.5 +- max(tol, six standard deviations of a uniform array's bit mean)
    (arrays under 4096 bits are too small to judge). A fixed 0.02 is only 2.6 sigma at 4096 bits:
    among the ~30 arrays of one audit, uniform ones were refused by chance in some runs."""
    bits = np.unpackbits(np.ascontiguousarray(a).view(np.uint8))
    return bits.size < 4096 or abs(bits.mean() - 0.5) < max(tol, 3.0 / np.sqrt(bits.size))


def words_found(payload: bytes, words: np.ndarray) -> np.ndarray:
    """The 8-byte words of ``words`` that occur in ``payload`` at any byte offset."""
    words = np.unique(np.asarray(words, dtype=np.uint64))
    buf = np.frombuffer(payload, dtype=np.uint8)
    found = []
    for off in range(8):
        n = (buf.size - off) // 8
        if n > 0 and words.size:
            vals = buf[off:off + 8 * n].view("<u8")
            at = np.minimum(np.searchsorted(words, vals), words.size - 1)
            found.append(vals[words[at] == vals])
    return np.unique(np.concatenate(found)) if found else words[:0]
