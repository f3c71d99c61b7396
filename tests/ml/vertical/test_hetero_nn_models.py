"""Split learning with CNN and GRU bottoms against the same architecture trained centrally:
sklearn's digits split left half / right half (CNN per party), and a multivariate series whose
channels are split between the parties (GRU per party); secret-shared interactive layer."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

from atoll.ml.vertical import hetero_nn as H  # noqa: E402
from atoll.ml.vertical.hetero_nn import HeteroNNParams  # noqa: E402


def _accuracy(scores, y):
    return float(np.mean((scores.argmax(axis=1) if scores.ndim == 2 else (scores > 0.5)) == y))


def _fed_vs_central(p, parts, y, tr, te):
    gm, hm = H.simulate_fit(p, parts[0][tr], y[tr], {"host_0": parts[1][tr]})
    fed = H.simulate_predict(p, gm, hm, parts[0][te], {"host_0": parts[1][te]})
    cen = H.CentralSplitNN(p).fit([parts[0][tr], parts[1][tr]], y[tr]).predict_scores([parts[0][te], parts[1][te]])
    out = _accuracy(fed, y[te]), _accuracy(cen, y[te])
    print(f"accuracy federated {out[0]:.4f} central {out[1]:.4f}")
    return out


def test_digits_left_right_halves_with_cnn_bottoms_within_two_points_of_central():
    from sklearn.datasets import load_digits

    d = load_digits()
    img = d.images / 16.0                                   # (n, 8, 8)
    left, right = img[:, :, :4].reshape(len(img), -1), img[:, :, 4:].reshape(len(img), -1)
    y = d.target.astype(float)
    idx = np.random.default_rng(0).permutation(len(y))
    tr, te = idx[:1400], idx[1400:]
    cnn = {"kind": "cnn", "image_shape": [8, 4], "channels": [8], "output_dim": 16}
    p = HeteroNNParams(task="multiclass", n_classes=10, mode="ss", bottom=cnn, interactive_units=16,
                       epochs=6, batch_size=64, learning_rate=0.01)
    fed, cen = _fed_vs_central(p, (left, right), y, tr, te)
    assert cen > 0.85, cen
    assert abs(fed - cen) <= 0.02, (fed, cen)


def test_mixup_defence_trains_a_multiclass_cnn():
    from sklearn.datasets import load_digits

    d = load_digits()
    img = d.images / 16.0
    left, right = img[:, :, :4].reshape(len(img), -1), img[:, :, 4:].reshape(len(img), -1)
    y = d.target.astype(float)
    cnn = {"kind": "cnn", "image_shape": [8, 4], "channels": [4], "output_dim": 8}
    p = HeteroNNParams(task="multiclass", mode="plain", bottom=cnn, interactive_units=16, epochs=4, batch_size=64,
                       defence="mixup", mixup_alpha=0.4)
    gm, hm = H.simulate_fit(p, left[:1400], y[:1400], {"host_0": right[:1400]})
    acc = _accuracy(H.simulate_predict(p, gm, hm, left[1400:], {"host_0": right[1400:]}), y[1400:])
    assert acc > 0.7, acc


def _series(n, seq_len=12, seed=0):
    """Random walks of 4 channels; the label: the sum of channel 0 (guest) and channel 2 (host) ends
    above zero, so neither party alone can tell."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, seq_len, 4))
    y = ((x[:, :, 0].sum(1) + x[:, :, 2].sum(1)) > 0).astype(float)
    return x[:, :, :2].reshape(n, -1), x[:, :, 2:].reshape(n, -1), y


def test_series_split_by_channels_with_gru_bottoms_within_two_points_of_central():
    xg, xh, y = _series(1600)
    tr, te = np.arange(1200), np.arange(1200, 1600)
    gru = {"kind": "gru", "seq_len": 12, "hidden_size": 12, "output_dim": 8}
    p = HeteroNNParams(task="binary", mode="ss", bottom=gru, epochs=6, batch_size=64, learning_rate=0.01)
    fed, cen = _fed_vs_central(p, (xg, xh), y, tr, te)
    assert cen > 0.8, cen
    assert abs(fed - cen) <= 0.02, (fed, cen)


def test_lstm_bottom_and_bad_shapes():
    from atoll.errors import ConfigError
    from atoll.ml.vertical.nn_zoo import BottomSpec, build_bottom, output_dim

    m = build_bottom(BottomSpec(kind="lstm", seq_len=5, hidden_size=4, output_dim=3), 10, 0)
    assert output_dim(m, 10) == 3
    with pytest.raises(ConfigError):
        build_bottom(BottomSpec(kind="gru", seq_len=3), 10, 0)
    with pytest.raises(ConfigError):
        build_bottom(BottomSpec(kind="cnn", image_shape=(3, 3)), 10, 0)
