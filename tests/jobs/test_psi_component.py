"""The psi component with ``protocol: kkrt`` aligns real bundled rows exactly as ``ecdh`` does."""

from __future__ import annotations

import textwrap

import pytest

from atoll import datasets
from atoll.errors import AtollError
from atoll.jobs import parse_job, run_job
from atoll.jobs.runner import SavedOutputs

JOB = textwrap.dedent("""\
    name: align
    seed: 3
    mode: threads
    parties:
      guest:   {{role: guest, data: {{dataset: breast, split: hetero, party: guest, limit: 400}}}}
      host_0:  {{role: host,  data: {{dataset: breast, split: hetero, party: host, limit: 300}}}}
    pipeline:
      - {{id: read, component: reader}}
      - {{id: align, component: psi, inputs: {{data: read.data}}, params: {{protocol: {protocol}}}}}
    """)


def _aligned(tmp_path, protocol):
    r = run_job(parse_job(JOB.format(protocol=protocol), "align.yaml"), run_dir=tmp_path / protocol)
    return {p: list(SavedOutputs(r.run_dir / p / "align")["data"].ids) for p in ("guest", "host_0")}


def test_kkrt_component_aligns_real_rows_like_ecdh(tmp_path):
    g = datasets.load("breast", "hetero", "guest").iloc[:400]
    h = datasets.load("breast", "hetero", "host").iloc[:300]
    want = sorted(set(map(str, g.index)) & set(map(str, h.index)))
    kkrt = _aligned(tmp_path, "kkrt")
    assert kkrt == _aligned(tmp_path, "ecdh")
    assert [str(x) for x in kkrt["guest"]] == [str(x) for x in kkrt["host_0"]]
    assert sorted(str(x) for x in kkrt["guest"]) == want and len(want) == 300


def test_unknown_protocol_is_refused_at_validation():
    with pytest.raises(AtollError, match="kkrt"):
        parse_job(JOB.format(protocol="rsa"), "align.yaml")
