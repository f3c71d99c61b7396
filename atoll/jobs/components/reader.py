"""``reader``: each party loads its own data (CSV/Parquet file or bundled data set).

The id column becomes the index; the label column (label holders only) and the
exposure column (Poisson models, guest only) are kept apart; every other column
must be numeric and becomes a feature. Nothing is sent to anyone.

Data checks run here, before any PSI, and name the column: non-numeric features,
+-inf, a non-numeric label (``positive_label: yes`` maps a string or boolean label to
1 for that class and 0 for the others), and, if asked, missing values
(``missing: error``; by default NaN is kept for the steps that handle it: ``impute``,
``hetero_binning``, ``secureboost``) and constant columns (``constant: error`` or ``drop``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from atoll import datasets
from atoll.errors import ConfigError, DataError
from atoll.jobs.artifacts import Table
from atoll.jobs.component import Component, TaskContext
from atoll.jobs.registry import register
from atoll.jobs.spec import DataSpec, JobSpec, resolve_path

LABEL_ROLES = ("guest", "client")
DATA_ROLES = ("guest", "host", "client")


def _source(job: JobSpec, party: str, spec: DataSpec) -> tuple[Path, str]:
    """(file, format) of a party's data."""
    if spec.registered is not None:
        raise job.error(f"party {party!r}: data {{registered: {spec.registered}}} is resolved by that party's "
                        "node only; submit the job to a node (atoll job submit), or give data.path",
                        "parties", party, "data", "registered")
    if (spec.path is None) == (spec.dataset is None):
        raise job.error(f"party {party!r}: give exactly one of data.path or data.dataset",
                        "parties", party, "data")
    if spec.dataset is not None:
        try:
            f = datasets.path(spec.dataset, spec.split, spec.party or job.parties[party].role)
        except DataError as e:
            raise job.error(f"party {party!r}: {e}", "parties", party, "data", "dataset") from None
        return f, "csv"
    f = resolve_path(job, spec.path)
    if not f.exists():
        raise job.error(f"party {party!r}: data file {str(f)!r} does not exist",
                        "parties", party, "data", "path")
    fmt = spec.format
    if fmt == "auto":
        fmt = "parquet" if f.suffix in (".parquet", ".pq") else "csv"
    return f, fmt


def _read(f: Path, fmt: str, nrows: int | None = None) -> pd.DataFrame:
    if fmt == "parquet":
        try:
            df = pd.read_parquet(f)
        except ImportError as e:
            raise ConfigError(f"reading Parquet needs pyarrow ({e}); pip install pyarrow") from None
        if not isinstance(df.index, pd.RangeIndex):  # a saved pandas index is a column like any other
            df = df.reset_index()
        return df if nrows is None else df.head(nrows)
    return pd.read_csv(f, nrows=nrows)


def _columns(f: Path, fmt: str) -> list[str]:
    """The column names of a data file, from its header (CSV) or schema (Parquet) only."""
    if fmt == "csv":
        return [str(c) for c in _read(f, fmt, nrows=0).columns]
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ConfigError(f"reading Parquet needs pyarrow ({e}); pip install pyarrow") from None
    schema = pq.read_schema(f)
    index = [c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)]
    return index + [n for n in schema.names if n not in index]


def label_of(job: JobSpec, party: str) -> str | None:
    """The label column a party declares (bundled sets default to their label)."""
    spec = job.parties[party].data
    if spec is None:
        return None
    if spec.label is not None:
        return spec.label
    if spec.dataset is not None and job.parties[party].role in LABEL_ROLES:
        return datasets.label_column(spec.dataset)
    return None


class ReaderParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    positive_label: str | int | float | bool | None = None  # label value that becomes 1 (the others 0)
    missing: Literal["keep", "error"] = "keep"
    constant: Literal["keep", "error", "drop"] = "keep"


def _label(y: pd.Series, party: str, positive: Any) -> pd.Series:
    """A numeric label; string / boolean labels mapped to 1 for ``positive`` and 0 otherwise."""
    if positive is None:
        if pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y):
            return y
        if pd.api.types.is_bool_dtype(y):
            return y.astype(np.int64)
        classes = sorted({str(v) for v in y.dropna().unique()})[:5]
        raise DataError(f"party {party!r}: label column {y.name!r} is not numeric (values such as {classes}); "
                        "name the positive class with the reader's params: {positive_label: VALUE}")
    text = y.astype(str)
    if str(positive) not in set(text):
        hint = (" (YAML reads yes / no / on / off as booleans: quote the value, positive_label: 'yes')"
                if isinstance(positive, bool) and not pd.api.types.is_bool_dtype(y) else "")
        raise DataError(f"party {party!r}: positive_label {positive!r} does not occur in label column "
                        f"{y.name!r}{hint}")
    return pd.Series((text == str(positive)).astype(np.int64).to_numpy(), index=y.index, name=y.name)


def check_features(x: pd.DataFrame, party: str, params: ReaderParams) -> pd.DataFrame:
    """The reader's data checks of a party's feature columns (inf always; NaN, constants if asked)."""
    v = x.to_numpy(np.float64)
    inf = np.isinf(v).any(axis=0)
    if inf.any():
        raise DataError(f"party {party!r}: column {x.columns[int(np.argmax(inf))]!r} holds +-inf; replace it by "
                        "NaN (missing) or a finite value")
    nan = np.isnan(v).sum(axis=0)
    if params.missing == "error" and nan.any():
        j = int(np.argmax(nan > 0))
        raise DataError(f"party {party!r}: column {x.columns[j]!r} has {int(nan[j])} missing values (NaN); add an "
                        "impute step (or hetero_binning, which keeps a missing bin) and set the reader's "
                        "missing: keep, or fix the file")
    if params.constant != "keep" and len(x):
        const = [c for c in x.columns if x[c].nunique(dropna=False) <= 1]
        if const and params.constant == "error":
            raise DataError(f"party {party!r}: column {const[0]!r} is constant; drop it (reader constant: drop)")
        x = x.drop(columns=const)
    return x


def load_table(job: JobSpec, party: str, need_label: bool = True, params: ReaderParams | None = None) -> Table:
    spec = job.parties[party].data
    if spec is None:
        raise DataError(f"party {party!r} has no data in the job file")
    f, fmt = _source(job, party, spec)
    df = _read(f, fmt, spec.limit)
    id_col = spec.id or df.columns[0]
    if id_col not in df.columns:
        raise DataError(f"party {party!r}: id column {id_col!r} is not in {f.name}")
    if df[id_col].duplicated().any():
        dup = df[id_col][df[id_col].duplicated()].iloc[0]
        raise DataError(f"party {party!r}: id {dup!r} appears more than once in {f.name}; ids must be unique")
    df = df.set_index(id_col)
    label = label_of(job, party)
    y = None
    if label is not None:
        if label in df.columns:
            y = _label(df.pop(label), party, (params or ReaderParams()).positive_label)
        elif need_label:
            raise DataError(f"party {party!r}: label column {label!r} is not in {f.name}")
    exposure = None
    if spec.exposure is not None:
        if spec.exposure not in df.columns:
            raise DataError(f"party {party!r}: exposure column {spec.exposure!r} is not in {f.name}")
        exposure = df.pop(spec.exposure).astype(np.float64)
        if not (np.isfinite(exposure).all() and (exposure > 0).all()):
            raise DataError(f"party {party!r}: exposure column {spec.exposure!r} must hold finite values > 0")
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise DataError(f"party {party!r}: columns {bad} are not numeric; encode them before the job "
                        "(or drop them)")
    x = df.astype(np.float64)
    x.columns = [str(c) for c in x.columns]
    if params is not None:
        x = check_features(x, party, params)
    return Table(x, y, exposure)


@register
class Reader(Component):
    """Load each data-holding party's own rows. Output ``data``."""

    name = "reader"
    inputs: dict = {}
    outputs = {"data": "data"}
    Params = ReaderParams

    @classmethod
    def check(cls, job: JobSpec, spec: Any, index: int, check_data: bool) -> None:
        for party, ps in job.parties.items():
            if ps.role not in DATA_ROLES:
                continue
            if ps.data is None:
                raise job.error(f"party {party!r} ({ps.role}) has no data, but step {spec.id!r} reads "
                                f"each party's data; add data: {{path: FILE}} or {{dataset: NAME}}",
                                "parties", party)
            if ps.data.registered is not None and not check_data:
                continue  # resolved (and checked) by that party's own node
            f, fmt = _source(job, party, ps.data)
            if ps.data.exposure is not None and ps.role != "guest":
                raise job.error(f"party {party!r} ({ps.role}): only the guest holds an exposure column",
                                "parties", party, "data", "exposure")
            if not check_data:
                continue
            try:
                cols = _columns(f, fmt)
            except (OSError, ValueError) as e:
                raise job.error(f"party {party!r}: cannot read {f}: {e}", "parties", party, "data") from None
            id_col = ps.data.id or (cols[0] if cols else None)
            if id_col not in cols:
                raise job.error(f"party {party!r}: id column {id_col!r} is not in {f.name} "
                                f"(columns: {', '.join(map(str, cols[:12]))})", "parties", party, "data", "id")
            if ps.data.exposure is not None and ps.data.exposure not in cols:
                raise job.error(f"party {party!r}: exposure column {ps.data.exposure!r} is not in {f.name} "
                                f"(columns: {', '.join(map(str, cols[:12]))})", "parties", party, "data", "exposure")
            label = label_of(job, party)
            if ps.role in LABEL_ROLES and not job.inference:
                if label is None:
                    raise job.error(f"party {party!r} ({ps.role}) holds the labels: name the label column "
                                    "with data.label", "parties", party, "data")
                if label not in cols:
                    raise job.error(f"party {party!r}: label column {label!r} is not in {f.name} "
                                    f"(columns: {', '.join(map(str, cols[:12]))})",
                                    "parties", party, "data", "label")

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        if tc.data_spec is None or tc.role not in DATA_ROLES:
            return {}
        table = load_table(tc.job, tc.party, need_label=tc.mode == "train", params=self.params)
        tc.log.info("read %d rows x %d features%s", len(table), table.x.shape[1],
                    "" if table.y is None else f" + label {table.y.name!r}")
        return {"data": table}

    def infer(self, tc: TaskContext, inputs: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
        old = saved.get("data")
        if tc.data_spec is None or tc.role not in DATA_ROLES:
            return {}
        table = load_table(tc.job, tc.party, need_label=False,
                           params=self.params.model_copy(update={"constant": "keep"}))
        if self.params.constant == "drop" and old is not None:  # the columns training kept, not new constants
            table = table.with_x(table.x[[c for c in old.x.columns if c in table.x.columns]])
        out = {"data": table}
        if table is not None and old is not None and list(table.x.columns) != list(old.x.columns):
            raise DataError(f"party {tc.party!r}: new data has columns {list(table.x.columns)}, the "
                            f"model was trained on {list(old.x.columns)}")
        return out
