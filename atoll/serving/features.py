"""Feature sources: where a serving party looks up its own features of the requested ids.

* :class:`TableSource`: an in-memory table from a CSV or Parquet file (first column, or the
  named one, is the id), for low latency;
* :class:`SqlSource`: a table in any SQL database SQLAlchemy reaches (SQLite by default), one
  parameterised ``SELECT ... WHERE id IN (...)`` per request — nothing of a request is ever
  pasted into SQL text, and the table and column names are checked identifiers.

Both answer :meth:`FeatureSource.lookup` with the rows in the order asked, or raise
:class:`UnknownIds` saying only how many ids are missing (never which: the error may travel to
a peer). A source is pluggable: anything with ``lookup(ids) -> DataFrame`` serves.
"""

from __future__ import annotations

import abc
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from atoll.errors import ConfigError, DataError

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class UnknownIds(DataError):
    """Some requested ids are not in this party's feature source."""

    def __init__(self, missing: int, asked: int):
        super().__init__(f"{missing} of {asked} requested ids are not in the feature source")
        self.missing, self.asked = missing, asked


class FeatureSource(abc.ABC):
    @abc.abstractmethod
    def lookup(self, ids: Sequence[str]) -> pd.DataFrame:
        """The rows of ``ids`` (index = the ids, in this order); :class:`UnknownIds` if any is missing."""

    def rows(self, ids: Sequence[str], columns: Sequence[str]) -> np.ndarray:
        """The ``columns`` of the rows of ``ids`` as a float matrix (what scoring reads)."""
        frame = self.lookup(ids)
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ConfigError(f"the feature source lacks {len(missing)} of the model's columns "
                              f"(e.g. {missing[0]!r}); serve it the columns the model was trained on")
        return frame.loc[:, list(columns)].to_numpy(dtype=np.float64, copy=True)


class TableSource(FeatureSource):
    """An in-memory table indexed by id (as strings)."""

    def __init__(self, frame: pd.DataFrame):
        frame = frame.copy()
        frame.index = frame.index.astype(str)
        if not frame.index.is_unique:
            raise ConfigError("the feature table has duplicate ids; each id must name one row")
        self.frame = frame
        self._pos = {i: k for k, i in enumerate(frame.index)}
        self._col = {c: k for k, c in enumerate(frame.columns)}
        self._values = frame.to_numpy(dtype=np.float64) if all(
            pd.api.types.is_numeric_dtype(t) for t in frame.dtypes) else None

    @classmethod
    def from_file(cls, path: str | Path, id_column: str | None = None) -> "TableSource":
        p = Path(path)
        try:
            df = pd.read_parquet(p) if p.suffix in (".parquet", ".pq") else pd.read_csv(p, dtype={id_column: str}
                                                                                         if id_column else None)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read the feature file {p}: {e}") from None
        col = id_column or df.columns[0]
        if col not in df.columns:
            raise ConfigError(f"the feature file {p} has no id column {col!r}")
        return cls(df.set_index(col))

    def _positions(self, ids: Sequence[str]) -> list[int]:
        pos = [self._pos.get(i, -1) for i in ids]
        missing = sum(p < 0 for p in pos)
        if missing:
            raise UnknownIds(missing, len(ids))
        return pos

    def lookup(self, ids: Sequence[str]) -> pd.DataFrame:
        return self.frame.iloc[self._positions(ids)]

    def rows(self, ids: Sequence[str], columns: Sequence[str]) -> np.ndarray:
        if self._values is None:
            return super().rows(ids, columns)
        try:
            cols = [self._col[c] for c in columns]
        except KeyError as e:
            raise ConfigError(f"the feature source lacks the model's column {e.args[0]!r}; serve it the "
                              "columns the model was trained on") from None
        return self._values[np.ix_(self._positions(ids), cols)]


class SqlSource(FeatureSource):
    """Rows from a SQL table through SQLAlchemy (``url`` e.g. ``sqlite:///features.db``)."""

    def __init__(self, url: str, table: str, id_column: str = "id"):
        import sqlalchemy as sa

        for name in (table, id_column):
            if not _IDENT.match(name):
                raise ConfigError(f"{name!r} is not a plain SQL identifier (letters, digits, '_')")
        self.engine = sa.create_engine(url)
        self.table = sa.Table(table, sa.MetaData(), autoload_with=self.engine)
        if id_column not in self.table.c:
            raise ConfigError(f"table {table!r} has no id column {id_column!r}")
        self.id_column = id_column

    def lookup(self, ids: Sequence[str]) -> pd.DataFrame:
        import sqlalchemy as sa

        col = self.table.c[self.id_column]
        q = sa.select(self.table).where(sa.cast(col, sa.String).in_(list(ids)))
        with self.engine.connect() as conn:
            df = pd.DataFrame(conn.execute(q).mappings().all())
        if df.empty:
            raise UnknownIds(len(set(ids)), len(ids))
        df[self.id_column] = df[self.id_column].astype(str)
        return TableSource(df.set_index(self.id_column)).lookup(ids)


def open_source(spec: dict[str, Any], base: Path | None = None) -> FeatureSource:
    """A source from a config entry: ``{path: FILE, id: COL}``, ``{url: URL, table: T, id: COL}`` or a
    bundled data set ``{dataset: NAME, party: guest|host}``."""
    if "url" in spec:
        return SqlSource(str(spec["url"]), str(spec.get("table", "features")), str(spec.get("id", "id")))
    if "dataset" in spec:  # a bundled data set (examples, tests)
        from atoll import datasets

        return TableSource.from_file(datasets.path(str(spec["dataset"]), str(spec.get("split", "hetero")),
                                                   str(spec.get("party", "guest"))), spec.get("id"))
    if "path" in spec:
        p = Path(spec["path"])
        return TableSource.from_file(p if p.is_absolute() or base is None else base / p, spec.get("id"))
    raise ConfigError("a feature source needs path: FILE (CSV/Parquet) or url: + table: (SQL)")
