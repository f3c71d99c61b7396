"""Joint online scoring over gRPC + mutual TLS: served scores equal `atoll predict`'s; hostile inputs."""

from __future__ import annotations

import numpy as np
import pytest

from atoll import wire
from atoll.serving.features import TableSource
from atoll.serving.protocol import HostServing, MaskKeys, ServingError, check_request, unmask_sum
from atoll.tee.envelope import x25519_keypair
from wire_audit import arrays


def _mask_keys(hosts):
    pairs = {h: x25519_keypair() for h in hosts}
    return {h: {"levels": ["masked"], "mask_keys": MaskKeys(h, pairs[h][0], {o: pairs[o][1] for o in hosts if o != h})}
            for h in hosts}


def test_served_lr_equals_atoll_predict_single_and_batch(lr_run, serving):
    guest = serving(lr_run, ["host_0", "host_1"])
    ids = [str(i) for i in lr_run["predict"].index[:60]]
    want = lr_run["predict"].loc[[int(i) for i in ids], "score"].to_numpy()
    one = guest.score([ids[0]])
    assert one.level == "plain-partial" and one.versions == ["v1"]
    np.testing.assert_allclose(one.scores, want[:1], rtol=0, atol=1e-12)
    batch = guest.score(ids[:50])
    np.testing.assert_allclose(batch.scores, want[:50], rtol=0, atol=1e-12)
    # the guest's features may come with the request instead of from its source
    feats = TableSource.from_file(lr_run["files"]["guest"]).lookup(ids[50:])
    np.testing.assert_allclose(guest.score(ids[50:], features=feats).scores, want[50:], rtol=0, atol=1e-12)


def test_masked_lr_equals_predict_and_guest_sees_no_partial_score(lr_run, serving, monkeypatch):
    hosts = ["host_0", "host_1"]
    keys = _mask_keys(hosts)
    seen = []
    real = HostServing.answer

    def audit(self, caller, payload):
        out = real(self, caller, payload)
        seen.append((self, wire.loads(payload), wire.loads(out)))
        return out

    monkeypatch.setattr(HostServing, "answer", audit)
    guest = serving(lr_run, hosts, level="masked", host_kw=keys)
    ids = [str(i) for i in lr_run["predict"].index[:40]]
    want = lr_run["predict"].loc[[int(i) for i in ids], "score"].to_numpy()
    got = guest.score(ids)
    assert got.level == "masked"
    np.testing.assert_allclose(got.scores, want, rtol=0, atol=1e-8)
    assert len(seen) == 2
    for host, req, ans in seen:
        part = host.versions["v1"]
        plain = part.adapter.partial(part.model, part.matrix(host.source.lookup(req["ids"])), host.party)
        for a in arrays(ans):
            assert a.dtype == np.uint64
            assert not np.allclose(a.view(np.int64) / 2.0 ** 32, plain, atol=1e-3)
        assert "partial" not in ans


def test_mask_sums_cancel_pure():
    hosts = ["h0", "h1", "h2"]
    pairs = {h: x25519_keypair() for h in hosts}
    ids = ["a", "b", "c"]
    parts = {h: np.array([1.5, -2.25, 3.0]) * (k + 1) for k, h in enumerate(hosts)}
    from atoll.serving.protocol import mask_partial
    masked = {h: mask_partial(parts[h], MaskKeys(h, pairs[h][0], {o: pairs[o][1] for o in hosts if o != h}),
                              "s", "v", ids) for h in hosts}
    np.testing.assert_allclose(unmask_sum(masked, 3), sum(parts.values()), atol=1e-9)
    with pytest.raises(Exception):
        unmask_sum({"h0": np.zeros(2, np.uint64)}, 3)


def test_unknown_id_and_malformed_requests_are_clear_bounded_errors(lr_run, serving):
    guest = serving(lr_run, ["host_0", "host_1"])
    with pytest.raises(ServingError) as e:
        guest.score(["no-such-id"])
    assert e.value.category == "unknown_id" and e.value.status == 404
    for bad in ([], ["x" * 500], [None], list(range(2000))):
        with pytest.raises(ServingError) as e:
            guest.score(bad)
        assert e.value.category == "bad_request"
    for body in ({"session": "s1"}, [1, 2], {"session": "s1", "version": "v1", "level": "plain-partial",
                                              "ids": [{"x": 1}]}):
        with pytest.raises(ServingError):
            check_request(body)


def test_host_refuses_garbage_strangers_and_unknown_versions(lr_run, host_for):
    host = host_for(lr_run, "host_0")
    assert wire.loads(host.answer("guest", b"\x00garbage"))["error"] == "bad_request"
    req = wire.dumps({"session": "s1", "version": "v1", "level": "plain-partial", "ids": ["1"]})
    assert wire.loads(host.answer("mallory", req))["error"] == "refused"
    assert wire.loads(host.answer(None, req))["error"] == "refused"
    other = wire.dumps({"session": "s1", "version": "v9", "level": "plain-partial", "ids": ["1"]})
    assert wire.loads(host.answer("guest", other))["error"] == "unknown_version"
    masked = wire.dumps({"session": "s1", "version": "v1", "level": "masked", "ids": ["1"]})
    assert wire.loads(host.answer("guest", masked))["error"] == "level_refused"
    missing = wire.loads(host.answer("guest", wire.dumps({"session": "s1", "version": "v1",
                                                          "level": "plain-partial", "ids": ["secret-id-42"]})))
    assert missing == {"error": "unknown_id", "step": "lookup"}  # no id, no count of rows, no path


def test_served_secureboost_equals_atoll_predict(sb_run, serving):
    guest = serving(sb_run, ["host_0"])
    ids = [str(i) for i in sb_run["predict"].index[:50]]
    want = sb_run["predict"].loc[[int(i) for i in ids], "score"].to_numpy()
    np.testing.assert_allclose(guest.score(ids).scores, want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(guest.score(ids[:1]).scores, want[:1], rtol=0, atol=1e-12)


def test_masked_secureboost_equals_predict_and_the_guest_sees_only_ciphertexts(sb_run, serving, monkeypatch):
    from atoll.crypto.cipherarray import CipherArray

    seen = []
    real = HostServing.answer

    def audit(self, caller, payload):
        out = real(self, caller, payload)
        seen.append((wire.loads(payload), wire.loads(out)))
        return out

    monkeypatch.setattr(HostServing, "answer", audit)
    guest = serving(sb_run, ["host_0"], level="masked", host_kw={"host_0": {"levels": ["masked"]}}, he_key_bits=1024)
    ids = [str(i) for i in sb_run["predict"].index[:20]]
    want = sb_run["predict"].loc[[int(i) for i in ids], "score"].to_numpy()
    got = guest.score(ids)
    assert got.level == "masked"
    np.testing.assert_allclose(got.scores, want, rtol=0, atol=1e-9)
    (req, ans), = seen
    assert isinstance(req["query"], CipherArray) and req["query"].shape[0] == 20     # the host sees ciphertexts
    assert isinstance(ans["masked"], CipherArray) and ans["masked"].shape == (20,)   # one per row: the margin
    assert "partial" not in ans and not list(arrays(ans))                             # no leaf bit matrix
    # a query under a short key, or of another shape, is refused by the host
    host = guest.hosts["host_0"]
    small = wire.dumps({**req, "query": req["query"][:, :1]})
    assert wire.loads(host.call(small, 5.0))["error"] == "bad_request"
    from atoll.serving.parts import part_from_run
    from atoll.serving.protocol import GuestServing
    from atoll.serving.replicas import ReplicaSet

    two = {h: ReplicaSet(h, ["127.0.0.1:9"], None, health_interval=0) for h in ("host_0", "host_1")}
    with pytest.raises(Exception, match="exactly one host"):
        GuestServing("guest", "s1", {"v1": part_from_run(sb_run["run"], "guest", "train")}, two, level="masked")
    for rs in two.values():
        rs.close()


_REAL_ANSWER = HostServing._answer


def _wrong_shape(self, caller, payload):
    """host_0 answers with one partial score too many (or garbage bit matrices)."""
    ans = wire.loads(_REAL_ANSWER(self, caller, payload))
    if self.party == "host_0":
        p = ans["partial"]
        ans["partial"] = np.append(p, 0.5) if isinstance(p, np.ndarray) else (p[0], (p[1][0], p[1][1] + 1))
    return wire.dumps(ans)


@pytest.mark.parametrize("which", ["lr", "sb"])
def test_host_answering_with_the_wrong_shape_is_a_clear_error(which, lr_run, sb_run, serving, monkeypatch):
    run, hosts = (lr_run, ["host_0", "host_1"]) if which == "lr" else (sb_run, ["host_0"])
    monkeypatch.setattr(HostServing, "_answer", _wrong_shape)
    guest = serving(run, hosts)
    with pytest.raises(ServingError) as e:
        guest.score([str(i) for i in run["predict"].index[:5]])
    assert e.value.category == "bad_answer" and "host_0" in str(e.value) and e.value.status == 502


def test_host_that_never_answers_gives_a_timeout_error_within_the_bound(lr_run, serving, monkeypatch):
    import threading
    import time

    release = threading.Event()
    real = HostServing.answer

    def stuck(self, caller, payload):
        if self.party == "host_1":
            release.wait(30)
        return real(self, caller, payload)

    monkeypatch.setattr(HostServing, "answer", stuck)
    guest = serving(lr_run, ["host_0", "host_1"], timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(ServingError) as e:
        guest.score([str(lr_run["predict"].index[0])])
    took = time.monotonic() - t0
    release.set()
    assert e.value.category == "timeout" and e.value.peer == "host_1" and e.value.status == 504
    assert took < 5.0  # bounded by the configured 0.5 s (generous margin for a loaded machine)


def test_caller_without_a_guest_certificate_is_refused(lr_run, serving, tls_of):
    from atoll.serving.replicas import ReplicaSet

    guest = serving(lr_run, ["host_0", "host_1"])
    addr = guest.hosts["host_0"].replicas[0].address
    intruder = ReplicaSet("host_0", [addr], tls_of("mallory"), health_interval=0)
    try:
        ans = wire.loads(intruder.call(wire.dumps({"session": "s1", "version": "v1", "level": "plain-partial",
                                                   "ids": ["1"]}), 2.0))
        assert ans == {"error": "refused", "step": "auth"}
        assert intruder.health(intruder.replicas[0]) is None
    finally:
        intruder.close()


@pytest.mark.parametrize("component", ["hetero_linr", "hetero_poisson"])
def test_served_linear_and_poisson_regression_equal_atoll_predict(component, glm_runs, serving):
    run = glm_runs(component)
    ids = [str(i) for i in run["predict"].index[:30]]
    want = run["predict"].loc[[int(i) for i in ids], "score"].to_numpy()
    for level, kw in (("plain-partial", {}), ("masked", _mask_keys(["host_0", "host_1"]))):
        guest = serving(run, ["host_0", "host_1"], level=level, host_kw=kw)
        np.testing.assert_allclose(guest.score(ids).scores, want, rtol=1e-9, atol=1e-8)
