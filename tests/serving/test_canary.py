"""Canary release by request id, publication across parties, hash pinning, promotion and rollback."""

from __future__ import annotations

import numpy as np
import pytest

from atoll.errors import ConfigError
from atoll.serving.canary import VersionRouter, bucket
from atoll.serving.protocol import ServingError


def test_router_is_deterministic_and_splits_in_the_configured_share():
    r = VersionRouter("v1", "v2", 0.3, salt="credit")
    ids = [f"client-{k}" for k in range(4000)]
    first = [r.version_for(i) for i in ids]
    assert first == [r.version_for(i) for i in ids]                       # same id, same version
    assert first == [VersionRouter("v1", "v2", 0.3, salt="credit").version_for(i) for i in ids]  # any replica
    share = first.count("v2") / len(ids)
    assert abs(share - 0.3) < 0.03                                         # 4 sd of a binomial share
    # raising the share only moves ids from stable to canary (buckets are fixed per id)
    r.start_canary("v2", 0.5)
    assert all(r.version_for(i) == "v2" for i, v in zip(ids, first) if v == "v2")
    assert 0.0 <= bucket("s", "x") < 1.0
    r.rollback()
    assert {r.version_for(i) for i in ids} == {"v1"}
    with pytest.raises(ConfigError):
        r.rollback()


def test_canary_scores_each_id_with_its_version_and_rollback_restores(lr_run, lr_run_v2, serving):
    guest = serving(lr_run, ["host_0", "host_1"], versions={"v1": lr_run, "v2": lr_run_v2})
    ids = [str(i) for i in lr_run["predict"].index[:80]]
    v1 = lr_run["predict"].loc[[int(i) for i in ids], "score"].to_numpy()
    v2 = lr_run_v2["predict"].loc[[int(i) for i in ids], "score"].to_numpy()
    assert np.max(np.abs(v1 - v2)) > 1e-3                                 # the versions really differ
    before = guest.score(ids)
    np.testing.assert_allclose(before.scores, v1, atol=1e-12)
    with pytest.raises(ConfigError, match="publish"):
        guest.start_canary("v2", 0.25)
    shas = guest.publish("v2")
    assert set(shas) == {"host_0", "host_1"}
    guest.start_canary("v2", 0.25)
    got = guest.score(ids)
    on_canary = np.array([v == "v2" for v in got.versions])
    assert 0 < on_canary.sum() < len(ids)
    np.testing.assert_allclose(got.scores[on_canary], v2[on_canary], atol=1e-12)
    np.testing.assert_allclose(got.scores[~on_canary], v1[~on_canary], atol=1e-12)
    assert got.versions == guest.score(ids).versions                      # stable per id
    assert set(got.sha256) == {"v1", "v2"}
    guest.router.promote()
    np.testing.assert_allclose(guest.score(ids).scores, v2, atol=1e-12)
    guest.router.rollback()                                               # the previous version, every id
    after = guest.score(ids)
    assert set(after.versions) == {"v1"}
    np.testing.assert_allclose(after.scores, before.scores, atol=0)


def test_publication_needs_every_host_and_pinned_hashes_are_enforced(lr_run, lr_run_v2, serving):
    guest = serving(lr_run, ["host_0", "host_1"], versions={"v1": lr_run, "v2": lr_run_v2},
                    host_kw={"host_1": {"versions": {"v1": lr_run}}})
    with pytest.raises(ConfigError, match="host_1 does not serve version 'v2'"):
        guest.publish("v2")
    assert "v2" not in guest.published
    # a host serving another part under the pinned version name is refused per request
    guest.manifest["v1"] = {"host_0": "0" * 64}
    with pytest.raises(ServingError) as e:
        guest.score([str(lr_run["predict"].index[0])])
    assert e.value.category == "bad_answer" and e.value.peer == "host_0"
    with pytest.raises(ConfigError, match="manifest"):
        guest.publish("v1")
