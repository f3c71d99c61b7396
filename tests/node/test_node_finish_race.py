"""A late 'finish: failed' of an older attempt must not stop the attempt that resumed the job.

The race behind ``test_late_node_is_waited_for_and_a_killed_node_restarts_into_the_job`` failing
once with ``'failed' == 'done'``: the initiator tells every node that attempt 1 failed, retrying
a node that is down until it is back; that node restarts, asks to resume, and the initiator
starts attempt 2 there — and the retried 'finish: failed' (of attempt 1) can land after that
start, stopping attempt 2. The message now names its attempt, and an older one is recorded only.
"""

from types import SimpleNamespace

from atoll.node.service import Node


class StandIn:
    """The parts of a Node that _msg_finish uses, recording what it did."""

    def __init__(self, attempt: int, state: str = "running"):
        self.job = SimpleNamespace(id="J", attempt=attempt, state=state)
        self.stopped, self.set, self.events = [], [], []
        self.audit = SimpleNamespace(append=lambda kind, **kw: self.events.append(kind))

    def _job_of(self, sender, payload, initiator_only=False):
        return self.job

    def _stop_local(self, job_id, why):
        self.stopped.append(why)

    def _set(self, job_id, **fields):
        self.set.append(fields)

    def _keep_head(self, head, party):
        pass


def finish(node, **payload):
    return Node._msg_finish(node, "bank", {"job_id": "J", "state": "failed", "message": "x", **payload}, "e")


def test_a_late_failure_of_attempt_1_leaves_attempt_2_running():
    node = StandIn(attempt=2)
    finish(node, attempt=1)
    assert node.stopped == [] and node.set == [] and node.events == ["job.finished_stale"]


def test_the_failure_of_the_current_attempt_still_stops_it():
    node = StandIn(attempt=2)
    finish(node, attempt=2)
    assert node.stopped and node.set[0]["state"] == "failed" and node.events == ["job.finished"]


def test_a_finish_without_an_attempt_from_an_older_initiator_is_obeyed():
    node = StandIn(attempt=2)
    finish(node)
    assert node.stopped and node.set[0]["state"] == "failed"
