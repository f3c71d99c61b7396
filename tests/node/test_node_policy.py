"""A node's own policy on a proposal, without a network: auto-approve rules, the job as this
node runs it (its own registered data resolved, the others' left by name), refusals."""

import pandas as pd
import pytest
import yaml

from atoll.node.config import AutoApprove, NodeConfig, PartnerConfig
from atoll.node.data import PolicyRefused, Registry
from atoll.node.policy import check_proposal
from atoll.node.signing import Signer
from atoll.node.store import Database

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.fixture
def shop(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'shop.db'}")
    db.upgrade()
    f = tmp_path / "purchases.csv"
    pd.DataFrame({"id": ["a", "b"], "x1": [1.0, 2.0]}).to_csv(f, index=False)
    reg = Registry(db, "shop", Signer.generate())
    reg.register("purchases", f, "id")
    reg.grant("purchases", "bank", ["reader", "psi", "split", "scale", "hetero_lr", "predict", "evaluate"])
    partners = [PartnerConfig(name=n, address="127.0.0.1:1", certificate="x.pem", signing_key="k")
                for n in ("bank", "arbiter")]
    cfg = NodeConfig(name="shop", federation="127.0.0.1:2", partners=partners)
    yield cfg, reg, f
    db.close()


def _proposal():
    text = (ROOT / "examples" / "nodes" / "credit_scoring.yaml").read_text()
    raw = yaml.safe_load(text)
    return text, {p: {"node": v["node"], "role": v["role"]} for p, v in raw["parties"].items()}


def test_own_view_resolves_only_this_nodes_data(shop):
    cfg, reg, f = shop
    text, parties = _proposal()
    d = check_proposal(cfg, reg, "job-1", "bank", text, parties)
    assert d.party == "host_0" and not d.auto_approve and d.grant["grantee"] == "bank"
    assert d.job.parties["host_0"].data.path == str(f.resolve()) and d.job.parties["host_0"].data.id == "id"
    assert d.job.parties["guest"].data.registered == "credit" and d.job.parties["guest"].data.path is None


def test_auto_approve_covers_a_partner_and_its_components(shop):
    cfg, reg, _ = shop
    text, parties = _proposal()
    comps = ["reader", "psi", "split", "scale", "hetero_lr", "predict", "evaluate"]
    cfg.auto_approve = [AutoApprove(partner="bank", components=comps)]
    assert check_proposal(cfg, reg, "job-2", "bank", text, parties).auto_approve
    cfg.auto_approve = [AutoApprove(partner="bank", components=comps[:-1])]   # evaluate not covered
    assert not check_proposal(cfg, reg, "job-3", "bank", text, parties).auto_approve
    cfg.auto_approve = [AutoApprove(partner="arbiter", components=comps)]     # another partner's rule
    assert not check_proposal(cfg, reg, "job-4", "bank", text, parties).auto_approve


def test_party_list_must_match_the_job(shop):
    cfg, reg, _ = shop
    text, parties = _proposal()
    parties["host_0"]["node"] = "arbiter"
    with pytest.raises(PolicyRefused, match="does not match"):
        check_proposal(cfg, reg, "job-5", "bank", text, parties)


def test_a_node_that_plays_no_party_or_two_is_refused(shop):
    cfg, reg, _ = shop
    text, parties = _proposal()
    raw = yaml.safe_load(text)
    raw["parties"]["arbiter"]["node"] = "shop"
    both = {p: {"node": v["node"], "role": v["role"]} for p, v in raw["parties"].items()}
    with pytest.raises(PolicyRefused, match="play more than one party"):
        check_proposal(cfg, reg, "job-6", "bank", yaml.safe_dump(raw), both)


def test_a_refusal_sent_back_to_the_initiator_never_names_this_nodes_file(shop):
    cfg, reg, f = shop
    text, parties = _proposal()
    f.unlink()
    f.mkdir()  # the registered file became a folder: the job is invalid here, and says so
    with pytest.raises(PolicyRefused) as e:
        check_proposal(cfg, reg, "job-9", "bank", text, parties)
    assert "not a regular file" in str(e.value) and "<data set purchases>" in str(e.value)
    assert str(f) not in str(e.value) and f.name not in str(e.value)
