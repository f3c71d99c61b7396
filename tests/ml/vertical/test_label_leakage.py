"""Label leakage of split learning: the norm and direction attacks on the gradients a host really
receives (default_credit, plain and secret-shared layers), and the guest's defences bringing the
norm attack's AUC towards 0.5, with the model's AUC cost on held-out rows."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

from sklearn.metrics import roc_auc_score  # noqa: E402

from atoll import datasets  # noqa: E402
from atoll.ml.vertical import hetero_nn as H  # noqa: E402
from atoll.ml.vertical import label_leakage as L  # noqa: E402


def test_attacks_and_defences_on_synthetic_gradients():
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.2).astype(float)
    # binary logit: dL/dlogit = p - y times a fixed direction; positives are rarer and larger
    p = np.where(y == 1, 0.3, 0.2)
    g = (p - y)[:, None] * np.array([0.5, -1.0, 2.0])[None, :]
    assert L.norm_attack_auc(g, y) == 1.0 and L.direction_attack_auc(g, y) == 1.0
    assert L.norm_attack_auc(g, np.zeros(2000)) is None
    clipped = L.clip_rows(g, 0.1)
    assert np.linalg.norm(clipped, axis=1).max() <= 0.1 + 1e-12
    mx = L.defend(g, "max_norm", rng)
    assert abs(L.norm_attack_auc(mx, y) - 0.5) < 0.1
    nz = L.defend(g, "noise", rng, clip_norm=0.1, noise_multiplier=2.0)
    assert abs(L.norm_attack_auc(nz, y) - 0.5) < 0.1
    assert np.array_equal(L.defend(g, "none", rng), g)
    avg = L.defend(g, "group_average", rng, group_size=8)
    assert L.norm_attack_auc(avg, y) < 0.8 and np.allclose(avg.sum(0), g.sum(0))
    e1, e2 = L.noise_epsilon(1.0, 5), L.noise_epsilon(4.0, 5)
    assert math.isfinite(e1) and e2 < e1 and L.noise_epsilon(0.0, 1) == math.inf


@pytest.fixture(scope="module")
def credit():
    g = datasets.load("default_credit", "hetero", "guest")
    h = datasets.load("default_credit", "hetero", "host")
    y = g["y"].to_numpy(float)
    idx = np.random.default_rng(1).permutation(len(y))
    return g.drop(columns=["y"]).to_numpy(float), h.to_numpy(float), y, idx[:3000], idx[-2000:]


def _run(credit, **kw):
    xg, xh, y, tr, te = credit
    p = H.HeteroNNParams(epochs=2, batch_size=256, noise_seed=7, **kw)
    probe: list = []
    gm, hm = H.simulate_fit(p, xg[tr], y[tr], {"host_0": xh[tr]}, probes={"host_0": probe})
    auc = roc_auc_score(y[te], H.simulate_predict(p, gm, hm, xg[te], {"host_0": xh[te]}))
    last = probe[len(probe) // 2:]                     # the last epoch, as the host received it
    rows = np.concatenate([r for r, _ in last])
    grads = np.concatenate([g for _, g in last])
    labels = y[tr][rows]
    return auc, L.norm_attack_auc(grads, labels), L.direction_attack_auc(grads, labels), gm


def test_norm_attack_succeeds_without_defence_and_fails_with_it(credit):
    auc0, norm0, dir0, h0 = _run(credit, mode="plain")
    auc1, norm1, dir1, h1 = _run(credit, mode="plain", defence="noise", clip_norm=0.05, noise_multiplier=1.0)
    auc2, norm2, dir2, _ = _run(credit, mode="plain", defence="max_norm")
    auc3, norm3, dir3, _ = _run(credit, mode="plain", defence="group_average", group_size=8)
    auc4, norm4, dir4, _ = _run(credit, mode="plain", defence="mixup")
    print(f"\nmodel AUC / norm attack AUC / direction attack AUC: none {auc0:.3f} / {norm0:.3f} / {dir0:.3f}; "
          f"noise {auc1:.3f} / {norm1:.3f} / {dir1:.3f} (epsilon {h1.report['epsilon']:.1f} at delta 1e-5); "
          f"max_norm {auc2:.3f} / {norm2:.3f} / {dir2:.3f}; group_average(8) {auc3:.3f} / {norm3:.3f} / {dir3:.3f}; "
          f"mixup {auc4:.3f} / {norm4:.3f} / {dir4:.3f}")
    assert norm0 > 0.95 and dir0 > 0.95                 # plain split learning gives the labels away
    assert norm1 < 0.6 and norm2 < 0.65                 # both defences blind the norm attack
    assert dir1 < dir0 and dir3 < dir0                  # noise and averaging also blur the direction
    assert norm3 < norm0 and norm4 < norm0 and dir4 < dir0   # mixup: a partial defence here
    assert auc0 - auc1 < 0.08 and auc0 - auc2 < 0.03 and auc0 - auc3 < 0.08 and auc0 - auc4 < 0.03   # bounded AUC costs
    assert h0.report["leakage"]["norm_auc"] > 0.95 and h1.report["leakage"]["norm_auc"] < 0.6   # the guest's own report
    assert math.isfinite(h1.report["epsilon"])


def test_secret_sharing_hides_bottom_outputs_not_labels(credit):
    # the SS layer protects features and weights; the gradient the host needs still carries the
    # label signal, exactly as in plain mode: only a defence helps against that
    _, norm, direction, _ = _run(credit, mode="ss")
    assert norm > 0.95 and direction > 0.95
