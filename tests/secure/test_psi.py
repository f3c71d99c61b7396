"""PSI: exact against Python's set intersection, multi-party, wire audit, bad input, CLI."""

from __future__ import annotations

import random
import threading
import unicodedata

import numpy as np
import pandas as pd
import pytest

from atoll import wire
from atoll.errors import ConfigError, CryptoError, DataError
from atoll.federation import Party, PartyFailed, launch
from atoll.secure import psi_group
from atoll.secure.psi import (PsiParams, align_frame, canonical_id, match_rows, normalize_ids, psi,
                              run_psi)
from psi_sets import id_sets, run


# ---------------------------------------------------------------------------- group
def _loads(name: str) -> bool:
    try:
        psi_group.get_backend(name)
        return True
    except ConfigError:  # not installed, or a CPU without AVX-512 IFMA
        return False


BACKENDS = [name for name in ("cryptography", "ipp") if _loads(name)]


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_is_commutative_and_matches_openssl(name):
    backend = psi_group.get_backend(name)
    pts = psi_group.hash_to_points([str(i).encode() for i in range(37)], b"salt")
    a, b = psi_group.new_scalar(), psi_group.new_scalar()
    ab = backend.mul(b, backend.mul(a, pts))
    assert np.array_equal(ab, backend.mul(a, backend.mul(b, pts)))
    assert np.array_equal(backend.mul(a, pts), psi_group.CryptographyBackend().mul(a, pts))
    assert len({bytes(r) for r in ab}) == 37


def test_small_order_point_is_refused():
    zero = np.zeros((1, 32), dtype=np.uint8)  # u = 0 has small order
    for name in BACKENDS:
        with pytest.raises(CryptoError, match="small order"):
            psi_group.get_backend(name).mul(psi_group.new_scalar(), zero)


# ---------------------------------------------------------------------------- pure helpers
def test_match_rows_against_dict():
    rng = np.random.default_rng(0)
    right = rng.integers(0, 256, (500, 16), dtype=np.uint8)
    left = np.concatenate([right[rng.permutation(500)[:200]], rng.integers(0, 256, (100, 16),
                                                                             dtype=np.uint8)])
    index = {bytes(r): j for j, r in enumerate(right)}
    want = [index.get(bytes(r), -1) for r in left]
    assert match_rows(left, right).tolist() == want
    # rows that share their first 8 bytes take the exact (slow) path and stay exact
    right[1, :8] = right[0, :8]
    index = {bytes(r): j for j, r in enumerate(right)}
    assert match_rows(left, right).tolist() == [index.get(bytes(r), -1) for r in left]
    assert match_rows(left[:0], right).tolist() == [] and (match_rows(left, right[:0]) == -1).all()


def test_canonical_ids():
    assert canonical_id(7) == canonical_id("7") == canonical_id(np.int64(7)) == canonical_id(7.0) == "7"
    assert canonical_id("007") == "007"                      # strings are never parsed
    assert canonical_id("  a b\t") == "a b"                  # outer whitespace only
    assert canonical_id("  a b\t", strip=False) == "  a b\t"
    assert canonical_id("\u00a0x\u3000") == "x"              # Unicode spaces count as whitespace
    assert canonical_id("e\u0301") == canonical_id("\u00e9")  # NFD and NFC agree
    assert canonical_id("e\u0301", unicode_form=None) != canonical_id("\u00e9", unicode_form=None)
    for bad in [True, None, float("nan"), 7.5, 2.0**60, b"7", "", "   ", object()]:
        with pytest.raises(DataError):
            canonical_id(bad)


def test_normalize_duplicates():
    with pytest.raises(DataError, match="duplicate"):
        normalize_ids(["a", "b", "a"])
    with pytest.raises(DataError, match="duplicate"):
        normalize_ids([7, "7"])                              # equal after normalisation
    keys, pos = normalize_ids(["b", 7, " b", "7", "c"], duplicates="drop")
    assert keys == [b"b", b"7", b"c"] and pos.tolist() == [0, 1, 4]
    with pytest.raises(DataError, match="surrogate"):
        normalize_ids(["\ud800"])


# ---------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("overlap", [0.0, 0.3, 1.0])
def test_exact_against_set_intersection(overlap):
    g, h = id_sets(1500, 1200, overlap, seed=int(overlap * 10))
    out = run(g, h, batch_size=256)
    want = sorted(set(g) & set(h))
    assert out["guest"] == want and out["host_0"] == want
    assert len(want) == int(overlap * 1200)


def test_both_backends_interoperate(monkeypatch):
    g, h = id_sets(300, 300, 0.5, seed=3)
    out = launch({"guest": Party("guest", psi, {"ids": g, "backend": BACKENDS[-1]}),
                  "host_0": Party("host", psi, {"ids": h, "backend": "cryptography"})})
    assert out["guest"] == out["host_0"] == sorted(set(g) & set(h))


def test_result_to_guest_only():
    g, h = id_sets(400, 500, 0.5, seed=4)
    out = run(g, h, result_to="guest")
    assert out["guest"] == sorted(set(g) & set(h)) and out["host_0"] is None


def test_three_parties_intersection_of_all():
    rng = random.Random(5)
    universe = [f"id{i}" for i in range(3000)]
    g, h0, h1 = (rng.sample(universe, k) for k in (1800, 1500, 2000))
    out = run(g, h0, h1, batch_size=500)
    want = sorted(set(g) & set(h0) & set(h1))
    assert len(want) > 100
    assert out["guest"] == out["host_0"] == out["host_1"] == want


def test_mismatched_settings_are_refused():
    with pytest.raises(PartyFailed) as e:
        launch({"guest": Party("guest", psi, {"ids": ["a"], "result_to": "guest"}),
                "host_0": Party("host", psi, {"ids": ["a"], "result_to": "both"})})
    assert e.value.party == "host_0" and isinstance(e.value.error, ConfigError)


# ---------------------------------------------------------------------------- wire audit
@pytest.fixture
def party_scalars(monkeypatch):
    """Each party's X25519 scalar, recorded as it is drawn (party threads are named after the party)."""
    scalars: dict[str, bytes] = {}
    real = psi_group.new_scalar

    def spy() -> bytes:
        s = real()
        scalars[threading.current_thread().name.removeprefix("atoll-party-")] = s
        return s

    monkeypatch.setattr(psi_group, "new_scalar", spy)
    return scalars


def test_wire_audit_no_clear_ids_and_shuffled(party_scalars):
    g, h = id_sets(2000, 2000, 0.5, seed=6)
    scalars = party_scalars
    sent: list[tuple[str, str, str, bytes]] = []
    out = run(g, h, batch_size=512, recorder=lambda s, r, a, p: sent.append((s, r, a, p)))
    assert out["guest"] == sorted(set(g) & set(h))
    blob = b"".join(p for *_, p in sent)
    for x in g + h:                                   # no id in the clear, in any encoding
        assert x.encode() not in blob and x.encode("utf-16-le") not in blob

    hello = wire.loads(next(p for s, _, a, p in sent if s == "guest" and a.endswith("/hello")))
    backend = psi_group.get_backend()
    for party, ids, key in (("guest", g, "a"), ("host_0", h, "b")):
        batches = sorted(((a, wire.loads(p)) for s, _, a, p in sent
                          if s == party and a.endswith("/" + key)),
                         key=lambda t: int(t[0].split("batch=")[1].split("/")[0]))
        got = np.concatenate([b for _, b in batches])
        in_order = backend.mul(scalars[party], psi_group.hash_to_points([x.encode() for x in ids],
                                                                        hello["salt"]))
        index = {bytes(r): i for i, r in enumerate(in_order)}
        perm = np.array([index[bytes(r)] for r in got])  # every sent value is a blinded own id...
        assert sorted(perm.tolist()) == list(range(len(ids)))
        assert not np.array_equal(perm, np.arange(len(ids)))  # ...but not in input order
        assert abs(np.corrcoef(perm, np.arange(len(ids)))[0, 1]) < 0.1
        unblinded = psi_group.hash_to_points([x.encode() for x in ids], hello["salt"])
        assert not any(bytes(r) in blob for r in unblinded[:50])  # nor unblinded hashes


# ---------------------------------------------------------------------------- bad input
def _cheating_host(ctx, points):
    with ctx.scope("psi"):
        ctx.recv("guest", "hello")
        ctx.send("guest", "hello", {"n": 10})
        with ctx.scope("batch", 0):
            ctx.send("guest", "b", points)
            ctx.recv("guest", "a")
            ctx.send("guest", "ab", np.zeros((50, 16), np.uint8))
        ctx.recv("guest", "result", timeout=30)


@pytest.mark.parametrize("points, what", [(np.zeros((3, 32), np.uint8), "malformed"),
                                          (np.zeros((10, 32), np.uint8), "small order")])
def test_hostile_host_values_are_refused(points, what):
    with pytest.raises(PartyFailed) as e:
        launch({"guest": Party("guest", psi, {"ids": [str(i) for i in range(50)]}),
                "host_0": Party("host", _cheating_host, {"points": points})})
    assert e.value.party == "guest" and isinstance(e.value.error, CryptoError)
    assert what in str(e.value.error)


def test_duplicates_error_or_drop():
    with pytest.raises(PartyFailed) as e:
        run(["a", "b", "a"], ["a"])
    assert e.value.party == "guest" and isinstance(e.value.error, DataError)
    out = run(["a", "b", "a", "c"], ["c", "a", "x"], duplicates="drop")
    assert out["guest"] == out["host_0"] == ["a", "c"]


def test_empty_sets_give_empty_results():
    assert run([], ["a", "b"]) == {"guest": [], "host_0": []}
    assert run(["a"], []) == {"guest": [], "host_0": []}
    assert run([], [], []) == {"guest": [], "host_0": [], "host_1": []}


def test_empty_intersection_api_vs_pipeline():
    assert run(["a", "b"], ["c", "d"]) == {"guest": [], "host_0": []}
    frames = {"guest": pd.DataFrame({"y": [0, 1]}, index=["a", "b"]),
              "host_0": pd.DataFrame({"x": [1.0, 2.0]}, index=["c", "d"])}
    with pytest.raises(PartyFailed) as e:
        launch({p: Party(p.split("_")[0], align_frame, {"frame": f}) for p, f in frames.items()})
    assert isinstance(e.value.error, DataError) and "no id in common" in str(e.value.error)


def test_int_and_str_ids_match_consistently():
    out = run([7, 8, 9, np.int64(10), 11.0], ["7", "10", "11", "12", " 8 "])
    assert out["guest"] == [10, 11.0, 7, 8]            # sorted by normalised text: "10","11","7","8"
    assert out["host_0"] == ["10", "11", "7", " 8 "]  # each party gets its own ids back
    with pytest.raises(PartyFailed) as e:
        run([7, 7.5], ["7"])                           # refused, not silently mismatched
    assert isinstance(e.value.error, DataError)


def test_unicode_ids():
    nfc = ["Zoë", "東京-42", "🙂user", "Ångström", "ß"]
    nfd = [unicodedata.normalize("NFD", x) for x in nfc]
    out = run(nfc + ["only-guest"], nfd[::-1] + ["only-host"])
    assert [canonical_id(x) for x in out["guest"]] == [canonical_id(x) for x in out["host_0"]] \
        == sorted(canonical_id(x) for x in nfc)
    assert set(out["host_0"]) == set(nfd)


def test_whitespace_ids():
    out = run(["a", " b", "c d"], ["a ", "b", "c  d", "\ta"], duplicates="drop")
    assert out["guest"] == ["a", " b"] and out["host_0"] == ["a ", "b"]  # inner space counts
    out = run(["a", " b"], ["a ", " b"], strip=False)
    assert out["guest"] == out["host_0"] == [" b"]


# ---------------------------------------------------------------------------- alignment
def test_align_frame_rows_match_across_parties():
    rng = np.random.default_rng(8)
    users = [f"u{i}" for i in range(400)]
    gi = rng.permutation(users)[:300]
    hi = rng.permutation(users)[:250]
    truth = dict(zip(users, rng.normal(size=400)))
    frames = {"guest": pd.DataFrame({"y": [truth[u] for u in gi]}, index=gi),
              "host_0": pd.DataFrame({"x": [2 * truth[u] for u in hi]}, index=hi)}
    out = launch({p: Party(p.split("_")[0], align_frame, {"frame": f}) for p, f in frames.items()})
    g, h = out["guest"], out["host_0"]
    assert list(g.index) == list(h.index) == sorted(set(gi) & set(hi))
    np.testing.assert_allclose(h["x"].to_numpy(), 2 * g["y"].to_numpy(), rtol=0, atol=0)


def test_align_frame_refuses_guest_only_result():
    frames = {"guest": pd.DataFrame({"y": [0]}, index=["a"]), "host_0": pd.DataFrame({"x": [1]}, index=["a"])}
    with pytest.raises(PartyFailed) as e:
        launch({p: Party(p.split("_")[0], align_frame, {"frame": f, "result_to": "guest"})
                for p, f in frames.items()})
    assert isinstance(e.value.error, ConfigError)


# ---------------------------------------------------------------------------- processes, CLI
def test_processes_over_grpc():
    g, h = id_sets(3000, 2000, 0.4, seed=9)
    out = launch({"guest": Party("guest", psi, {"ids": g}), "host_0": Party("host", psi, {"ids": h})},
                 mode="processes")
    assert out["guest"] == out["host_0"] == sorted(set(g) & set(h))


def test_cli_standalone(tmp_path):
    from typer.testing import CliRunner

    from atoll.cli import app

    g, h = id_sets(500, 400, 0.5, seed=10)
    pd.DataFrame({"customer": g, "v": range(500)}).to_csv(tmp_path / "g.csv", index=False)
    pd.DataFrame({"customer": h}).to_csv(tmp_path / "h.csv", index=False)
    res = CliRunner().invoke(app, ["psi", "--standalone", "--ids", str(tmp_path / "g.csv"),
                                   "--host-ids", str(tmp_path / "h.csv"), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    want = sorted(set(g) & set(h))
    for party in ("guest", "host_0"):
        assert pd.read_csv(tmp_path / "out" / f"{party}.csv")["customer"].tolist() == want
    bad = CliRunner().invoke(app, ["psi", "--role", "guest", "--ids", str(tmp_path / "g.csv"),
                                   "--out", str(tmp_path / "x.csv")])
    assert bad.exit_code != 0


def test_run_psi_reports_stats():
    g, h = id_sets(200, 200, 0.5, seed=11)
    out = launch({"guest": Party("guest", run_psi, {"ids": g, "params": PsiParams(workers=1)}),
                  "host_0": Party("host", run_psi, {"ids": h, "params": PsiParams(workers=1)})})
    res = out["guest"]
    assert res.size == 100 and res.stats["n_hosts"] == {"host_0": 200}
    assert [g[i] for i in res.positions] == res.ids


# ---------------------------------------------------------------------------- cardinality only
@pytest.mark.parametrize("overlap", [0.0, 0.3, 1.0])
def test_cardinality_only_gives_the_size_alone(overlap):
    g, h = id_sets(700, 500, overlap, seed=12)
    params = PsiParams(cardinality_only=True, batch_size=128)
    out = launch({"guest": Party("guest", run_psi, {"ids": g, "params": params}),
                  "host_0": Party("host", run_psi, {"ids": h, "params": params})})
    want = len(set(g) & set(h))
    for res in out.values():
        assert res.size == want and res.ids is None and res.positions is None
    only = PsiParams(cardinality_only=True, result_to="guest")
    out = launch({"guest": Party("guest", run_psi, {"ids": g, "params": only}),
                  "host_0": Party("host", run_psi, {"ids": h, "params": only})})
    assert out["guest"].size == want and out["host_0"].size is None


def test_cardinality_only_returns_ab_shuffled(party_scalars):
    """The host's AB list is a permutation of ``b * A`` not in the order of the guest's A: the guest
    cannot tell which of its ids matched."""
    g, h = id_sets(800, 800, 1.0, seed=13)
    scalars = party_scalars
    sent = []
    params = PsiParams(cardinality_only=True, batch_size=300)
    out = launch({"guest": Party("guest", run_psi, {"ids": g, "params": params}),
                  "host_0": Party("host", run_psi, {"ids": h, "params": params})},
                 recorder=lambda s, r, a, p: sent.append((s, a, p)))
    assert out["guest"].size == 800

    def batches(party, key):
        got = sorted(((a, wire.loads(p)) for s, a, p in sent if s == party and a.endswith("/" + key)),
                     key=lambda t: int(t[0].split("batch=")[1].split("/")[0]))
        return np.concatenate([b for _, b in got])

    a, ab = batches("guest", "a"), batches("host_0", "ab")
    in_order = psi_group.get_backend().mul(scalars["host_0"], a)[:, :ab.shape[1]]
    index = {bytes(r): i for i, r in enumerate(in_order)}
    perm = np.array([index[bytes(r)] for r in ab])
    assert sorted(perm.tolist()) == list(range(800))
    assert abs(np.corrcoef(perm, np.arange(800))[0, 1]) < 0.1


def test_cardinality_only_is_refused_where_it_cannot_hold():
    from atoll.secure.psi import protocol_roles

    g, h = id_sets(50, 50, 0.5, seed=14)
    params = PsiParams(cardinality_only=True)
    with pytest.raises(PartyFailed) as e:
        launch({"guest": Party("guest", run_psi, {"ids": g, "params": params}),
                "host_0": Party("host", run_psi, {"ids": h, "params": params}),
                "host_1": Party("host", run_psi, {"ids": h, "params": params})})
    assert isinstance(e.value.error, ConfigError)
    for proto in ("kkrt", "unbalanced"):
        with pytest.raises(ConfigError, match="ecdh"):
            protocol_roles(proto)["guest"](PsiParams(protocol=proto, cardinality_only=True))


def test_canonical_keys_fast_path_equals_canonical_id():
    from atoll.secure.psi import canonical_keys

    ascii_ids = ["a", " b ", "\tc\x1f", "d e", "007", "\x0bx\x0c"]
    for strip in (True, False):
        assert canonical_keys(ascii_ids, strip) == [canonical_id(x, strip).encode() for x in ascii_ids]
    mixed = ["Zo\u00eb", " e\u0301 ", 7, "x"]
    assert canonical_keys(mixed) == [canonical_id(x).encode() for x in mixed]
    for bad in (["a", "  "], ["a", None], ["\ud800"]):
        with pytest.raises(DataError):
            canonical_keys(bad)
