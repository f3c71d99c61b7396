"""Context semantics over the in-process transport, and the thread launcher."""

from __future__ import annotations

import time

import numpy as np
import pytest

from atoll.errors import FederationTimeout, PeerFailed, UnknownParty
from atoll.federation import Context, InProcessHub, Party, PartyFailed, launch

import fed_protocols as fp

PARTIES = {"guest": "guest", "host_0": "host", "host_1": "host", "arbiter": "arbiter"}


def contexts(job_id="job", hub=None):
    hub = hub or InProcessHub(PARTIES)
    return {p: Context(p, PARTIES, hub.transport(p), job_id=job_id, timeout=5) for p in PARTIES}, hub


def test_send_to_role_reaches_all_its_parties_and_gather_collects():
    ctx, _ = contexts()
    ctx["guest"].send("host", "x", np.arange(3))
    assert ctx["host_0"].recv("guest", "x").tolist() == [0, 1, 2]
    assert ctx["host_1"].recv("guest", "x").tolist() == [0, 1, 2]
    ctx["host_0"].send("guest", "y", 1)
    ctx["host_1"].send("guest", "y", 2)
    assert ctx["guest"].gather("host", "y") == {"host_0": 1, "host_1": 2}
    assert ctx["guest"].parties_of("host") == ["host_0", "host_1"]


def test_scopes_separate_messages_with_the_same_key():
    ctx, _ = contexts()
    for epoch in (1, 2):
        with ctx["guest"].scope("epoch", epoch):
            ctx["guest"].send("arbiter", "loss", epoch * 10)
    with ctx["arbiter"].scope("epoch", 2):
        assert ctx["arbiter"].recv("guest", "loss") == 20
    with ctx["arbiter"].scope("epoch", 1):
        assert ctx["arbiter"].recv("guest", "loss") == 10


def test_two_jobs_between_the_same_parties_do_not_mix():
    hub = InProcessHub(PARTIES)
    a, _ = contexts("job-a", hub)
    b, _ = contexts("job-b", hub)
    assert fp.two_jobs_side_by_side(a, b, "host_0", "host_0", 50) == {"a": list(range(50)),
                                                                      "b": list(range(1000, 1050))}


def test_timeout_names_party_key_and_scope():
    ctx, _ = contexts()
    with ctx["guest"].scope("epoch", 3):
        with pytest.raises(FederationTimeout, match=r"party 'host_0' did not send 'residual' \(epoch=3\).*within 0.2 s"):
            ctx["guest"].recv("host_0", "residual", timeout=0.2)


def test_unknown_names_are_refused_clearly():
    ctx, _ = contexts()
    with pytest.raises(UnknownParty, match="neither a party nor a role"):
        ctx["guest"].send("bank", "x", 1)
    with pytest.raises(UnknownParty, match="use gather"):
        ctx["guest"].recv("host", "x")
    with pytest.raises(UnknownParty):
        Context("mallory", PARTIES, InProcessHub(PARTIES).transport("guest"))


def test_launch_threads_runs_every_party():
    out = launch({"guest": Party("guest", fp.echo_rounds, {"rounds": 3}),
                  "host_0": Party("host", fp.echo_rounds, {"rounds": 3}),
                  "host_1": Party("host", fp.echo_rounds, {"rounds": 3})})
    assert out["guest"][2] == {"host_0": [2.0] * 3, "host_1": [4.0] * 3}


def test_a_failing_party_stops_the_others_promptly_and_is_named():
    t = time.perf_counter()
    with pytest.raises(PartyFailed, match="party 'host_0' failed: ValueError: host data is broken") as e:
        launch({"guest": Party("guest", fp.wait_for_result), "host_0": Party("host", fp.fail_after_hello)},
               timeout=60)
    assert time.perf_counter() - t < 5
    assert e.value.party == "host_0" and isinstance(e.value.error, ValueError)


def test_peer_failure_reaches_a_waiting_receiver():
    ctx, hub = contexts()
    hub.transport("host_0").abort("ValueError: boom")
    with pytest.raises(PeerFailed, match="party 'host_0' failed before sending 'x'.*boom"):
        ctx["guest"].recv("host_0", "x")


def test_recorder_sees_every_message_as_bytes():
    seen = []
    launch({"guest": Party("guest", fp.echo_rounds, {"rounds": 2}),
            "host_0": Party("host", fp.echo_rounds, {"rounds": 2})},
           recorder=lambda s, r, a, p: seen.append((s, r, a, type(p))))
    assert len(seen) == 4 and all(t is bytes for *_, t in seen)
    assert {a.split("/", 2)[2] for _, _, a, _ in seen} == {"round=0/x", "round=0/y", "round=1/x", "round=1/y"}
