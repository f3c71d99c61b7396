"""Malformed job files fail at load time, before any party starts, naming the line."""

from __future__ import annotations

import textwrap

import pytest

from atoll.jobs import JobSpecError, parse_job
from atoll.jobs.dag import find_cycle, waves

GOOD = textwrap.dedent("""\
    name: t
    seed: 1
    plugins: [jobs_toy_components]
    parties:
      guest:
        role: guest
        data: {dataset: breast, split: hetero, party: guest, label: y}
      host_0:
        role: host
        data: {dataset: breast, split: hetero, party: host}
    pipeline:
      - id: read
        component: reader
      - id: split
        component: split
        inputs: {data: read.data}
      - id: train
        component: toy_vlr
        inputs: {train: split.train}
      - id: predict
        component: predict
        inputs: {model: train.model, data: split.test}
      - id: evaluate
        component: evaluate
        inputs: {scores: predict.scores}
    """)


def line_of(text: str, needle: str, nth: int = 1) -> int:
    hits = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    return hits[nth - 1]


def fails(text: str) -> JobSpecError:
    with pytest.raises(JobSpecError) as e:
        parse_job(text, "job.yaml")
    return e.value


def test_good_job_parses():
    job = parse_job(GOOD, "job.yaml")
    assert [c.id for c in job.pipeline] == ["read", "split", "train", "predict", "evaluate"]
    assert job.parties["guest"].data.label == "y"


def test_unknown_component_names_its_line():
    text = GOOD.replace("component: toy_vlr", "component: toy_vlrr")
    e = fails(text)
    assert e.line == line_of(text, "toy_vlrr")
    assert str(e).startswith(f"job.yaml:{e.line}: unknown component 'toy_vlrr'")
    assert "reader" in str(e)  # lists the known ones


def test_missing_label_column_names_its_line():
    text = GOOD.replace("label: y}", "label: default}")
    e = fails(text)
    assert e.line == line_of(text, "label: default")
    assert "label column 'default' is not in" in str(e)


def test_label_holder_without_label():
    text = GOOD.replace("{dataset: breast, split: hetero, party: guest, label: y}",
                        "{path: missing.csv}")
    e = fails(text)
    assert e.line == line_of(text, "missing.csv")  # the file is missing: named at its line
    assert "does not exist" in str(e)


def test_party_without_data_names_its_line():
    text = GOOD.replace("    data: {dataset: breast, split: hetero, party: host}\n", "")
    e = fails(text)
    assert e.line == line_of(text, "host_0:")
    assert "party 'host_0' (host) has no data" in str(e)


def test_cycle_names_its_line():
    text = GOOD.replace("inputs: {data: read.data}", "inputs: {data: read.data}\n"
                        ).replace("  - id: read\n    component: reader\n",
                                  "  - id: read\n    component: slow\n    inputs: {data: split.train}\n")
    e = fails(text)
    assert "cycle" in str(e) and "read" in str(e) and "split" in str(e)
    assert e.line in (line_of(text, "inputs: {data: split.train}"), line_of(text, "inputs: {data: read.data}"))


def test_yaml_syntax_error_has_a_line():
    text = GOOD.replace("seed: 1", "seed: [1")
    e = fails(text)
    assert e.line is not None and "not valid YAML" in str(e)


def test_duplicate_key_is_refused():
    text = GOOD.replace("seed: 1", "seed: 1\nseed: 2")
    e = fails(text)
    assert e.line == 3 and "appears twice" in str(e)


def test_bad_param_names_its_line():
    text = GOOD.replace("inputs: {data: read.data}", "inputs: {data: read.data}\n    params: {test_size: 2}")
    e = fails(text)
    assert e.line == line_of(text, "test_size: 2") and "test_size" in str(e)


def test_unknown_param_and_bad_role():
    e = fails(GOOD.replace("inputs: {data: read.data}", "inputs: {data: read.data}\n    params: {tst_size: 0.1}"))
    assert "tst_size" in str(e)
    text = GOOD.replace("role: host", "role: hots")
    e = fails(text)
    assert e.line == line_of(text, "role: hots") and "parties.host_0.role" in str(e)


def test_bad_input_reference():
    text = GOOD.replace("inputs: {train: split.train}", "inputs: {train: split.nothing}")
    e = fails(text)
    assert e.line == line_of(text, "split.nothing") and "has no output 'nothing'" in str(e)
    text = GOOD.replace("inputs: {train: split.train}", "inputs: {train: nowhere.data}")
    assert "refers to 'nowhere.data'" in str(fails(text))


def test_missing_required_input():
    text = GOOD.replace("    inputs: {scores: predict.scores}\n", "")
    e = fails(text)
    assert "needs input 'scores'" in str(e)


def test_dag_helpers():
    deps = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    assert waves(deps) == [["a"], ["b", "c"], ["d"]]
    assert find_cycle(deps) is None
    assert find_cycle({"a": ["c"], "b": ["a"], "c": ["b"]}) is not None


def test_exposure_column_checks_name_their_line(tmp_path):
    import pandas as pd

    pd.DataFrame({"id": [1, 2], "visits": [0, 3], "years": [1.0, 2.0], "g0": [0.1, 0.2]}).to_csv(
        tmp_path / "guest.csv", index=False)
    base = GOOD.replace("{dataset: breast, split: hetero, party: guest, label: y}",
                        "{path: guest.csv, label: visits, exposure: years}")
    parse_job(base, str(tmp_path / "job.yaml"))  # toy_vlr does not mind; hetero_* GLMs check it
    text = base.replace("exposure: years", "exposure: yeras")
    with pytest.raises(JobSpecError) as e:
        parse_job(text, str(tmp_path / "job.yaml"))
    assert e.value.line == line_of(text, "exposure: yeras") and "exposure column 'yeras' is not in" in str(e.value)
    text = base.replace("component: toy_vlr", "component: hetero_lr")
    with pytest.raises(JobSpecError) as e:
        parse_job(text.replace("  host_0:", "  arbiter: {role: arbiter}\n  host_0:"), str(tmp_path / "job.yaml"))
    assert "used by hetero_poisson only" in str(e.value) and e.value.line == line_of(text, "exposure: years")
    text = GOOD.replace("{dataset: breast, split: hetero, party: host}",
                        "{dataset: breast, split: hetero, party: host, exposure: x0}")
    e = fails(text)
    assert e.line == line_of(text, "exposure: x0") and "only the guest holds an exposure column" in str(e)
