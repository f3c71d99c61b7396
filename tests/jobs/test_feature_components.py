"""The credit-scoring components in a job (threads mode, 1024-bit keys, slices of default_credit):
``hetero_binning`` -> ``feature_select`` -> ``woe_transform`` -> ``hetero_lr``, their outputs at each party
against the plaintext twin on the rows each step saw, and ``atoll predict`` reapplying the fitted state."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atoll import datasets
from atoll.jobs import parse_job, predict_job, run_job
from atoll.jobs.runner import SavedOutputs
from atoll.ml.feature.binning import BinningParams, plain_binning
from atoll.ml.feature.selection import SelectionParams, combine, local_mask

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """examples/credit_scorecard.yaml on 3000 rows (1024-bit keys, batches of 512), once for this module."""
    return run_job(small_example(3000), run_dir=tmp_path_factory.mktemp("scorecard") / "run",
                   centralized_baseline=True)


def out(r, party, step):
    return SavedOutputs(r.run_dir / party / step)


def test_binning_selection_woe_match_the_twin_on_the_joined_rows(run):
    g_train, h_train = out(run, "guest", "split")["train"], out(run, "host_0", "split")["train"]
    pooled = pd.concat([g_train.x, h_train.x.loc[g_train.ids].add_prefix("host_0.")], axis=1)
    p = BinningParams(max_bin=10, categorical=["host_0.x1", "host_0.x2", "host_0.x3"])
    _, twin = plain_binning(pooled.to_numpy(np.float64), list(pooled.columns), g_train.y.to_numpy(), p)
    gm = out(run, "guest", "bin")["model"]
    assert set(gm["tables"]) == set(twin)
    for k, t in gm["tables"].items():
        np.testing.assert_array_equal(t["counts"], twin[k]["counts"])
        assert np.array_equal(t["woe"], twin[k]["woe"])
    # selection: the same columns as the plaintext rule on the joined data, each party only its own
    sp = SelectionParams(iv_threshold=0.02, top_k=14)
    parties = {"guest": (list(g_train.x.columns), *local_mask(g_train.values(), g_train.x.columns, sp)),
               "host_0": ([f"host_0.{c}" for c in h_train.x.columns],
                          *local_mask(h_train.values(), h_train.x.columns, sp))}
    keep = combine(parties, {k: float(v["iv_rank"]) for k, v in twin.items()}, sp)
    ref_g = [c for c, k in zip(g_train.x.columns, keep["guest"]) if k]
    ref_h = [c for c, k in zip(h_train.x.columns, keep["host_0"]) if k]
    assert out(run, "guest", "select")["model"]["columns"] == ref_g
    assert out(run, "host_0", "select")["model"]["columns"] == ref_h
    assert 0 < len(ref_g) + len(ref_h) <= 14 and ref_h  # the host keeps some of its columns
    assert len(ref_g) + len(ref_h) < len(twin)  # and some columns go
    # WOE transform: each kept column replaced by its bin's WOE, at each party, train and test
    for party, prefix in (("guest", ""), ("host_0", "host_0.")):
        for slot in ("train", "test"):
            raw = out(run, party, "select")[slot]
            woe = out(run, party, "woe")[slot]
            assert list(woe.x.columns) == list(raw.x.columns)
            for c in raw.x.columns:
                b = next(b for b in gm["bins"] if b["name"] == c) if party == "guest" else None
                t = gm["tables"][prefix + c]
                if b is not None:
                    from atoll.ml.feature.binning import bins_from_wire

                    codes = bins_from_wire([b])[0].codes(raw.x[c].to_numpy())
                    np.testing.assert_array_equal(woe.x[c].to_numpy(), np.asarray(t["woe"])[codes, 0])
                else:  # the host's values are WOE values of its own bins
                    assert set(np.unique(woe.x[c])) <= set(np.asarray(t["woe"])[:, 0])


def test_predict_reapplies_the_fitted_selection_and_woe(run, tmp_path):
    files = predict_job(run.run_dir, out_dir=tmp_path / "pred")
    pred = pd.read_csv(files["guest"]).set_index("id")
    inside = out(run, "guest", "predict")["scores"]
    np.testing.assert_allclose(pred.loc[np.asarray(inside["ids"]), "score"], inside["score"], rtol=1e-9)
    woe = SavedOutputs(tmp_path / "pred" / "host_0" / "woe")["test"]
    assert list(woe.x.columns) == out(run, "host_0", "select")["model"]["columns"]


MESSY = textwrap.dedent("""\
    name: messy
    seed: 4
    mode: threads
    parties:
      guest:   {role: guest, data: {path: guest.csv, id: id, label: default}}
      host_0:  {role: host,  data: {path: host.csv, id: id}}
    pipeline:
      - {id: read, component: reader, params: READER}
      - {id: align, component: psi, inputs: {data: read.data}}
      - {id: draw, component: sample, inputs: {data: align.data}, params: {fraction: 0.8, stratify: true}}
      - {id: split, component: split, inputs: {data: draw.data}, params: {test_size: 0.3}}
      - id: fill
        component: impute
        inputs: {train: split.train, test: split.test}
        params: {strategy: median, columns: [x4], cap_upper: 0.99}
      - {id: enc, component: encode, inputs: {train: fill.train, test: fill.test}, params: {columns: [host_0.x3]}}
      - id: bin
        component: hetero_binning
        inputs: {train: split.train}
        params: {max_bin: 5, key_bits: 1024, scheme: ou}
      - id: psi_check
        component: stability
        inputs: {binning: bin.model, expected: split.train, actual: split.test}
    """)


def messy_files(folder):
    g = datasets.load("default_credit", "hetero", "guest").iloc[:800].copy()
    h = datasets.load("default_credit", "hetero", "host").loc[g.index].copy()
    g["default"] = np.where(g.pop("y") == 1, "yes", "no")
    g["branch"] = 7.0  # a constant column
    h.loc[h.index[::9], "x4"] = np.nan
    g.to_csv(folder / "guest.csv")
    h.to_csv(folder / "host.csv")


def test_reader_names_the_column_or_the_preparation_handles_it(tmp_path):
    from atoll.jobs.runner import JobFailed

    messy_files(tmp_path)
    job = tmp_path / "job.yaml"
    for params, err in (("{}", r"step 'read'.*label column 'default' is not numeric.*positive_label"),
                        ("{positive_label: 'yes', missing: error}", r"step 'read'.*column 'x4' has 89 missing"),
                        ("{positive_label: 'yes', constant: error}", r"step 'read'.*column 'branch' is constant")):
        job.write_text(MESSY.replace("READER", params))
        with pytest.raises(JobFailed, match=err):
            run_job(job, run_dir=tmp_path / f"run-{len(list(tmp_path.iterdir()))}")
    job.write_text(MESSY.replace("READER", "{positive_label: 'yes', constant: drop}"))
    r = run_job(job, run_dir=tmp_path / "run")
    g = out(r, "guest", "read")["data"]
    assert "branch" not in g.x.columns and set(g.y.unique()) == {0, 1}
    # sample: 80 % of each class, the same ids at the host
    drawn = out(r, "guest", "draw")["data"]
    assert list(out(r, "host_0", "draw")["data"].ids) == list(drawn.ids) and len(drawn) == 640
    assert drawn.y.sum() == round(0.8 * g.y.sum())
    raw = pd.read_csv(tmp_path / "guest.csv").set_index("id")
    assert (g.y == (raw.loc[g.ids, "default"] == "yes").astype(int)).all()
    # impute fitted on the host's training rows only, encode one-hot at the host, nothing at the guest
    train, test = out(r, "host_0", "split")["train"], out(r, "host_0", "split")["test"]
    filled = out(r, "host_0", "fill")["test"]
    med = np.median(train.x["x4"].dropna())
    cap = np.quantile(train.x["x4"].dropna(), 0.99)
    np.testing.assert_allclose(filled.x["x4"], np.minimum(test.x["x4"].fillna(med), cap))
    enc = out(r, "host_0", "enc")["test"]
    assert {c for c in enc.x.columns if c.startswith("x3=")} == {f"x3={v:g}" for v in np.unique(train.x["x3"])}
    assert list(out(r, "guest", "enc")["test"].x.columns) == list(out(r, "guest", "split")["test"].x.columns)
    # stability: PSI of each party's own columns on its own bins, against the formula
    from atoll.ml.feature.binning import bins_from_wire
    from atoll.ml.feature.stability import psi

    for party in ("guest", "host_0"):
        st = out(r, party, "psi_check")["model"]
        bins = bins_from_wire(out(r, party, "bin")["model"]["bins"])
        split = out(r, party, "split")
        assert [t["name"] for t in st["features"]] == [b.name for b in bins]
        for t, b in zip(st["features"], bins):
            e = np.bincount(b.codes(split["train"].x[b.name].to_numpy()), minlength=b.n_bins)
            a = np.bincount(b.codes(split["test"].x[b.name].to_numpy()), minlength=b.n_bins)
            assert t["psi"] == psi(e, a)[0] and t["psi"] < 0.1



EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "credit_scorecard.yaml"


def small_example(rows: int):
    """The example as shipped, on a slice, with 1024-bit keys and a smaller batch, in threads."""
    import yaml

    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["mode"] = "threads"
    for party in raw["parties"].values():
        if party.get("data"):
            party["data"]["limit"] = rows
    for step in raw["pipeline"]:
        params = step.get("params", {})
        if "key_bits" in params:
            params["key_bits"] = 1024
        if "batch_size" in params:
            params["batch_size"] = 512
    return parse_job(yaml.safe_dump(raw, sort_keys=False), str(EXAMPLE))


def test_the_scorecard_example_end_to_end(run, tmp_path):
    from atoll.ml.feature.binning import bins_from_wire
    from atoll.ml.feature.scorecard import ScorecardParams, score_from_log_odds

    r = run
    # the baseline trains scikit-learn on the joined WOE columns: close to the federated LR
    (row,) = r.report["centralized_baseline"]
    assert row["n_test"] == 600 and row["metrics"]["auc"]["V_SUM"] > 0.7
    assert abs(row["metrics"]["auc"]["diff"]) < 0.03, row["metrics"]["auc"]
    # the scorecard's points reproduce the LR's log-odds: score = offset - factor * u, u from the model parts
    gl, hl = out(r, "guest", "train")["model"], out(r, "host_0", "train")["model"]
    gx, hx = out(r, "guest", "woe")["test"], out(r, "host_0", "woe")["test"]
    u = gl["intercept"] + gx.values() @ gl["coef"] + hx.x.loc[gx.ids].to_numpy() @ hl["coef"] + hl["offset"]
    card = out(r, "guest", "card")["scores"]
    assert list(card["ids"]) == list(gx.ids)
    np.testing.assert_allclose(card["score"], score_from_log_odds(u, ScorecardParams()), rtol=0, atol=1e-8)
    p = out(r, "guest", "predict")["scores"]["score"]
    np.testing.assert_allclose(card["score"], 600 - 50 / np.log(2) * np.log(p / (1 - p)), atol=1e-6)
    # and the points tables, bin by bin on the raw values, add up to the same scores (each party its own)
    total = np.full(len(gx), out(r, "guest", "card")["model"]["base_points"], dtype=np.float64)
    for party in ("guest", "host_0"):
        m = out(r, party, "card")["model"]
        bins = {b.name: b for b in bins_from_wire(out(r, party, "bin")["model"]["bins"])}
        raw = out(r, party, "select")["test"].x.loc[gx.ids]
        if party == "host_0":
            total += m["base_points"]
        for f in m["features"]:
            total += np.asarray(f["points"])[bins[f["name"]].codes(raw[f["name"]].to_numpy())]
    np.testing.assert_allclose(total, card["score"], atol=1e-8)
    # a higher score is a lower risk
    y = card["label"]
    assert card["score"][y == 0].mean() > card["score"][y == 1].mean() + 20
    # stability of the held-out rows against training: features at each party, the score at the guest
    st = out(r, "guest", "stability")["model"]
    assert st["score"] is not None and 0 <= st["score"]["psi"] < 0.1
    assert all("csi" in t for t in st["features"] if t["name"] in gl["columns"])
    assert out(r, "host_0", "stability")["model"]["score"] is None
    # the report shows the IV ranking and WOE tables, the points and the PSI tables
    kinds = {(s["kind"], s["party"]) for s in r.report["feature"]}
    assert {("binning", "guest"), ("scorecard", "guest"), ("scorecard", "host_0"), ("stability", "guest"),
            ("stability", "host_0")} <= kinds
    (binning,) = [s for s in r.report["feature"] if s["kind"] == "binning"]
    ivs = [v for _, v in binning["iv_ranking"]]
    assert ivs == sorted(ivs, reverse=True) and len(ivs) == 23
    page = (r.run_dir / "report.html").read_text()
    assert "IV ranking" in page and "WOE — host_0.x2" in page and "Scorecard — card at host_0" in page
    assert (r.run_dir / "plots" / "iv_bin_guest.png").exists()
    assert (r.run_dir / "plots" / f"bins_bin_guest_{binning['iv_ranking'][0][0].replace('.', '_')}.png").exists()
    # atoll predict on shifted shop data: scores, points and stability again, against the training rows
    from atoll import datasets as ds

    h = ds.load("default_credit", "hetero", "host").iloc[:3000].copy()
    h["x0"] = h["x0"] + 1.5
    h.to_csv(tmp_path / "shop_new.csv")
    files = predict_job(r.run_dir, out_dir=tmp_path / "pred", data={"host_0": {"path": str(tmp_path / "shop_new.csv"),
                                                                              "id": "id"}})
    assert (tmp_path / "pred" / "guest" / "card.csv").exists() and "guest" in files
    new = SavedOutputs(tmp_path / "pred" / "host_0" / "stability")["model"]
    by = {t["name"]: t["psi"] for t in new["features"]}
    assert by["x0"] > 0.25 and by["x5"] < 0.1  # the shifted column shows, the others stay stable


def test_the_demo_prints_the_iv_ranking_selection_and_scorecard(run):
    """``make demo`` runs this example (all rows, processes); its summary of the feature steps, on this run."""
    from rich.console import Console

    import atoll.demo as demo

    assert demo.EXAMPLE == EXAMPLE
    console = Console(record=True, width=160)
    demo._feature_summary(console, run.report)
    text = console.export_text()
    assert "IV of every column" in text and "host_0.x5" in text and "scorecard: base points" in text
    kept = [s for s in run.report["feature"] if s["kind"] == "selection" and s["party"] == "guest"][0]["kept"]
    assert text.count("yes") == len(kept) > 0
    host_kept = [s for s in run.report["feature"] if s["kind"] == "selection" and s["party"] == "host_0"][0]["kept"]
    assert {f"host_0.{c}" for c in host_kept} == {c for c in kept if c.startswith("host_0.")}


VIF_JOB = textwrap.dedent("""\
    name: vif
    seed: 6
    mode: threads
    parties:
      guest:   {role: guest, data: {dataset: default_credit, split: hetero, party: guest, label: y, limit: 600}}
      host_0:  {role: host,  data: {dataset: default_credit, split: hetero, party: host, limit: 600}}
      arbiter: {role: arbiter}
    pipeline:
      - {id: read, component: reader}
      - {id: split, component: split, inputs: {data: read.data}, params: {test_size: 0.25}}
      - {id: corr, component: hetero_pearson, inputs: {data: split.train}, params: {key_bits: 1024}}
      - id: select
        component: feature_select
        inputs: {pearson: corr.model, train: split.train, test: split.test}
        params: {iv_threshold: null, max_vif: 10.0, keep: [guest.x2]}
    """)


def test_selection_by_vif_across_the_parties(tmp_path):
    r = run_job(parse_job(VIF_JOB, "vif.yaml"), run_dir=tmp_path / "run")
    g, h = out(r, "guest", "split")["train"], out(r, "host_0", "split")["train"]
    joined = np.hstack([g.values(), h.x.loc[g.ids].to_numpy()])
    vif = np.diag(np.linalg.inv(np.corrcoef(joined.T)))  # the plaintext VIF of the joined columns
    names = [("guest", c) for c in g.x.columns] + [("host_0", c) for c in h.x.columns]
    expect = {(p, c) for (p, c), v in zip(names, vif) if v <= 10.0} | {("guest", "x2")}
    assert vif.max() > 10.0 and len(expect) < len(names)  # the bill / payment columns are collinear
    assert np.abs(vif - 10.0).min() > 0.5  # no VIF so close to the threshold that fixed point could flip it
    got = {("guest", c) for c in out(r, "guest", "select")["model"]["columns"]} | {
        ("host_0", c) for c in out(r, "host_0", "select")["model"]["columns"]}
    assert got == expect


def test_woe_transform_of_a_multiclass_label_has_one_column_per_class():
    from atoll.federation import Party, launch
    from atoll.jobs.artifacts import Table
    from atoll.jobs.components.binning import woe_encode
    from atoll.ml.feature.hetero_binning import HeteroBinningGuest, HeteroBinningHost, model_to_wire

    g = datasets.load("vehicle_scale", "hetero", "guest").iloc[:300]
    h = datasets.load("vehicle_scale", "hetero", "host").loc[g.index]
    y = g.pop("y").to_numpy()
    p = BinningParams(max_bin=4, share_woe=True, scheme="ou", key_bits=1024)
    res = launch({"guest": Party("guest", lambda ctx: HeteroBinningGuest(p).fit(ctx, g.to_numpy(), y, list(g.columns))),
                  "host_0": Party("host", lambda ctx: HeteroBinningHost(p).fit(ctx, h.to_numpy(), list(h.columns)))})
    enc = woe_encode(Table(h), model_to_wire(res["host_0"]), None)
    assert list(enc.x.columns) == [f"{c}_woe_{k}" for c in h.columns for k in range(4)]
    b = res["host_0"].bins[0]
    woe = res["guest"].tables[f"host_0.{b.name}"]["woe"]
    np.testing.assert_array_equal(enc.x[[f"{b.name}_woe_{k}" for k in range(4)]].to_numpy(),
                                  woe[b.codes(h[b.name].to_numpy())])


def test_selection_by_secureboost_importance(tmp_path):
    job = VIF_JOB.replace("name: vif", "name: importance")
    job = job[:job.index("  - {id: corr")] + textwrap.indent(textwrap.dedent("""\
          - id: boost
            component: secureboost
            inputs: {train: split.train}
            params: {n_estimators: 2, max_depth: 2, key_bits: 1024}
          - id: select
            component: feature_select
            inputs: {importance: boost.model, train: split.train, test: split.test}
            params: {iv_threshold: null, min_importance: 0.05}
        """), "  ")
    r = run_job(parse_job(job, "importance.yaml"), run_dir=tmp_path / "run")
    gains = out(r, "guest", "boost")["model"]["feature_gain"]
    total = sum(float(np.sum(g)) for g in gains.values())
    for party in ("guest", "host_0"):
        cols = list(out(r, party, "split")["train"].x.columns)
        expect = [c for c, g in zip(cols, gains[party]) if g / total >= 0.05]
        assert out(r, party, "select")["model"]["columns"] == expect
    assert 0 < sum(len(out(r, p, "select")["model"]["columns"]) for p in ("guest", "host_0")) < 23
