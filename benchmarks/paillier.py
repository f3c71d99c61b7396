"""Paillier / Okamoto-Uchiyama throughput: Atoll vs python-paillier (phe), SecretFlow HEU and raw gmpy2 bounds.

Measures, at ``--key-bits`` (2048 by default) on one core and then on all cores:
encryptions/s, decryptions/s (and values/s with packing), additions/s,
ciphertext x scalar/s, and ``X.T @ enc`` for a ``--rows`` x ``--cols`` matrix
(default 10,000 x 20) against one powmod per element. Peers: ``phe`` (if
installed), HEU Paillier and OU (``pip install --pre sf-heu``; skipped when
absent), and the raw gmpy2 bounds (textbook powmod encryption, CRT powmod
decryption, one mulmod mod n^2).

Usage: python benchmarks/paillier.py [--quick] [--jobs N] [--key-bits 2048]
The last line of stdout is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import time

import gmpy2
import numpy as np
from _common import cores, hardware, header
from gmpy2 import mpz

from atoll.crypto import he


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def timed(fn, *a, **k):
    """CPU time of this process (robust to other load on a shared machine) for the one-core figures."""
    t = time.process_time()
    out = fn(*a, **k)
    return out, time.process_time() - t


def timed_wall(fn, *a, **k):
    """Wall-clock time, for the all-cores figures (worker processes do the work)."""
    t = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t


REPEATS = 3


def best(fn, *a, _clock=timed, **k):
    """Run ``fn`` REPEATS times; return the last output and the fastest time (the machine is shared and noisy)."""
    times = []
    out = None
    for _ in range(REPEATS):
        out, t = _clock(fn, *a, **k)
        times.append(t)
    return out, min(times)


# ------------------------------------------------------------------------------- atoll
def bench_atoll(scheme: str, key_bits: int, n_enc: int, n_dec: int, n_add: int, n_mul: int,
                rows: int, cols: int, naive_sample: int, jobs_all: int, rng: np.random.Generator) -> dict:
    out: dict = {}
    (pk, sk), t_keygen = timed(he.generate_keypair, scheme, key_bits)
    out["keygen_s"] = t_keygen
    _, t_table = timed(pk.encrypt_int, [0])  # builds the fixed-base tables
    out["table_build_s"] = t_table
    x = rng.standard_normal(n_enc)
    enc, t = best(pk.encrypt, x)
    out["encrypt_per_s"] = rate(n_enc, t)
    # offline/online split: precompute randomness, then time the online part only
    _, t_off = timed(pk.precompute, n_enc)  # fresh randomness: cannot be repeated on the same pool
    enc2, t_on = timed(pk.encrypt, x)
    out["encrypt_offline_per_s"] = rate(n_enc, t_off)
    out["encrypt_online_per_s"] = rate(n_enc, t_on)
    if scheme == "ou":
        # like-for-like with HEU, whose OU uses 110-bit random exponents at 2048 bits (Atoll: 224)
        same = type(pk)(pk.n, pk.g, pk.h)
        same.r_bits = 110
        e110, t = best(same.encrypt, x)
        assert np.allclose(sk.decrypt(e110[:5]), x[:5], atol=1e-9)
        out["encrypt_110bit_r_per_s"] = rate(n_enc, t)
    sub = enc[:n_dec]
    dec, t = best(sk.decrypt, sub)
    assert np.allclose(dec, x[:n_dec], atol=1e-9)
    out["decrypt_per_s"] = rate(n_dec, t)
    # packing: as many 40-bit values (with headroom for 1024 additions) per plaintext as fit
    packer = he.Packer(pk, value_bits=40, max_terms=1024)
    M = rng.integers(0, 2 ** 40, size=(max(1, n_dec // 4), packer.n_slots))
    penc = packer.encrypt_ints(M)
    vals, t = best(packer.decrypt_ints, sk, penc)
    assert np.array_equal(vals, M)
    out["packed_slots"] = packer.n_slots
    out["decrypt_packed_values_per_s"] = rate(M.size, t)
    a = pk.encrypt(rng.standard_normal(min(n_add, n_enc)))
    reps = max(1, n_add // len(a) // REPEATS)
    tb = []
    for _ in range(REPEATS):
        t0 = time.process_time()
        for _ in range(reps):
            a + a
        tb.append(time.process_time() - t0)
    out["add_per_s"] = rate(reps * len(a), min(tb))
    m_in = enc[:n_mul]
    k = rng.standard_normal(len(m_in))
    prod, t = best(m_in.mul, k)
    out["mul_scalar_per_s"] = rate(len(m_in), t)
    assert np.allclose(sk.decrypt(prod[:20]), x[:20] * k[:20], atol=1e-5)
    # X.T @ enc
    X = rng.standard_normal((rows, cols))
    v = rng.standard_normal(rows)
    ev = pk.encrypt(v)
    res, t_mv = timed(ev.matvec_t, X)
    err = float(np.abs(sk.decrypt(res) - X.T @ v).max())
    out["matvec_s"] = t_mv
    out["matvec_max_abs_err"] = err
    # naive: one powmod per element (same fixed-point exponents, negatives via an inverse)
    N = pk.cipher_modulus
    Xi = np.rint(X * 2.0 ** pk.mul_precision_bits).astype(np.int64)
    cs = ev.data.tolist()
    count = min(naive_sample, rows * cols)
    pairs = [(i, j) for j in range(cols) for i in range(rows)][:count]
    xs = [int(Xi[i, j]) for i, j in pairs]
    bs = [cs[i] for i, _ in pairs]

    def naive():
        acc = mpz(1)
        for b, e in zip(bs, xs):
            acc = acc * gmpy2.powmod(b, e, N) % N
        return acc

    _, t_naive_sample = (best if count < rows * cols else timed)(naive)
    out["naive_matvec_s"] = t_naive_sample * (rows * cols) / count
    out["naive_measured_elements"] = count
    out["matvec_speedup_vs_naive"] = out["naive_matvec_s"] / t_mv
    # all cores
    if jobs_all > 1:
        # wall-clock, one worker vs jobs_all workers back to back (speed-up survives a shared, loaded machine)
        pk.warm_up(jobs_all)  # start the worker pool and build the tables in every worker
        _, t1 = best(pk.encrypt, x, jobs=1, _clock=timed_wall)
        _, t = best(pk.encrypt, x, jobs=jobs_all, _clock=timed_wall)
        out["all_cores_encrypt_per_s"] = rate(n_enc, t)
        out["all_cores_encrypt_speedup"] = t1 / t
        _, t1 = best(sk.decrypt, sub, jobs=1, _clock=timed_wall)
        _, t = best(sk.decrypt, sub, jobs=jobs_all, _clock=timed_wall)
        out["all_cores_decrypt_per_s"] = rate(n_dec, t)
        out["all_cores_decrypt_speedup"] = t1 / t
        ev[:64].matvec_t(X[:64, :jobs_all], jobs=jobs_all)  # warm
        _, t1 = timed_wall(ev.matvec_t, X, jobs=1)
        res2, t = timed_wall(ev.matvec_t, X, jobs=jobs_all)
        out["all_cores_matvec_s"] = t
        out["all_cores_matvec_speedup"] = t1 / t
        assert np.allclose(sk.decrypt(res2), sk.decrypt(res), atol=1e-12)
    return out


# ------------------------------------------------------------------------------- phe
def bench_phe(key_bits: int, n_enc: int, n_dec: int, n_add: int, n_mul: int, rows: int, cols: int,
              rng: np.random.Generator) -> dict | None:
    try:
        import phe
    except ImportError:
        return None
    out: dict = {}
    pk, sk = phe.generate_paillier_keypair(n_length=key_bits)
    x = rng.standard_normal(n_enc).tolist()
    enc, t = best(lambda: [pk.encrypt(v) for v in x])
    out["encrypt_per_s"] = rate(n_enc, t)
    _, t = best(lambda: [sk.decrypt(e) for e in enc[:n_dec]])
    out["decrypt_per_s"] = rate(n_dec, t)
    m = min(n_add, len(enc))
    _, t = best(lambda: [a + a for a in enc[:m]])
    out["add_per_s"] = rate(m, t)
    k = rng.standard_normal(n_mul).tolist()
    _, t = best(lambda: [e * s for e, s in zip(enc[:n_mul], k)])
    out["mul_scalar_per_s"] = rate(min(n_mul, len(enc)), t)
    # X.T @ enc the phe way (elementwise products then sums), extrapolated from the measured rates
    out["matvec_s_estimated"] = rows * cols / out["mul_scalar_per_s"] + rows * cols / out["add_per_s"]
    return out


# ------------------------------------------------------------------------------- raw gmpy2
def bench_raw(key_bits: int, n_enc: int, n_dec: int, n_add: int) -> dict:
    pk, sk = he.generate_keypair("paillier", key_bits)
    n, nsq = pk.n, pk.nsquare
    out = {}
    k = max(20, n_enc // 10)
    rs = [mpz(secrets.randbelow(int(n))) for _ in range(k)]
    _, t = best(lambda: [gmpy2.powmod(r, n, nsq) for r in rs])
    out["textbook_encrypt_powmod_per_s"] = rate(k, t)
    cs = pk.encrypt_int(list(range(n_dec))).data.tolist()
    p, q = sk.p, sk.q
    p2, q2 = p * p, q * q
    _, t = best(lambda: [(gmpy2.powmod(c % p2, p - 1, p2), gmpy2.powmod(c % q2, q - 1, q2)) for c in cs])
    out["crt_decrypt_powmod_per_s"] = rate(len(cs), t)
    a = cs * max(1, n_add // len(cs))
    b = a[1:] + a[:1]
    _, t = best(lambda: [x * y % nsq for x, y in zip(a, b)])
    out["mulmod_n2_per_s"] = rate(len(a), t)
    return out


# ------------------------------------------------------------------------------- HEU
def bench_heu(key_bits: int, n_enc: int, n_dec: int, n_add: int) -> dict | None:
    try:
        from heu import phe as hphe  # type: ignore
    except Exception:
        return None
    out: dict = {}
    for name, schema in (("paillier", hphe.SchemaType.ZPaillier), ("ou", hphe.SchemaType.OU)):
        kit = hphe.setup(schema, key_bits)
        encryptor, decryptor, evaluator = kit.encryptor(), kit.decryptor(), kit.evaluator()
        pts = [kit.plaintext(int(v) - n_enc // 2) for v in range(n_enc)]
        cts, t = best(lambda: [encryptor.encrypt(p) for p in pts])
        r = {"encrypt_per_s": rate(n_enc, t)}
        _, t = best(lambda: [decryptor.decrypt(c) for c in cts[:n_dec]])
        r["decrypt_per_s"] = rate(n_dec, t)
        m = min(n_add, len(cts))
        _, t = best(lambda: [evaluator.add(c, c) for c in cts[:m]])
        r["add_per_s"] = rate(m, t)
        k = kit.plaintext(-12345678)  # a 24-bit fixed-point multiplier, like Atoll's default
        mm = min(n_dec * 5, len(cts))
        _, t = best(lambda: [evaluator.mul(c, k) for c in cts[:mm]])
        r["mul_scalar_per_s"] = rate(mm, t)
        out[name] = r
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer operations (about a minute)")
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--cols", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=cores(), help="workers for the all-cores run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-peers", action="store_true", help="skip phe and HEU")
    args = ap.parse_args()
    q = args.quick
    n_enc, n_dec, n_add, n_mul = (1000, 200, 50_000, 1000) if q else (5000, 1000, 200_000, 5000)
    naive_sample = 4000 if q else args.rows * args.cols
    rng = np.random.default_rng(args.seed)

    print(header("Paillier / OU throughput"))
    print(f"gmpy2 {gmpy2.version()}; one-core rates: best of {REPEATS} runs in process CPU time; all-cores: wall time; "
          "the machine may be shared with other work (see the load average)")
    print(f"seed {args.seed}; key {args.key_bits} bits; X.T @ enc with X {args.rows} x {args.cols}; "
          f"{n_enc} encryptions, {n_dec} decryptions, {n_add} additions, {n_mul} ct*scalar; "
          f"all-cores run with {args.jobs} workers; quick={q}")
    results: dict = {"key_bits": args.key_bits, "rows": args.rows, "cols": args.cols, "jobs": args.jobs,
                     "seed": args.seed, "quick": q, "hardware": hardware(), "gmpy2": gmpy2.version()}
    for scheme in ("paillier", "ou"):
        results[f"atoll_{scheme}"] = bench_atoll(scheme, args.key_bits, n_enc, n_dec, n_add, n_mul,
                                                 args.rows, args.cols, naive_sample, args.jobs, rng)
    results["raw_gmpy2"] = bench_raw(args.key_bits, n_enc, n_dec, n_add)
    if not args.no_peers:
        pn = max(50, n_enc // 20)
        results["phe"] = bench_phe(args.key_bits, pn, max(20, n_dec // 10), n_add // 10, pn,
                                   args.rows, args.cols, rng)
        results["heu"] = bench_heu(args.key_bits, n_enc, n_dec, n_add)

    # ---- report
    ap_, ao, raw, ph, heu = (results["atoll_paillier"], results["atoll_ou"], results["raw_gmpy2"],
                             results.get("phe"), results.get("heu"))

    def f(v):
        return "-" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:,.2f}")

    rows_ = [
        ("encrypt/s (1 core)", ap_["encrypt_per_s"], ao["encrypt_per_s"], ph and ph["encrypt_per_s"],
         heu and heu["paillier"]["encrypt_per_s"], heu and heu["ou"]["encrypt_per_s"],
         raw["textbook_encrypt_powmod_per_s"]),
        ("encrypt/s, HEU's 110-bit r (1 core)", None, ao.get("encrypt_110bit_r_per_s"), None, None, None, None),
        ("encrypt online/s (pool)", ap_["encrypt_online_per_s"], ao["encrypt_online_per_s"], None, None, None, None),
        ("decrypt/s (1 core)", ap_["decrypt_per_s"], ao["decrypt_per_s"], ph and ph["decrypt_per_s"],
         heu and heu["paillier"]["decrypt_per_s"], heu and heu["ou"]["decrypt_per_s"],
         raw["crt_decrypt_powmod_per_s"]),
        ("packed values decrypted/s", ap_["decrypt_packed_values_per_s"], ao["decrypt_packed_values_per_s"],
         None, None, None, None),
        ("add/s (1 core)", ap_["add_per_s"], ao["add_per_s"], ph and ph["add_per_s"],
         heu and heu["paillier"]["add_per_s"], heu and heu["ou"]["add_per_s"], raw["mulmod_n2_per_s"]),
        ("ct*scalar/s (1 core)", ap_["mul_scalar_per_s"], ao["mul_scalar_per_s"], ph and ph["mul_scalar_per_s"],
         heu and heu["paillier"]["mul_scalar_per_s"], heu and heu["ou"]["mul_scalar_per_s"], None),
        (f"X.T@enc {args.rows}x{args.cols} s (1 core)", ap_["matvec_s"], ao["matvec_s"],
         ph and ph["matvec_s_estimated"], None, None, None),
        ("  one powmod per element, s", ap_["naive_matvec_s"], ao["naive_matvec_s"], None, None, None, None),
    ]
    if args.jobs > 1:
        rows_ += [
            (f"encrypt/s ({args.jobs} workers)", ap_.get("all_cores_encrypt_per_s"), ao.get("all_cores_encrypt_per_s"),
             None, None, None, None),
            (f"decrypt/s ({args.jobs} workers)", ap_.get("all_cores_decrypt_per_s"), ao.get("all_cores_decrypt_per_s"),
             None, None, None, None),
            (f"X.T@enc s ({args.jobs} workers)", ap_.get("all_cores_matvec_s"), ao.get("all_cores_matvec_s"),
             None, None, None, None),
            ("  wall speed-up encrypt", ap_.get("all_cores_encrypt_speedup"), ao.get("all_cores_encrypt_speedup"),
             None, None, None, None),
            ("  wall speed-up decrypt", ap_.get("all_cores_decrypt_speedup"), ao.get("all_cores_decrypt_speedup"),
             None, None, None, None),
            ("  wall speed-up X.T@enc", ap_.get("all_cores_matvec_speedup"), ao.get("all_cores_matvec_speedup"),
             None, None, None, None),
        ]
    head = f"{'':38s}{'Atoll Paillier':>16s}{'Atoll OU':>12s}{'phe':>10s}{'HEU Paillier':>14s}{'HEU OU':>10s}{'raw gmpy2':>11s}"
    print(head)
    for name, *vals in rows_:
        print(f"{name:38s}{f(vals[0]):>16s}{f(vals[1]):>12s}{f(vals[2]):>10s}{f(vals[3]):>14s}{f(vals[4]):>10s}{f(vals[5]):>11s}")
    ratios = {
        "paillier_encrypt_vs_phe": ph and ap_["encrypt_per_s"] / ph["encrypt_per_s"],
        "paillier_decrypt_vs_phe": ph and ap_["decrypt_per_s"] / ph["decrypt_per_s"],
        "paillier_add_vs_phe": ph and ap_["add_per_s"] / ph["add_per_s"],
        "paillier_encrypt_vs_heu": heu and ap_["encrypt_per_s"] / heu["paillier"]["encrypt_per_s"],
        "paillier_decrypt_vs_heu": heu and ap_["decrypt_per_s"] / heu["paillier"]["decrypt_per_s"],
        "ou_encrypt_vs_heu": heu and ao["encrypt_per_s"] / heu["ou"]["encrypt_per_s"],
        "ou_encrypt_110bit_r_vs_heu": heu and ao["encrypt_110bit_r_per_s"] / heu["ou"]["encrypt_per_s"],
        "ou_decrypt_vs_heu": heu and ao["decrypt_per_s"] / heu["ou"]["decrypt_per_s"],
        "ou_add_vs_heu": heu and ao["add_per_s"] / heu["ou"]["add_per_s"],
        "paillier_encrypt_vs_textbook_powmod": ap_["encrypt_per_s"] / raw["textbook_encrypt_powmod_per_s"],
        "paillier_decrypt_vs_raw_crt": ap_["decrypt_per_s"] / raw["crt_decrypt_powmod_per_s"],
        "paillier_add_vs_raw_mulmod": ap_["add_per_s"] / raw["mulmod_n2_per_s"],
        "paillier_matvec_vs_naive": ap_["matvec_speedup_vs_naive"],
        "ou_matvec_vs_naive": ao["matvec_speedup_vs_naive"],
        "paillier_matvec_vs_phe": ph and ph["matvec_s_estimated"] / ap_["matvec_s"],
    }
    results["ratios"] = ratios
    print("ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items() if v is not None))
    if results.get("heu") is None and not args.no_peers:
        print("HEU not installed (pip install --pre sf-heu): its columns are skipped")
    if not q or args.rows * args.cols <= naive_sample:
        pass
    else:
        print(f"note: the one-powmod-per-element baseline is timed on {naive_sample} elements and scaled "
              f"linearly to {args.rows * args.cols}; phe's X.T@enc is estimated from its measured ct*scalar and add rates")
    results["load_avg_end"] = os.getloadavg()[0]
    print(f"load average at end {results['load_avg_end']:.2f}")
    print(json.dumps(results, default=float))


if __name__ == "__main__":
    main()
