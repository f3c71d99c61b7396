"""Memory before data: what a hostile peer's bytes can make a receiver hold (issue 19).

Each probe runs the receiver in its own process (``receiver.py``) and reads that process's
peak RSS (getrusage) and current RSS (psutil) before and after the attack, so the figures
are the receiver's alone and do not depend on what this test process did before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from atoll import wire
from atoll.errors import WireError
try:
    from atoll.federation.transport import Mailbox, MailboxFull
except ImportError:
    Mailbox = MailboxFull = None

MB = 1 << 20
HERE = Path(__file__).parent
ROOT = HERE.parent.parent
#: the child processes import this checkout's atoll, whatever is installed
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


class Receiver:
    def __init__(self, limits: dict | None = None):
        self.proc = subprocess.Popen([sys.executable, str(HERE / "receiver.py"), json.dumps(limits or {})],
                                     env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.push = self.channel.stream_unary("/atoll.Federation/Push")

    def ask(self, cmd: str) -> str:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        self.channel.close()
        try:
            self.ask("quit")
        except (BrokenPipeError, ValueError):
            pass
        self.proc.wait(timeout=20)


@pytest.fixture
def receiver():
    made = []

    def make(limits=None):
        made.append(Receiver(limits))
        return made[-1]

    yield make
    for r in made:
        r.close()


def header(size: int, msg_id: str = "m1", key: str = "k") -> bytes:
    return wire.dumps({"id": msg_id, "job": "j", "sender": "a", "receiver": "b",
                       "address": f"j/main/{key}", "size": size})


def test_a_push_claiming_1gib_with_no_payload_costs_the_receiver_almost_nothing(receiver):
    r = receiver()
    before = int(r.ask("peak"))
    for i in range(4):  # a few of them, one after the other
        with pytest.raises(grpc.RpcError) as e:
            r.push(iter([header(1 << 30, f"m{i}")]), timeout=20)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "truncated" in e.value.details()
    grew = int(r.ask("peak")) - before
    assert grew < 50 * MB, f"peak RSS grew by {grew / MB:.0f} MB"
    assert json.loads(r.ask("stats"))["bytes"] == 0


def test_messages_to_addresses_nobody_reads_are_bounded_per_peer(receiver):
    r = receiver({"max_peer_bytes": 64 * MB})
    chunk = b"\x01" * (4 * MB - 64 * 1024)
    base = int(r.ask("rss"))
    refused = 0
    for i in range(12):  # 12 x ~16 MB to addresses nobody reads
        try:
            r.push(iter([header(4 * len(chunk), f"m{i}", f"unread{i}")] + [chunk] * 4), timeout=20)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
            refused += 1
    stats = json.loads(r.ask("stats"))
    assert stats["bytes"] <= 64 * MB and refused == 12 - stats["messages"] >= 8
    held = int(r.ask("rss")) - base
    assert held < 64 * MB + 64 * MB, f"RSS grew by {held / MB:.0f} MB"  # unbounded: 12 x 16 MB held, ~225 MB


def test_mailbox_bounds_messages_bytes_and_drops_what_nobody_reads():
    now = [0.0]
    mb = Mailbox("b", "j", ["a", "b", "c"], max_peer_bytes=100, max_job_bytes=150, max_peer_messages=3,
                 expire_after=60.0, clock=lambda: now[0])
    for i in range(3):
        mb.deliver("a", f"j/t/k{i}", b"x")
    with pytest.raises(MailboxFull, match="3 messages at most"):
        mb.deliver("a", "j/t/k3", b"x")
    with pytest.raises(MailboxFull, match="100 bytes at most from 'c'"):
        mb.deliver("c", "j/t/big", b"x" * 101)
    mb.deliver("c", "j/t/k", b"x" * 100)
    assert mb.take("a", "j/t/k0", 1, "k0") == b"x"  # taking frees room
    with pytest.raises(MailboxFull, match="150 bytes at most in job"):
        mb.reserve("a", 60)  # a's 62 bytes fit its own bound, not the job's with c's 100
    mb.reserve("a", 40)
    mb.deliver("a", "j/t/k3", b"x" * 40, reserved=40)
    now[0] = 61.0  # nobody read them for a minute: dropped on the next delivery
    mb.deliver("c", "j/t/fresh", b"y")
    assert mb.stats() == {"messages": 1, "bytes": 1, "failed": 0, "ids": 0}
    mb.close()
    assert mb.stats()["bytes"] == 0


@pytest.mark.parametrize("attack", ["empty_dicts", "empty_lists", "one_char_strings", "bigints_width_1"])
def test_10mb_of_adversarial_codec_input_decodes_under_200mb_or_is_refused(attack):
    code = f"""
import resource, sys
from atoll import wire
from atoll.errors import WireError
n = 5_000_000
body = {{"empty_dicts": bytes([9, 0]) * n, "empty_lists": bytes([7, 0]) * n,
        "one_char_strings": bytes([5, 1, 97]) * (n * 2 // 3)}}.get({attack!r})
if body is None:  # 10 MB of one-byte big integers
    data = bytes([1, 11, 1, 1]) + wire._uvarint(10_000_000) + bytes(10_000_000)
else:
    count = n if {attack!r} != "one_char_strings" else n * 2 // 3
    data = bytes([1, 7]) + wire._uvarint(count) + body
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
try:
    wire.loads(data)
    outcome = "decoded"
except WireError:
    outcome = "refused"
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
print(len(data), outcome, grew)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env=ENV)
    assert out.returncode == 0, out.stderr
    size, outcome, grew = out.stdout.split()
    assert int(size) >= 10_000_000
    assert int(grew) < 200 * MB, f"{attack}: {outcome}, peak RSS grew by {int(grew) / MB:.0f} MB"


def test_ordinary_values_still_decode_within_the_bound():
    ids = [f"id{i:07d}" for i in range(200_000)]  # strings, ints, floats, nested records
    rows = [{"i": i, "w": float(i), "ok": True} for i in range(50_000)]
    value = {"ids": ids, "rows": rows, "x": np.arange(10).reshape(2, 5), "n": list(range(100_000))}
    back = wire.loads(wire.dumps(value))
    assert back["ids"] == ids and back["rows"] == rows and back["n"] == value["n"]
    with pytest.raises(WireError, match="refused as hostile"):
        wire.loads(bytes([1, 7]) + wire._uvarint(4_000_000) + bytes([9, 0]) * 4_000_000)
