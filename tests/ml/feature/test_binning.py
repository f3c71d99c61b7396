"""Hetero binning: WOE / IV of host features under HE against the plaintext computation on the joined data.

Keys are 1024-bit here (tests only; the library default is 2048); slices of a few thousand rows of the
bundled default_credit and vehicle_scale sets. The oracle counts with pandas on the joined data, with
the same bins (each party's bins are its own local computation, the same function the twin calls).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atoll import datasets, wire
from atoll.errors import DataError
from atoll.federation import Party, PartyFailed, launch
from atoll.ml.feature.binning import (
    BinningParams,
    FeatureBins,
    chimerge_groups,
    plain_binning,
    woe_iv,
)
from atoll.ml.feature.hetero_binning import (
    HeteroBinningGuest,
    HeteroBinningHost,
    model_from_wire,
    model_to_wire,
)

KEY_BITS = 1024


def joined(name: str, n: int, seed: int = 0):
    g = datasets.load(name, "hetero", "guest")
    h = datasets.load(name, "hetero", "host").loc[g.index]
    idx = np.random.default_rng(seed).permutation(len(g))[:n]
    g, h = g.iloc[idx], h.iloc[idx]
    y = g.pop("y").to_numpy()
    return g, h, y


def messy(g: pd.DataFrame, h: pd.DataFrame, seed: int = 1):
    """Missing values in two columns of each party, a categorical column at each (real values, rounded)."""
    rng = np.random.default_rng(seed)
    g, h = g.copy(), h.copy()
    for df, cols in ((g, ["x0", "x3"]), (h, ["x1", "x4"])):
        for c in cols:
            df.loc[rng.random(len(df)) < 0.1, c] = np.nan
    g["x1"] = np.round(g["x1"] * 2)
    h["x2"] = np.round(h["x2"])
    return g, h


def run(params: BinningParams, g: pd.DataFrame, h, y, recorder=None):
    hosts = h if isinstance(h, list) else [h]

    def guest(ctx):
        return HeteroBinningGuest(params).fit(ctx, g.to_numpy(np.float64), y, list(g.columns))

    def host(ctx, x):
        return HeteroBinningHost(params).fit(ctx, x.to_numpy(np.float64), list(x.columns))

    spec = {"guest": Party("guest", guest), **{f"host_{i}": Party("host", host, {"x": x})
                                                 for i, x in enumerate(hosts)}}
    return launch(spec, recorder=recorder)


def oracle_counts(col: pd.Series, bins: FeatureBins, y: np.ndarray, classes) -> np.ndarray:
    codes = bins.codes(col.to_numpy(np.float64))
    ct = pd.crosstab(pd.Categorical(codes, categories=range(bins.n_bins)),
                     pd.Categorical(y, categories=classes), dropna=False)
    return ct.to_numpy(np.int64)


def oracle_woe(counts: np.ndarray, adj: float = 0.5) -> tuple[list[float], float]:
    """WOE / IV by the textbook formula, one bin at a time (binary)."""
    ev, nev = counts[:, 1].astype(float), counts[:, 0].astype(float)
    E, N = ev.sum(), nev.sum()
    woe, iv = [], 0.0
    for e, n in zip(ev, nev):
        if e == 0 and n == 0:
            woe.append(0.0)
            continue
        if e == 0 or n == 0:
            e, n = e + adj, n + adj
        w = np.log((e / E) / (n / N))
        woe.append(w)
        iv += (e / E - n / N) * w
    return woe, iv


@pytest.mark.parametrize("method", ["quantile", "bucket"])
def test_woe_iv_equal_the_joined_plaintext_exactly(method):
    g, h, y = joined("default_credit", 2000)
    g, h = messy(g, h)
    p = BinningParams(method=method, max_bin=8, categorical=["x1", "host_x2"], key_bits=KEY_BITS,
                      scheme="paillier", share_woe=False, chunk_bytes=1 << 16)
    p_host = p.model_copy(update={"categorical": ["x2"]})
    out = launch({"guest": Party("guest", lambda ctx: HeteroBinningGuest(p).fit(
                      ctx, g.to_numpy(), y, list(g.columns))),
                  "host_0": Party("host", lambda ctx: HeteroBinningHost(p_host).fit(
                      ctx, h.to_numpy(), list(h.columns)))})
    gm, hm = out["guest"], out["host_0"]
    # the twin on the joined data (host columns renamed so that its categorical list names them)
    pooled = pd.concat([g, h.add_prefix("host_")], axis=1)
    bins, twin = plain_binning(pooled.to_numpy(np.float64), list(pooled.columns), y, p)
    by_name = {b.name: b for b in bins}
    assert set(gm.tables) == {*g.columns, *(f"host_0.{c}" for c in h.columns)}
    for name, t in gm.tables.items():
        pooled_name = name.replace("host_0.", "host_")
        ref = twin[pooled_name]
        np.testing.assert_array_equal(t["counts"], ref["counts"])  # integer counts: exact
        assert np.array_equal(t["woe"], ref["woe"]) and np.array_equal(t["iv"], ref["iv"])
        # and an independent oracle: pandas' crosstab on the pooled column, the textbook formula
        counts = oracle_counts(pooled[pooled_name], by_name[pooled_name], y, [0, 1])
        np.testing.assert_array_equal(t["counts"], counts)
        woe, iv = oracle_woe(counts)
        np.testing.assert_allclose(t["woe"][:, 0], woe, rtol=1e-12, atol=1e-12)
        assert abs(float(t["iv"][0]) - iv) < 1e-12
    # missing bins are kept and filled; the categorical columns have one bin per category
    assert gm.tables["host_0.x1"]["counts"][-1].sum() == int(h["x1"].isna().sum()) > 0
    assert gm.tables["x0"]["counts"][-1].sum() == int(g["x0"].isna().sum()) > 0
    cat = next(b for b in hm.bins if b.name == "x2")
    assert cat.kind == "categorical" and cat.n_bins == h["x2"].nunique() + 1
    # the host holds its bins and nothing of the labels
    assert hm.tables == {} and [b.name for b in hm.bins] == list(h.columns)
    # model parts round-trip through the codec
    again = model_from_wire(wire.loads(wire.dumps(model_to_wire(gm))))
    assert again.columns == gm.columns and np.array_equal(again.tables["host_0.x3"]["woe"],
                                                         gm.tables["host_0.x3"]["woe"])


def test_multiclass_one_vs_rest_two_hosts_ou():
    g, h, y = joined("vehicle_scale", 500)
    h1, h2 = h.iloc[:, :5], h.iloc[:, 5:]
    p = BinningParams(max_bin=6, key_bits=KEY_BITS, scheme="ou")
    out = run(p, g, [h1, h2], y)
    gm = out["guest"]
    classes = np.unique(y)
    assert len(classes) == 4 and gm.classes == [float(c) for c in classes]
    for i, hx in enumerate((h1, h2)):
        for c in hx.columns:
            b = next(b for b in out[f"host_{i}"].bins if b.name == c)
            counts = oracle_counts(hx[c], b, y, classes)
            t = gm.tables[f"host_{i}.{c}"]
            np.testing.assert_array_equal(t["counts"], counts)
            woe, iv = woe_iv(counts)
            assert woe.shape == (b.n_bins, 4) and np.array_equal(t["woe"], woe) and np.array_equal(t["iv"], iv)
            assert t["iv_rank"] == float(iv.max())


@pytest.mark.parametrize("merge_by", ["chi2", "iv"])
def test_chimerge_and_shared_woe_match_the_twin(merge_by):
    g, h, y = joined("default_credit", 1500, seed=3)
    p = BinningParams(method="chimerge", init_bins=16, max_bin=5, monotone=True, share_woe=True,
                      key_bits=KEY_BITS, merge_by=merge_by)
    out = run(p, g, h, y)
    gm, hm = out["guest"], out["host_0"]
    pooled = pd.concat([g, h.add_prefix("host_")], axis=1)
    bins, twin = plain_binning(pooled.to_numpy(np.float64), list(pooled.columns), y, p)
    by_name = {b.name: b for b in bins}
    for c in h.columns:
        t = gm.tables[f"host_0.{c}"]
        ref = twin[f"host_{c}"]
        np.testing.assert_array_equal(t["counts"], ref["counts"])
        hb = next(b for b in hm.bins if b.name == c)
        np.testing.assert_array_equal(hb.edges, by_name[f"host_{c}"].edges)  # the host merged the same cuts
        assert hb.n_bins <= 5 + 1
        np.testing.assert_array_equal(hm.tables[c]["woe"], t["woe"])  # share_woe: its own bins only
        w = t["woe"][:-1, 0]
        assert (np.diff(w) >= 0).all() or (np.diff(w) <= 0).all()  # monotone over the value bins
    assert set(hm.tables) == set(h.columns)


def test_wire_audit_the_host_learns_nothing_of_the_labels():
    g, h, y = joined("default_credit", 600, seed=5)
    seen = []
    p = BinningParams(max_bin=6, key_bits=KEY_BITS, chunk_bytes=1 << 16)
    run(p, g, h, y, recorder=lambda s, r, a, b: seen.append((s, r, a, b)))
    to_host = [(a, wire.loads(b), len(b)) for s, r, a, b in seen if r == "host_0"]
    assert to_host
    n_chunks = 0
    for address, value, size in to_host:
        assert size <= (1 << 16) + 4096  # chunked: no message past chunk_bytes (plus framing)
        if address.endswith("/labels"):
            n_chunks += 1
            assert type(value).__name__ == "CipherArray" and value.packing[1] == 1
        elif address.endswith("/setup"):
            assert set(value) == {"pk", "n_classes", "n_rows"} and value["n_classes"] == 2
        else:
            assert address.endswith("/labels_chunks") and isinstance(value, int)
    assert n_chunks > 1
    # what reaches the guest from the host: ciphertexts and the bins' layout (counts of bins, names)
    (msg,) = [wire.loads(b) for s, r, a, b in seen if s == "host_0"]
    assert type(msg["ct"]).__name__ == "CipherArray"
    assert msg["n_bins"].dtype.kind == "i" and msg["names"] == list(h.columns)


def test_a_hostile_host_sum_is_refused_and_bad_labels_are_named():
    g, h, y = joined("default_credit", 300, seed=2)
    p = BinningParams(max_bin=4, key_bits=KEY_BITS)

    def hostile(ctx):  # sends the guest's own encrypted labels back as "counts" of one feature
        ctx.recv("guest", "setup")
        n = ctx.recv("guest", "labels_chunks")
        with ctx.scope("chunk", 0):
            enc = ctx.recv("guest", "labels")
        assert n == 1
        ctx.send("guest", "counts", {"ct": enc[:1], "n_bins": np.array([3]), "names": ["a"], "kinds": ["numeric"]})

    with pytest.raises(PartyFailed, match="inconsistent"):
        launch({"guest": Party("guest", lambda ctx: HeteroBinningGuest(p).fit(ctx, g.to_numpy(), y, list(g.columns))),
                "host_0": Party("host", hostile)})
    with pytest.raises(DataError, match="single class"):
        plain_binning(np.zeros((4, 1)), ["a"], np.ones(4), BinningParams())
    with pytest.raises(DataError, match="positive_label"):
        plain_binning(np.zeros((4, 1)), ["a"], np.array([1, 2, 1, 2]), BinningParams())


@pytest.mark.parametrize("merge_by", ["chi2", "iv", "ks"])
def test_chimerge_merges_the_similar_neighbours(merge_by):
    counts = np.array([[10, 1], [9, 1], [1, 10], [2, 9], [0, 0]])
    assert chimerge_groups(counts, max_bin=2, merge_by=merge_by).tolist() == [0, 0, 1, 1, 2]
    # merging by IV: the grouping into 3 bins of adjacent fine bins with the largest IV (exhaustive check)
    six = np.array([[30, 2], [25, 3], [20, 8], [10, 10], [5, 15], [2, 20], [3, 1]])
    g = chimerge_groups(six, max_bin=3, merge_by="iv")
    best = max(woe_iv(np.vstack([six[:a].sum(0), six[a:b].sum(0), six[b:6].sum(0), six[6]]))[1][0]
               for a in range(1, 5) for b in range(a + 1, 6))
    got = woe_iv(np.vstack([six[:6][g[:6] == k].sum(0) for k in range(3)] + [six[6]]))[1][0]
    assert g[-1] == 3 and abs(got - best) < 1e-12  # here the greedy merge finds the best grouping
