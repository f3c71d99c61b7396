"""Errors that travel: after a host fails with a data error, what its peers hold (logs, events,
reports) names the category and the step, never the host's id values, paths or file names
(issue 19). The full text stays in the host's own folder."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from atoll.federation.transport import failure_summary
from atoll.jobs import JobFailed, run_job
from atoll.jobs.runner import StepFailed
from atoll.errors import DataError

LONG = bool(os.environ.get("ATOLL_SECURITY_LONG"))
SECRET_ID = "SECRET-ID-7731"
SECRET_FILE = "host_private_ledger.csv"

JOB = textwrap.dedent("""\
    name: leak_probe
    timeout: 30
    mode: {mode}
    parties:
      guest:
        role: guest
        data: {{dataset: breast, split: hetero, party: guest, label: y}}
      host_0:
        role: host
        data: {{path: {secret_file}}}
      arbiter: {{role: arbiter}}
    pipeline:
      - id: read
        component: reader
      - id: align
        component: psi
        inputs: {{data: read.data}}
    """)


def every_file_text(folder: Path) -> dict[str, str]:
    return {str(p): p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("mode", ["threads", pytest.param("processes", marks=pytest.mark.skipif(
    not LONG, reason="the gRPC run of the same probe: ATOLL_SECURITY_LONG=1"))])
def test_a_hosts_data_error_reaches_its_peers_as_category_and_step_only(tmp_path, mode):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    rows = "\n".join(f"{i},{i * 0.5}" for i in range(5))
    (jobs / SECRET_FILE).write_text(f"id,x0\n{rows}\n{SECRET_ID},1.0\n{SECRET_ID},2.0\n")
    (jobs / "job.yaml").write_text(JOB.format(mode=mode, secret_file=SECRET_FILE))
    with pytest.raises(JobFailed) as e:
        run_job(jobs / "job.yaml", run_dir=tmp_path / "run")
    assert e.value.party == "host_0" and e.value.step == "read"
    run = tmp_path / "run"
    host = every_file_text(run / "host_0")
    assert any(SECRET_ID in t for t in host.values())  # the host's own log keeps the full text
    secrets = (SECRET_ID, SECRET_FILE, str(jobs))
    for peer in ("guest", "arbiter"):
        for path, text in every_file_text(run / peer).items():
            for s in secrets:
                assert s not in text, f"{s!r} leaked into {path}"
    if mode == "threads":  # a peer still waiting on the host learns why it stopped: category and step
        causes = [line for line in (run / "guest" / "events.jsonl").read_text().splitlines() if '"failed"' in line]
        assert causes and all("DataError at step 'read'" in c for c in causes), causes


def test_failure_summary_is_category_and_step_only():
    cause = DataError(f"party 'host_0': id '{SECRET_ID}' appears more than once in {SECRET_FILE}")
    try:
        raise StepFailed("read", "reader", "host_0", str(cause)) from cause
    except StepFailed as e:
        assert failure_summary(e) == "DataError at step 'read'"
