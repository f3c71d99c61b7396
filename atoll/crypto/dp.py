"""Differential-privacy mechanisms for client-level DP-FedAvg, and the accountant.

Pure functions (no I/O, no parties):

1. :func:`clip_l2` bounds one client's update to L2 norm ``C`` (McMahan et al.,
   "Learning differentially private recurrent language models", ICLR 2018).
2. :func:`gaussian_noise` draws the Gaussian mechanism's noise ``N(0, (z C)^2)``
   for the sum of clipped updates; split across ``m`` clients under secure
   aggregation each adds ``N(0, (z C)^2 / m)`` so that the sum carries the full noise.
3. :func:`adaptive_clip` is the geometric clip-norm update of Andrew et al.,
   "Differentially private learning with adaptive clipping", NeurIPS 2021:
   ``C <- C * exp(-eta (b - gamma))`` where ``b`` is the (noised) fraction of
   clients whose update norm was at most ``C`` and ``gamma`` the target quantile;
   :func:`adaptive_noise_multiplier` splits the privacy budget between the
   update sum and the clip-count query.
4. :class:`PrivacyAccountant` composes the per-round Poisson-subsampled Gaussian
   mechanism with Google's ``dp-accounting`` RDP accountant (we do not write our
   own accountant) and reports ``(epsilon, delta)`` after each round.

What each party sees: this module sees one party's numbers only; the
mechanism's guarantees are about what a released aggregate reveals.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import numpy as np

from atoll.errors import ConfigError

#: RDP orders evaluated by the accountant (integer orders: the closed form is exact and fast).
#: Fewer than dp_accounting's usual 2..256 plus (320..1024): epsilon() costs about 8 ms instead of
#: about 100 ms (measured), and is evaluated every round. The epsilon reported can only be equal or
#: larger (conservative): equal at z=1.1, q=0.1; +2.5% at z=3, q=0.01; several times larger for very
#: small q and large z, where the optimal order is above 256.
RDP_ORDERS = tuple(range(2, 65)) + (80, 96, 128, 192, 256)


def clip_l2(update: np.ndarray, clip: float) -> tuple[np.ndarray, float]:
    """Scale ``update`` down so its L2 norm is at most ``clip``; return (clipped, original norm)."""
    if not clip > 0:
        raise ConfigError(f"clip norm must be positive, got {clip}")
    norm = float(np.linalg.norm(update))
    if norm <= clip:
        return update, norm
    return update * (clip / norm), norm


def noise_rng(seed: int | None = None) -> np.random.Generator:
    """Generator for DP noise: OS entropy unless a seed is given (tests only)."""
    return np.random.default_rng(secrets.randbits(128) if seed is None else seed)


def gaussian_noise(shape: int | tuple[int, ...], std: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with standard deviation ``std`` (float64)."""
    if std < 0:
        raise ConfigError(f"noise standard deviation must be >= 0, got {std}")
    return rng.normal(0.0, std, size=shape) if std > 0 else np.zeros(shape)


def adaptive_clip(clip: float, unclipped_fraction: float, target_quantile: float, lr: float) -> float:
    """Geometric update of the clip norm towards the ``target_quantile`` of update norms."""
    return float(clip * math.exp(-lr * (unclipped_fraction - target_quantile)))


def adaptive_noise_multiplier(noise_multiplier: float, count_noise_std: float) -> float:
    """Noise multiplier left for the update sum when the clip count takes ``count_noise_std``.

    Andrew et al. 2021, Thm 1: ``z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)``.
    """
    if count_noise_std <= 0 or noise_multiplier <= 0:
        return noise_multiplier
    rest = noise_multiplier ** -2 - (2 * count_noise_std) ** -2
    if rest <= 0:
        raise ConfigError(
            f"clip-count noise std {count_noise_std} is too small for noise multiplier "
            f"{noise_multiplier}: raise it above {1 / (2 * noise_multiplier):.3g}")
    return rest ** -0.5


@dataclass
class PrivacyAccountant:
    """RDP accountant (``dp-accounting``) for the subsampled Gaussian, one event per round.

    ``sampling_rate`` is the chance each client takes part in a round (clients
    sampled with ``fraction_fit`` are accounted as Poisson sampling at that rate,
    the usual approximation).
    """

    delta: float = 1e-5

    def __post_init__(self) -> None:
        try:
            from dp_accounting import rdp
        except ImportError as e:  # pragma: no cover - runtime dependency
            raise ConfigError("DP accounting needs the 'dp-accounting' package: "
                              "pip install dp-accounting") from e
        if not 0 < self.delta < 1:
            raise ConfigError(f"delta must be in (0, 1), got {self.delta}")
        del rdp
        self._counts: dict[tuple[float, float], int] = {}
        self.rounds = 0

    def step(self, noise_multiplier: float, sampling_rate: float, count: int = 1) -> float:
        """Record ``count`` rounds of the mechanism and return epsilon so far."""
        if noise_multiplier <= 0:
            raise ConfigError("a noise multiplier of 0 gives no differential privacy (epsilon = inf)")
        if not 0 < sampling_rate <= 1:
            raise ConfigError(f"sampling rate must be in (0, 1], got {sampling_rate}")
        key = (float(noise_multiplier), float(sampling_rate))
        self._counts[key] = self._counts.get(key, 0) + count
        self.rounds += count
        return self.epsilon()

    def epsilon(self) -> float:
        """Epsilon spent so far at this accountant's delta (rounds with equal parameters compose in one go)."""
        import dp_accounting
        from dp_accounting import rdp

        if not self.rounds:
            return 0.0
        acc = rdp.RdpAccountant(list(RDP_ORDERS))
        for (z, q), k in self._counts.items():
            event = dp_accounting.GaussianDpEvent(z)
            if q < 1.0:
                event = dp_accounting.PoissonSampledDpEvent(q, event)
            acc.compose(dp_accounting.SelfComposedDpEvent(event, k))
        return float(acc.get_epsilon(self.delta))
