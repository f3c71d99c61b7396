"""Partitioners: coverage, disjointness, and the skew each one promises."""

import numpy as np
import pytest

from atoll.errors import ConfigError
from atoll.ml.horizontal import partition

LABELS = np.repeat(np.arange(10), 100)


def _check_cover(parts, n):
    allrows = np.concatenate(parts)
    assert len(allrows) == n and len(np.unique(allrows)) == n


def test_iid_equal_sizes_and_balanced_labels():
    parts = partition.iid(1000, 10, seed=1)
    _check_cover(parts, 1000)
    assert {len(p) for p in parts} == {100}
    for p in parts:
        assert np.bincount(LABELS[p], minlength=10).min() >= 3


def test_dirichlet_skew_grows_as_alpha_shrinks():
    def skew(alpha):
        parts = partition.dirichlet(LABELS, 10, alpha=alpha, seed=2)
        _check_cover(parts, 1000)
        # mean share of a client's most common class
        return np.mean([np.bincount(LABELS[p], minlength=10).max() / len(p) for p in parts])

    assert skew(0.1) > skew(1.0) > skew(100.0)
    assert skew(100.0) < 0.25


def test_k_classes_per_client():
    parts = partition.k_classes(LABELS, 20, k=2, seed=3)
    _check_cover(parts, 1000)
    assert all(len(np.unique(LABELS[p])) == 2 for p in parts)
    with pytest.raises(ConfigError):
        partition.k_classes(LABELS, 3, k=11)


def test_quantity_skew_sizes_vary_labels_iid():
    parts = partition.quantity_skew(1000, 10, alpha=0.5, seed=4, min_size=5)
    _check_cover(parts, 1000)
    sizes = [len(p) for p in parts]
    assert min(sizes) >= 5 and max(sizes) > 3 * min(sizes)


def test_partitions_are_reproducible():
    a = partition.dirichlet(LABELS, 5, 0.5, seed=9)
    b = partition.dirichlet(LABELS, 5, 0.5, seed=9)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
