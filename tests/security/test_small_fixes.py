"""The smaller findings of issue 19: ids split as PSI matched them, string labels refused clearly."""

from __future__ import annotations

import textwrap
import unicodedata

import pandas as pd
import pytest

from atoll.errors import DataError
from atoll.jobs import run_job
from atoll.jobs.components.reader import load_table
from atoll.jobs.components.split import ids_from_wire
from atoll.jobs.spec import load_job

JOB = textwrap.dedent("""\
    name: ids_probe
    mode: threads
    timeout: 30
    parties:
      guest: {role: guest, data: {path: guest.csv, label: y}}
      host_0: {role: host, data: {path: host.csv}}
    pipeline:
      - {id: read, component: reader}
      - {id: align, component: psi, inputs: {data: read.data}}
      - {id: split, component: split, inputs: {data: align.data}, params: {test_size: 0.25}}
    """)


def test_split_matches_ids_the_way_psi_does():
    names = [f"Zoë-{i}" for i in range(8)]
    nfc = [unicodedata.normalize("NFC", n) for n in names]
    nfd = [f" {unicodedata.normalize('NFD', n)} " for n in names]  # another form, surrounding spaces
    got = ids_from_wire(nfc[::-1], pd.Index(nfd))
    assert list(got) == nfd[::-1]
    assert list(ids_from_wire([133, 134], pd.Index([134.0, 133.0]))) == [133.0, 134.0]
    with pytest.raises(DataError, match="2 ids that are not in this party's data"):
        ids_from_wire(["a", "b", "Zoë-1"], pd.Index(nfd))


def test_a_job_whose_parties_write_ids_differently_runs_through_split(tmp_path):
    n = 40
    g = pd.DataFrame({"id": [f"Zoë-{i}" for i in range(n)], "y": [i % 2 for i in range(n)],
                      "x0": [i * 0.1 for i in range(n)]})
    h = pd.DataFrame({"id": [f" {unicodedata.normalize('NFD', f'Zoë-{i}')} " for i in range(n)],
                      "x1": [i * 0.2 for i in range(n)]})
    g.to_csv(tmp_path / "guest.csv", index=False)
    h.to_csv(tmp_path / "host.csv", index=False)
    (tmp_path / "job.yaml").write_text(JOB)
    r = run_job(tmp_path / "job.yaml", run_dir=tmp_path / "run")
    from atoll.jobs.store import RunFolder

    store = RunFolder(r.run_dir)
    gp, hp = store.party("guest").outputs("split"), store.party("host_0").outputs("split")
    assert len(gp["train"]) == len(hp["train"]) == 30 and len(gp["test"]) == len(hp["test"]) == 10


def test_a_string_label_is_refused_when_read_with_what_to_do(tmp_path):
    pd.DataFrame({"id": [1, 2], "y": ["yes", "no"], "x0": [0.1, 0.2]}).to_csv(tmp_path / "guest.csv", index=False)
    pd.DataFrame({"id": [1, 2], "x1": [0.1, 0.2]}).to_csv(tmp_path / "host.csv", index=False)
    (tmp_path / "job.yaml").write_text(JOB)
    job = load_job(tmp_path / "job.yaml")
    with pytest.raises(DataError, match="label column 'y' is not numeric .*positive_label"):
        load_table(job, "guest")
