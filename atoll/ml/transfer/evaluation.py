"""A reproducible transfer set-up from bundled data: a vertical FATE pair re-cut so that the two
parties barely overlap in users (and share no feature).

``transfer_split("default_credit", n_guest=2000, n_host=2000, n_overlap=100, seed=0)`` draws, with a
seeded permutation of the set's rows, ``n_guest`` guest users (their guest-side features and labels)
and ``n_host`` host users (their host-side features), of which ``n_overlap`` are the same users
(``n_overlap / n_host`` is the overlap share). The host's other users carry *hidden* labels: they are
the held-out scoring set (never used in training; the host may use their features, unlabelled, for
its own standardisation). ``swap=True`` gives the guest the host-side columns and vice versa.

The baselines of the benchmark (:func:`host_alone_auc`, :func:`pooled_oracle_auc`,
:func:`guest_alone_auc`) are defined here so tests and ``benchmarks/ftl.py`` score the same thing.

The NUS-WIDE guest files of FATE's HeteroFTL example could not be retrieved (see
``atoll/datasets/data/README.md``), so default credit stands in: the host's 10 columns (FATE's host
split: bill/payment history) or the guest's 13 (limit, demographics, ...), by ``swap``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from atoll import datasets
from atoll.errors import DataError
from atoll.ml import metrics


@dataclass
class TransferSplit:
    guest: pd.DataFrame          # guest users x guest features, indexed by id
    y: np.ndarray                # their labels (0/1)
    host: pd.DataFrame           # host users x host features (overlap users first, then the others)
    overlap_ids: list[str]       # the users both hold (for checks; the protocol finds them by PSI)
    test_ids: list[str]          # host users not at the guest: the held-out scoring set
    y_test: np.ndarray           # their hidden labels
    guest_hidden_features: pd.DataFrame   # the guest-side features of every user (oracle only)
    host_hidden_features: pd.DataFrame    # the host-side features of every user (oracle only)

    def guest_overlap_rows(self) -> np.ndarray:
        pos = {i: k for k, i in enumerate(self.guest.index)}
        return np.array([pos[i] for i in self.overlap_ids], dtype=np.int64)

    def host_overlap_rows(self) -> np.ndarray:
        pos = {i: k for k, i in enumerate(self.host.index)}
        return np.array([pos[i] for i in self.overlap_ids], dtype=np.int64)

    def host_test(self) -> pd.DataFrame:
        return self.host.loc[self.test_ids]


def transfer_split(name: str = "default_credit", n_guest: int = 2000, n_host: int = 2000,
                   n_overlap: int = 100, seed: int = 0, swap: bool = False) -> TransferSplit:
    """See the module docstring."""
    g = datasets.load(name, "hetero", "guest")
    h = datasets.load(name, "hetero", "host")
    label = datasets.label_column(name)
    y_all = g.pop(label).to_numpy(dtype=np.float64)
    if swap:
        g, h = h, g
    g.index = g.index.astype(str)
    h.index = h.index.astype(str)
    if not 0 < n_overlap <= min(n_guest, n_host) or n_guest + n_host - n_overlap > len(y_all):
        raise DataError(f"transfer_split: need 0 < n_overlap <= min(n_guest, n_host) and "
                        f"n_guest + n_host - n_overlap <= {len(y_all)} rows")
    perm = np.random.default_rng(seed).permutation(len(y_all))
    guest_rows = perm[:n_guest]
    overlap = guest_rows[:n_overlap]
    others = perm[n_guest:n_guest + n_host - n_overlap]
    host_rows = np.concatenate([overlap, others])
    ids = np.asarray(g.index)
    return TransferSplit(guest=g.iloc[guest_rows], y=y_all[guest_rows], host=h.iloc[host_rows],
                         overlap_ids=list(ids[overlap]), test_ids=list(ids[others]), y_test=y_all[others],
                         guest_hidden_features=g, host_hidden_features=h)


def host_alone_auc(split: TransferSplit, seed: int = 0) -> float:
    """Baseline (1): a logistic regression the host trains alone on the overlap users' labels (which
    the guest would have to give it), scored on the held-out host users."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = split.host.loc[split.overlap_ids].to_numpy(dtype=np.float64)
    y = split.y[split.guest_overlap_rows()]
    if len(np.unique(y)) < 2:
        return float("nan")
    sc = StandardScaler().fit(split.host.to_numpy(dtype=np.float64))
    m = LogisticRegression(max_iter=2000, random_state=seed).fit(sc.transform(x), y)
    return metrics.auc(split.y_test, m.decision_function(sc.transform(split.host_test().to_numpy(dtype=np.float64))))


def guest_alone_auc(split: TransferSplit, seed: int = 0) -> float:
    """Baseline (2), "where it applies": the guest's own logistic regression on its features, scored on
    the held-out host users' *guest-side* features (which the guest does not have in reality: this is
    what the guest's model would do if those users came to it)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = split.guest.to_numpy(dtype=np.float64)
    sc = StandardScaler().fit(x)
    m = LogisticRegression(max_iter=2000, random_state=seed).fit(sc.transform(x), split.y)
    xt = split.guest_hidden_features.loc[split.test_ids].to_numpy(dtype=np.float64)
    return metrics.auc(split.y_test, m.decision_function(sc.transform(xt)))


def pooled_oracle_auc(split: TransferSplit, seed: int = 0) -> float:
    """Baseline (3): the centralised oracle, a logistic regression on the pooled data with all features
    (every guest user's guest- and host-side columns), scored on the held-out host users' all columns."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    gh, hh = split.guest_hidden_features, split.host_hidden_features
    x = np.hstack([gh.loc[split.guest.index].to_numpy(dtype=np.float64),
                   hh.loc[split.guest.index].to_numpy(dtype=np.float64)])
    xt = np.hstack([gh.loc[split.test_ids].to_numpy(dtype=np.float64),
                    hh.loc[split.test_ids].to_numpy(dtype=np.float64)])
    sc = StandardScaler().fit(x)
    m = LogisticRegression(max_iter=2000, random_state=seed).fit(sc.transform(x), split.y)
    return metrics.auc(split.y_test, m.decision_function(sc.transform(xt)))
