"""Small real data sets bundled with Atoll (compressed), from FATE's examples.

    >>> from atoll import datasets
    >>> guest = datasets.load("default_credit", split="hetero", party="guest")
    >>> guest.index.name, guest.shape
    ('id', (30000, 14))

The id column becomes the DataFrame's index; every other column is kept as
stored (the label too, named by :func:`label_column`). See ``data/README.md``
beside this file for sources and licence (Apache-2.0 FATE repository; the
underlying public sets keep their own terms: test and benchmark use only).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import pandas as pd

from atoll.errors import DataError

DATA_DIR = Path(__file__).with_name("data")
_FILE = re.compile(r"^(?P<name>.+?)_(?P<split>hetero|homo)_(?P<party>.+)\.csv\.gz$")
_LABELS = {"motor": "motor_speed", "motor_mini": "motor_speed", "dvisits": "doctorco",
           "ionosphere_scale": "label"}


@lru_cache(maxsize=1)
def _catalogue() -> dict[tuple[str, str, str], Path]:
    out = {}
    for f in DATA_DIR.glob("*.csv.gz"):
        m = _FILE.match(f.name)
        if not m:
            continue
        name, split, party = m["name"], m["split"], m["party"]
        if party.startswith("mini_"):
            name, party = f"{name}_mini", party[len("mini_"):]
        out[(name, split, party)] = f
    return out


def available() -> list[tuple[str, str, str]]:
    """Every bundled (name, split, party), sorted."""
    return sorted(_catalogue())


def label_column(name: str) -> str:
    """The label column of a bundled data set (present only in the guest's / homo files)."""
    return _LABELS.get(name, "y")


def path(name: str, split: str = "hetero", party: str = "guest") -> Path:
    """The compressed CSV file behind :func:`load` (pandas reads it directly)."""
    f = _catalogue().get((name, split, party))
    if f is None:
        names = sorted({n for n, _, _ in _catalogue()})
        parties = sorted(p for n, s, p in _catalogue() if n == name and s == split)
        hint = (f"parties of {name}/{split}: {parties}" if parties
                else f"bundled data sets: {names}")
        raise DataError(f"no bundled data set {name!r} split={split!r} party={party!r}; {hint}")
    return f


def load(name: str, split: str = "hetero", party: str = "guest") -> pd.DataFrame:
    """One party's share of a bundled data set, indexed by its id column."""
    df = pd.read_csv(path(name, split, party))
    return df.set_index(df.columns[0])
