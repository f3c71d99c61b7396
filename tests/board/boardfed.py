"""Two real nodes (bank = guest, shop = host) on 127.0.0.1 for the board's tests (``conftest.py``
makes them once per session; this module holds the helpers the tests import).

Each node is the real :class:`~atoll.node.service.Node` (its own store, certificate,
federation endpoint on a free port) with its REST app — board included — served by uvicorn
on another free port, in this process (threads) so the pair starts in a few seconds; each
job's party still runs in the node's worker process, as with ``atoll node start``. Bank and
shop bootstrap an admin each; shop also has a viewer. Data: 300 rows of the bundled
default_credit set each (guest part with labels at bank, host part at shop), granted both
ways; ``fragile`` at shop is a data set whose file the tests change after registering it,
so a job using it fails at the host's first step.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).parents[1] / "node"))
from harness import free_ports, wait_for  # noqa: E402,F401 - the node tests' helpers, shared

COMPONENTS = ["reader", "psi", "split", "scale", "hetero_lr", "predict", "evaluate"]


def job_text(name: str, host_data: str = "purchases", max_iter: int = 2) -> str:
    """A two-party credit-scoring job (hetero LR without arbiter, 1024-bit keys: a test's size)."""
    return yaml.safe_dump({
        "name": name, "seed": 7,
        "parties": {"guest": {"role": "guest", "node": "bank", "data": {"registered": "credit"}},
                    "host_0": {"role": "host", "node": "shop", "data": {"registered": host_data}}},
        "pipeline": [
            {"id": "read", "component": "reader"},
            {"id": "align", "component": "psi", "inputs": {"data": "read.data"}},
            {"id": "split", "component": "split", "inputs": {"data": "align.data"},
             "params": {"test_size": 0.3, "stratify": True}},
            {"id": "scale", "component": "scale", "inputs": {"train": "split.train", "test": "split.test"}},
            {"id": "train", "component": "hetero_lr", "inputs": {"train": "scale.train"},
             "params": {"mode": "two_party", "key_bits": 1024, "max_iter": max_iter, "batch_size": 4096,
                        "learning_rate": 0.1}},
            {"id": "predict", "component": "predict", "inputs": {"model": "train.model", "data": "scale.test"}},
            {"id": "evaluate", "component": "evaluate", "inputs": {"scores": "predict.scores"}},
        ]}, sort_keys=False)


@dataclass
class Org:
    name: str
    folder: Path
    url: str
    node: Any
    server: Any
    thread: threading.Thread
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, who: str = "admin"):
        from atoll.node.client import NodeClient

        return NodeClient(self.url, self.tokens[who])


class BoardFed:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.orgs: dict[str, Org] = {}

    def __getitem__(self, name: str) -> Org:
        return self.orgs[name]

    def ended(self, node: str, job_id: str, timeout: float = 90) -> dict:
        c = self.orgs[node].client()
        return wait_for(lambda: (j := c.get(f"/jobs/{job_id}"))["state"] in ("done", "failed", "rejected",
                                                                              "cancelled") and j,
                        timeout, f"job {job_id} ending at {node}")

    def pending_at(self, node: str, job_id: str, timeout: float = 30) -> None:
        c = self.orgs[node].client()
        wait_for(lambda: any(j["id"] == job_id for j in c.get("/jobs", params={"state": "pending"})), timeout,
                 f"job {job_id} pending at {node}")

    def close(self) -> None:
        for org in self.orgs.values():
            org.server.should_exit = True
        for org in self.orgs.values():
            org.thread.join(10)
            org.node.close()


def serve(node: Any, port: int) -> tuple[Any, threading.Thread]:
    import uvicorn

    from atoll.node.api import build_app

    server = uvicorn.Server(uvicorn.Config(build_app(node), host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=2))
    t = threading.Thread(target=server.run, name=f"uvicorn-{node.name}", daemon=True)
    t.start()
    wait_for(lambda: server.started, 30, f"the REST app of {node.name}")
    return server, t
