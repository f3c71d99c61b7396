"""The board tests' shared fixtures: two real nodes for the session (see ``boardfed``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from boardfed import COMPONENTS, BoardFed, Org, serve, free_ports, job_text  # noqa: E402


@pytest.fixture(scope="session")
def board_fed(tmp_path_factory):
    import httpx
    import pandas as pd

    from atoll import datasets
    from atoll.federation.certs import init_certs
    from atoll.node.config import NodeConfig, add_partner, init_node
    from atoll.node.service import Node

    tmp = tmp_path_factory.mktemp("board_orgs")
    init_certs([], tmp / "ca")
    names = ("bank", "shop")
    ports = free_ports(4)
    made = {}
    for i, n in enumerate(names):
        cfg, boot = init_node(n, tmp / n, f"127.0.0.1:{ports[i]}", f"127.0.0.1:{ports[2 + i]}", tmp / "ca")
        made[n] = boot
    for n in names:
        for other in names:
            if other != n:
                add_partner(tmp / n / "node.yaml", tmp / other / "card.yaml")
    fed = BoardFed(tmp)
    try:
        for i, n in enumerate(names):
            node = Node(NodeConfig.load(tmp / n / "node.yaml"), peer_wait_step=0.5)
            server, thread = serve(node, ports[2 + i])
            org = Org(n, tmp / n, f"http://127.0.0.1:{ports[2 + i]}", node, server, thread)
            fed.orgs[n] = org
            org.tokens["admin"] = httpx.post(org.url + "/api/v1/auth/bootstrap",
                                             json={"token": made[n], "user": "admin"}).json()["token"]
        shop, bank = fed["shop"], fed["bank"]
        shop.tokens["viewer"] = shop.client().post("/users", {"name": "vera", "role": "viewer"})["token"]
        pd.read_csv(datasets.path("default_credit", "hetero", "guest")).head(300).to_csv(tmp / "bank" / "credit.csv",
                                                                                         index=False)
        host = pd.read_csv(datasets.path("default_credit", "hetero", "host")).head(300)
        host.to_csv(tmp / "shop" / "purchases.csv", index=False)
        host.to_csv(tmp / "shop" / "fragile.csv", index=False)
        bank.client().post("/data", {"name": "credit", "path": str(tmp / "bank" / "credit.csv"), "id": "id",
                                     "label": "y"})
        bank.client().post("/grants", {"dataset": "credit", "grantee": "shop", "components": COMPONENTS})
        for ds in ("purchases", "fragile"):
            shop.client().post("/data", {"name": ds, "path": str(tmp / "shop" / f"{ds}.csv"), "id": "id"})
            shop.client().post("/grants", {"dataset": ds, "grantee": "bank", "components": COMPONENTS})
        yield fed
    finally:
        fed.close()


@pytest.fixture(scope="session")
def done_job(board_fed):
    """One job run to the end across both nodes (submitted at bank, approved at shop), through the API."""
    j = board_fed["bank"].client().post("/jobs", {"job_text": job_text("board_done")})
    board_fed.pending_at("shop", j["id"])
    board_fed["shop"].client().post(f"/jobs/{j['id']}/approve", {"reason": "ok"})
    end = board_fed.ended("bank", j["id"])
    assert end["state"] == "done", end
    board_fed.ended("shop", j["id"])
    return end
