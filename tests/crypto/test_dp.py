"""DP mechanisms: clipping, Gaussian noise scale, adaptive clip, and the dp-accounting accountant."""

import math

import numpy as np
import pytest

from atoll.crypto import dp
from atoll.errors import ConfigError


def test_clip_l2_bounds_norm_and_keeps_small_vectors():
    v = np.array([3.0, 4.0])
    c, norm = dp.clip_l2(v, 1.0)
    assert norm == 5.0 and np.isclose(np.linalg.norm(c), 1.0) and np.allclose(c, v / 5)
    same, n2 = dp.clip_l2(v, 10.0)
    assert same is v and n2 == 5.0


def test_gaussian_noise_has_requested_std():
    z = dp.gaussian_noise(200_000, 0.7, dp.noise_rng(1))
    assert abs(z.std() - 0.7) < 0.01 and abs(z.mean()) < 0.01


def test_adaptive_clip_moves_toward_quantile():
    # all updates unclipped (fraction 1 > target 0.5): the clip shrinks, and grows in the opposite case
    assert dp.adaptive_clip(1.0, 1.0, 0.5, 0.2) == pytest.approx(math.exp(-0.1))
    assert dp.adaptive_clip(1.0, 0.0, 0.5, 0.2) == pytest.approx(math.exp(0.1))


def test_adaptive_noise_multiplier_formula():
    z = dp.adaptive_noise_multiplier(1.0, 5.0)
    assert z == pytest.approx((1 - (1 / 10) ** 2) ** -0.5)
    with pytest.raises(ConfigError):
        dp.adaptive_noise_multiplier(1.0, 0.1)


def test_accountant_matches_dp_accounting_and_grows():
    import dp_accounting
    from dp_accounting import rdp

    acc = dp.PrivacyAccountant(delta=1e-5)
    eps = [acc.step(1.1, 0.1) for _ in range(5)]
    assert all(a < b for a, b in zip(eps, eps[1:]))
    ref = rdp.RdpAccountant(list(dp.RDP_ORDERS))
    ref.compose(dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(1.1)), 5)
    assert eps[-1] == pytest.approx(ref.get_epsilon(1e-5), rel=1e-9)
    # against dp_accounting with its own, wider orders (not ours): never smaller, and here equal
    orders = list(range(2, 257)) + [320, 384, 448, 512, 640, 768, 896, 1024]
    wide = rdp.RdpAccountant(orders)
    wide.compose(dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(1.1)), 5)
    assert eps[-1] == pytest.approx(wide.get_epsilon(1e-5), rel=1e-6)
    small_q = dp.PrivacyAccountant(delta=1e-5)
    got = [small_q.step(3.0, 0.01) for _ in range(10)][-1]
    wide = rdp.RdpAccountant(orders)
    wide.compose(dp_accounting.PoissonSampledDpEvent(0.01, dp_accounting.GaussianDpEvent(3.0)), 10)
    assert wide.get_epsilon(1e-5) <= got <= 1.03 * wide.get_epsilon(1e-5)  # measured: +2.5%
    # known order of magnitude: full participation, z=1, one round -> epsilon of a few units at delta 1e-5
    one = dp.PrivacyAccountant(1e-5)
    assert 3 < one.step(1.0, 1.0) < 6
    with pytest.raises(ConfigError):
        one.step(0.0, 1.0)
