"""Streamed KKRT-PSI: ids from CSV/Parquet in chunks, spilled by hash, exact against set intersection."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from atoll.errors import DataError
from atoll.federation import Party, PartyFailed, launch
from atoll.secure import psi_kkrt
from atoll.secure.psi import PsiParams, normalize_ids
from atoll.secure.psi_kkrt import id_hashes
from atoll.secure.psi_stream import read_chunks, stream_psi


@pytest.fixture(autouse=True)
def small_buckets(monkeypatch):
    monkeypatch.setattr(psi_kkrt, "BUCKET_TARGET", 300)


def files(tmp_path, *sets, parquet=(1,)):
    paths = []
    for i, ids in enumerate(sets):
        frame = pd.DataFrame({"customer": ids, "other": range(len(ids))})
        path = tmp_path / (f"p{i}.parquet" if i in parquet else f"p{i}.csv")
        frame.to_parquet(path) if i in parquet else frame.to_csv(path, index=False)
        paths.append(path)
    return paths


def launch_stream(tmp_path, paths, chunk_rows=400, **kw):
    params = PsiParams(protocol="kkrt", **kw)
    names = ["guest"] + [f"host_{i}" for i in range(len(paths) - 1)]
    parties = {name: Party("guest" if name == "guest" else "host", stream_psi,
                           {"path": str(path), "out": str(tmp_path / f"{name}.out.csv"), "column": "customer",
                            "params": params, "chunk_rows": chunk_rows})
               for name, path in zip(names, paths)}
    return launch(parties), names


def read_out(tmp_path, name):
    return pd.read_csv(tmp_path / f"{name}.out.csv", dtype=str, keep_default_na=False)["customer"].tolist()


def hash_order(ids):
    keys, _ = normalize_ids(ids)
    h = id_hashes(keys)
    return [ids[i] for i in np.lexsort((h[:, 0], h[:, 1]))]


@pytest.mark.parametrize("overlap", [0.0, 0.3, 1.0])
def test_streamed_csv_and_parquet_exact(tmp_path, overlap):
    rng = random.Random(int(overlap * 10))
    pool = [f"id-{v}" for v in rng.sample(range(10**9), 6000)]
    g = pool[:2500]
    shared = int(overlap * 2000)
    h = g[:shared] + pool[2500:2500 + 2000 - shared]
    rng.shuffle(h)
    res, _ = launch_stream(tmp_path, files(tmp_path, g, h))
    want = set(g) & set(h)
    assert res["guest"].size == res["host_0"].size == len(want) == shared
    assert res["guest"].stats["buckets"] > 4 and res["guest"].stats["streamed"]
    assert read_out(tmp_path, "guest") == read_out(tmp_path, "host_0") == hash_order(sorted(want))


def test_three_parties_and_integer_ids(tmp_path):
    rng = random.Random(3)
    g, h0, h1 = (rng.sample(range(5000), k) for k in (2000, 2500, 3000))
    paths = files(tmp_path, g, h0, h1, parquet=(2,))                  # integers in CSV and Parquet
    res, names = launch_stream(tmp_path, paths)
    want = set(g) & set(h0) & set(h1)
    outs = [read_out(tmp_path, n) for n in names]
    assert outs[0] == outs[1] == outs[2] and sorted(map(int, outs[0])) == sorted(want)


def test_duplicates_across_chunks_and_result_to_guest(tmp_path):
    g = [f"a{i}" for i in range(900)] + ["a5", "a800"]                # duplicates in a later chunk
    h = [f"a{i}" for i in range(0, 1800, 2)]
    paths = files(tmp_path, g, h, parquet=())
    with pytest.raises(PartyFailed) as e:
        launch_stream(tmp_path, paths)
    assert e.value.party == "guest" and isinstance(e.value.error, DataError)
    res, _ = launch_stream(tmp_path, paths, duplicates="drop", result_to="guest")
    assert res["guest"].size == 450 and res["host_0"].size is None
    assert not (tmp_path / "host_0.out.csv").exists()
    assert sorted(read_out(tmp_path, "guest")) == sorted(set(g) & set(h))


def test_bad_ids_in_a_file_are_refused(tmp_path):
    paths = files(tmp_path, ["a", "  ", "b"], ["a"], parquet=())
    with pytest.raises(PartyFailed) as e:
        launch_stream(tmp_path, paths)
    assert isinstance(e.value.error, DataError)


def test_read_chunks(tmp_path):
    (p,) = files(tmp_path, [f"x{i}" for i in range(10)], parquet=())
    assert [len(c) for c in read_chunks(p, "customer", 4)] == [4, 4, 2]
    assert next(read_chunks(p, None, 3)) == ["x0", "x1", "x2"]


def test_cli_stream_standalone(tmp_path):
    from typer.testing import CliRunner

    from atoll.cli import app

    g, h = [f"c{i}" for i in range(1000)], [f"c{i}" for i in range(500, 1700)]
    paths = files(tmp_path, g, h)
    res = CliRunner().invoke(app, ["psi", "--standalone", "--protocol", "kkrt", "--stream", "--chunk-rows", "300",
                                   "--ids", str(paths[0]), "--host-ids", str(paths[1]), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    a = pd.read_csv(tmp_path / "o" / "guest.csv", dtype=str)["customer"].tolist()
    b = pd.read_csv(tmp_path / "o" / "host_0.csv", dtype=str)["customer"].tolist()
    assert a == b and sorted(a) == sorted(set(g) & set(h))
    bad = CliRunner().invoke(app, ["psi", "--standalone", "--stream", "--ids", str(paths[0]),
                                   "--host-ids", str(paths[1]), "--out", str(tmp_path / "o2")])
    assert bad.exit_code != 0
