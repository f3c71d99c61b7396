"""Compiled tree routing gives exactly the leaf sets of SecureBoost's node-by-node walk (missing values too)."""

import numpy as np

from atoll.ml.vertical.boosting_core import reachable_leaves
from atoll.ml.vertical.secureboost import _threshold_left
from atoll.serving.parts import part_from_run
from atoll.serving.trees import compile_guest, compile_host


def test_compiled_routing_equals_the_walk(sb_run):
    host = part_from_run(sb_run["run"], "host_0", "train").model.model
    guest = part_from_run(sb_run["run"], "guest", "train").model.model
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 10)) * 3
    x[rng.random(x.shape) < 0.2] = np.nan
    xg = rng.normal(size=(64, 13)) * 3
    xg[rng.random(xg.shape) < 0.2] = np.nan
    routing = compile_host(host, "host_0")
    got = np.split(routing.reach(x), routing.starts[1:], axis=1)
    for t, (topo, lookup) in enumerate(zip(host.topologies, host.lookup)):
        def decide(node, lookup=lookup):
            f, thr, ml = lookup[node]
            return _threshold_left(x[:, f], thr, ml)
        want = reachable_leaves(topo["left"], topo["right"], topo["owner"], "host_0", decide, len(x))
        np.testing.assert_array_equal(got[t], want)
    routing, _ = compile_guest(guest)
    mine = np.split(routing.reach(xg), routing.starts[1:], axis=1)
    for t, tree in enumerate(guest.trees):
        def decide(node, tree=tree):
            return _threshold_left(xg[:, tree.feature[node]], tree.threshold[node], tree.missing_left[node])
        want = reachable_leaves(np.asarray(tree.left), np.asarray(tree.right), tree.owner, "guest", decide, len(xg))
        np.testing.assert_array_equal(mine[t], want)
