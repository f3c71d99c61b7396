import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


@pytest.fixture(scope="session")
def digits():
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    return train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)


@pytest.fixture(scope="session")
def digits_clients(digits):
    from atoll.ml.horizontal import partition

    xtr, _, ytr, _ = digits
    return [(xtr[p], ytr[p]) for p in partition.iid(len(xtr), 10, seed=0)]
