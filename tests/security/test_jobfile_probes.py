"""A hostile job file and a careless user: what a job file may make a party read, build or import
(issue 19). Every refusal is a JobSpecError naming the file (and the line where there is one)."""

from __future__ import annotations

import os
import textwrap
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atoll.errors import ConfigError
from atoll.jobs import JobSpecError, parse_job
from atoll.jobs.spec import load_job

EXAMPLES = int(os.environ.get("ATOLL_FUZZ_EXAMPLES", "300"))

JOB = textwrap.dedent("""\
    name: {name}
    timeout: {timeout}
    parties:
      guest:
        role: guest
        data: {{path: {path}, label: y}}
      host_0:
        role: host
        data: {{dataset: breast, split: hetero, party: host}}
      arbiter: {{role: arbiter}}
    pipeline:
      - id: read
        component: reader
      - id: train
        component: hetero_lr
        inputs: {{train: read.data}}
        params: {{key_bits: {key_bits}, learning_rate: {lr}, max_iter: 1}}
    """)


def job_text(name="t", timeout=60, path="guest.csv", key_bits=1024, lr=0.1):
    return JOB.format(name=name, timeout=timeout, path=path, key_bits=key_bits, lr=lr)


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "jobs"
    d.mkdir()
    (d / "guest.csv").write_text("id,y,x0\n1,0,0.5\n2,1,0.7\n")
    return d


def load(folder, text, **kw):
    f = folder / "job.yaml"
    f.write_text(text)
    return load_job(f, **kw)


# ------------------------------------------------------------------------------ data paths
@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.csv", "/proc/self/environ", "/dev/zero",
                                  "sub/../../outside.csv"])
def test_a_data_path_outside_the_job_folder_is_refused_without_reading_it(folder, path):
    (folder.parent / "outside.csv").write_text("id,y\nsecret-id-123,1\n")
    with pytest.raises(JobSpecError) as e:
        load(folder, job_text(path=path))
    assert "outside the folders this job may read" in str(e.value)
    assert str(e.value).startswith(f"{folder / 'job.yaml'}:6:")
    assert "root:" not in str(e.value) and "secret-id-123" not in str(e.value)


def test_a_symlink_inside_the_folder_to_a_file_outside_is_refused(folder):
    (folder.parent / "secret.csv").write_text("id,y\nsecret-id-123,1\n")
    (folder / "link.csv").symlink_to(folder.parent / "secret.csv")
    with pytest.raises(JobSpecError, match="outside the folders"):
        load(folder, job_text(path="link.csv"))


def test_a_path_that_is_not_a_regular_file_is_refused(folder):
    (folder / "dir.csv").mkdir()
    with pytest.raises(JobSpecError, match="not a regular file"):
        load(folder, job_text(path="dir.csv"))
    os.mkfifo(folder / "fifo.csv")  # reading it would block for ever
    with pytest.raises(JobSpecError, match="not a regular file"):
        load(folder, job_text(path="fifo.csv"))


def test_folders_the_user_allows_are_readable(folder, tmp_path, monkeypatch):
    elsewhere = tmp_path / "warehouse"
    elsewhere.mkdir()
    (elsewhere / "g.csv").write_text("id,y,x0\n1,0,0.5\n2,1,0.7\n")
    text = job_text(path=str(elsewhere / "g.csv"))
    with pytest.raises(JobSpecError, match="outside"):
        load(folder, text)
    assert load(folder, text, data_roots=[elsewhere]).parties["guest"].data.path
    monkeypatch.setenv("ATOLL_DATA_DIRS", str(elsewhere))
    assert load(folder, text).parties["guest"].data.path


# ------------------------------------------------------------------------------ the run's name
@pytest.mark.parametrize("name", ["/tmp/elsewhere/x", "../up", "a/b", ".hidden", "x" * 65])
def test_a_job_name_that_is_a_path_is_refused(folder, name):
    with pytest.raises(JobSpecError, match="name"):
        load(folder, job_text(name=repr(name)))


# ------------------------------------------------------------------------------ YAML itself
def test_an_alias_bomb_is_refused_quickly_naming_its_line(folder):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    text = job_text() + "extra:\n" + "".join(f"  {line}\n" for line in levels)
    assert len(text) < 2000
    t0 = time.perf_counter()
    with pytest.raises(JobSpecError) as e:
        load(folder, text)
    assert time.perf_counter() - t0 < 5
    assert "aliases" in str(e.value) and e.value.line is not None


def test_a_recursive_alias_is_a_job_error_not_a_recursion_error(folder):
    text = job_text() + "extra: &loop [1, *loop]\n"
    with pytest.raises(JobSpecError, match="recursive") as e:
        load(folder, text)
    assert e.value.line == text.count("\n")


@pytest.mark.parametrize("tagged", ["!!python/object/apply:os.system [echo hi]", "!!python/name:os.system",
                                    "!custom 3", "!!binary aGVsbG8="])
def test_python_and_custom_tags_are_refused_naming_the_file_and_line(folder, tagged):
    text = job_text() + f"extra: {tagged}\n"
    with pytest.raises(JobSpecError) as e:
        load(folder, text)
    assert str(e.value).startswith(f"{folder / 'job.yaml'}:{text.count(chr(10))}:"), e.value


# ------------------------------------------------------------------------------ numbers
@pytest.mark.parametrize("field, value, says", [
    ("timeout", ".inf", "timeout"),
    ("timeout", "1e12", "timeout"),
    ("key_bits", "1e20", "key_bits"),
    ("key_bits", "100000", "key_bits"),
    ("lr", ".nan", "learning_rate"),
    ("lr", "-.inf", "learning_rate"),
])
def test_absurd_numbers_fail_at_validation_not_at_run_time(folder, field, value, says):
    with pytest.raises(JobSpecError, match=says):
        load(folder, job_text(**{field: value}))


# ------------------------------------------------------------------------------ plugins
def test_plugins_import_only_modules_the_user_allows(folder, monkeypatch):
    text = job_text() + "plugins: [json]\n"
    monkeypatch.delenv("ATOLL_PLUGINS", raising=False)
    with pytest.raises(JobSpecError, match=r"plugin 'json' is not allowed.*ATOLL_PLUGINS"):
        load(folder, text)
    monkeypatch.setenv("ATOLL_PLUGINS", "json")
    assert load(folder, text).plugins == ["json"]


def test_a_good_job_still_loads(folder):
    job = load(folder, job_text())
    assert job.name == "t" and job.timeout == 60


# ------------------------------------------------------------------------------ fuzz
_yamlish = st.lists(st.sampled_from(list("abc:-[]{},&*!|>'\"\n #.0123456789") + ["  ", "!!python/", "<<", "&a ",
                                                                                  "*a", "pipeline", "parties"]),
                    max_size=60).map("".join)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=_yamlish)
def test_fuzz_the_job_loader_raises_only_job_errors(text):
    try:
        parse_job(text, "fuzz.yaml", check_data=False)
    except ConfigError:
        pass


@settings(max_examples=max(EXAMPLES // 3, 20), deadline=None, suppress_health_check=list(HealthCheck))
@given(extra=_yamlish)
def test_fuzz_a_good_job_with_hostile_extras(extra):
    try:
        parse_job(job_text(path="g.csv") + "\n" + extra, "fuzz.yaml", check_data=False)
    except ConfigError:
        pass
