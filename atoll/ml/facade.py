"""Simulation facades: every party of one federated model run from one ``fit`` call, scikit-learn style.

A facade is a :class:`FederatedEstimator` bound to a registered algorithm
(:mod:`atoll.ml.registry`); its ``__init__`` signature is derived from the algorithm's ONE
parameter model (every field but the pinned ones, with the algorithm's ``facade_defaults``)
plus the facade's own parameters (``transport``, ``timeout``, ``roles``). So
``get_params`` / ``set_params`` / ``clone`` / ``repr`` work as in scikit-learn, and
``_params()`` validates through the same model the job component uses::

    class HeteroLogisticRegression(HeteroGLMEstimator):
        algorithm = HETERO_LR                          # that is all the wiring

Data of a vertical model is a mapping party name -> that party's table: the guest's entry is
``(X, y)`` (or ``(X, y, exposure)``), each host's ``X``. Party names follow the convention
``{"guest": ..., "host_0": ..., "host_1": ...}``, or any names with ``roles={"bank": "guest",
"shop": "host"}``. Tables may be numpy arrays or pandas DataFrames; from DataFrames the facade
keeps the column names (``feature_names_in_[party]``) and uses the index as row ids.

At ``fit`` and at every prediction the facade refuses, with a :class:`~atoll.errors.DataError`
that says what to do: parties other than the fitted ones, hosts whose rows do not line up
with the guest's (the DataFrame index; without one the protocol compares a digest of the
row ids and the row count), and columns other than the fitted ones (names and order for
DataFrames, the count for arrays). ``transport`` is ``"threads"`` (this process) or
``"processes"`` (one local process per party over gRPC with mutual TLS).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np
from sklearn.base import BaseEstimator

from atoll.errors import AtollError, ConfigError, DataError
from atoll.ml.registry import Algorithm

__all__ = ["FederatedEstimator", "PartyTable", "VerticalData", "table"]

TRANSPORTS = ("threads", "processes")
_OLD_TRANSPORTS = {"inprocess": "threads", "grpc": "processes"}
#: the parameters every facade adds to its algorithm's
FACADE_PARAMS: dict[str, Any] = {"transport": "threads", "timeout": 600.0, "roles": None}


def _make_init(defaults: Mapping[str, Any], owner: str) -> Any:
    names = tuple(defaults)

    def __init__(self: Any, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown parameters {unknown}; "
                            f"its parameters: {', '.join(names)}")
        for name in names:  # scikit-learn's rule: __init__ only stores its arguments
            setattr(self, name, kwargs.get(name, defaults[name]))

    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=v) for n, v in defaults.items()]
    __init__.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    __init__.__qualname__ = f"{owner}.__init__"
    __init__.__doc__ = f"Keyword parameters (defaults): {', '.join(f'{n}={v!r}' for n, v in defaults.items())}."
    return __init__


@dataclass
class PartyTable:
    """One party's table as the protocol gets it: float matrix, row ids (DataFrame index) and column names."""

    x: np.ndarray
    ids: list[str] | None
    columns: list[str] | None

    @property
    def n_rows(self) -> int:
        return int(self.x.shape[0]) if self.x.ndim else 0


def table(x: Any) -> PartyTable:
    """A party's features as a float matrix, plus the DataFrame's index (as row ids) and columns."""
    ids = columns = None
    if hasattr(x, "index") and hasattr(x, "columns"):
        ids = [str(i) for i in x.index]
        columns = [str(c) for c in x.columns]
    return PartyTable(np.asarray(x, dtype=np.float64), ids, columns)


@dataclass
class VerticalData:
    """A vertical model's data, parsed: the guest's name, table, labels and exposure, and the hosts'."""

    guest: str
    x: PartyTable
    y: Any
    exposure: Any
    hosts: dict[str, PartyTable] = field(default_factory=dict)

    @property
    def tables(self) -> dict[str, PartyTable]:
        return {self.guest: self.x, **self.hosts}


class FederatedEstimator(BaseEstimator):
    """Base of the simulation facades (see the module docstring).

    A subclass sets ``algorithm`` (a registered :class:`~atoll.ml.registry.Algorithm`) and may add
    facade-only parameters in ``extra_params``; ``__init__`` is derived from both.
    """

    algorithm: ClassVar[Algorithm | None] = None
    extra_params: ClassVar[dict[str, Any]] = {}
    #: the parameters the model does not hold (the facade's own)
    facade_params: ClassVar[dict[str, Any]] = FACADE_PARAMS

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.algorithm is not None and "__init__" not in cls.__dict__:
            defaults = {**cls.algorithm.facade_params(), **cls.facade_params, **cls.extra_params}
            cls.__init__ = _make_init(defaults, cls.__qualname__)  # type: ignore[method-assign]

    # -------------------------------------------------------------- parameters
    def _params(self) -> Any:
        """The algorithm's parameter model from this estimator's attributes (validated: ConfigError)."""
        alg = self.algorithm
        return alg.params(**{name: getattr(self, name) for name in alg.facade_params()})

    def _launch_mode(self) -> str:
        t = self.transport
        if t in TRANSPORTS:
            return t
        if t in _OLD_TRANSPORTS:
            raise ConfigError(f"transport={t!r} is an old name; use transport={_OLD_TRANSPORTS[t]!r} "
                              f"(the transports are {' | '.join(map(repr, TRANSPORTS))})")
        raise ConfigError(f"transport={t!r}; use 'threads' (this process) or 'processes' (one local "
                          "process per party, gRPC with mutual TLS)")

    def _run(self, parties: dict, recorder: Any = None) -> dict:
        from atoll.federation import PartyFailed, launch

        mode = self._launch_mode()
        try:
            return launch(parties, mode=mode, timeout=self.timeout, recorder=recorder)
        except PartyFailed as e:
            if isinstance(e.error, AtollError):
                raise e.error from e
            raise

    def _check_fitted(self) -> None:
        if not hasattr(self, "parties_"):
            raise AtollError(f"this {type(self).__name__} is not fitted yet; call fit() first")

    # -------------------------------------------------------------- parties
    def _role_map(self, names: list[str]) -> dict[str, str]:
        """Party name -> role for the data's parties (``roles=`` or the naming convention)."""
        roles = self.roles
        if roles is None:
            bad = [k for k in names if k != "guest" and not k.startswith("host_")]
            if bad:
                raise DataError(f"party names must be 'guest' and 'host_0', 'host_1', ...; got {sorted(names)}. "
                                "For other names pass roles={name: 'guest' | 'host'}")
            return {k: "guest" if k == "guest" else "host" for k in names}
        if not isinstance(roles, Mapping):
            raise ConfigError("roles must map each party's name to its role, e.g. {'bank': 'guest', 'shop': 'host'}")
        unknown = [k for k in names if k not in roles]
        if unknown:
            raise DataError(f"parties {sorted(unknown)} have no role in roles={dict(roles)}; name every party "
                            "of the data there (or rename them)")
        wrong = {k: roles[k] for k in names if roles[k] not in ("guest", "host")}
        if wrong:
            raise ConfigError(f"roles {wrong}: a party with data is the 'guest' or a 'host'")
        return {k: roles[k] for k in names}

    def _arbiter_name(self, data_parties: list[str]) -> str:
        named = [k for k, r in (self.roles or {}).items() if r == "arbiter"]
        if len(named) > 1:
            raise ConfigError(f"roles names {len(named)} arbiters {named}; a job has at most one")
        name = named[0] if named else "arbiter"
        if name in data_parties:
            raise ConfigError(f"party {name!r} holds data and cannot also be the arbiter; name the arbiter "
                              "in roles={..., 'name': 'arbiter'}")
        return name

    def _vertical(self, data: Any, need_label: bool, task: str, like: Mapping[str, Any] | None = None) -> VerticalData:
        """Parse ``data``, check its rows line up and, against ``like`` (what was fitted, see
        :meth:`_fitted`; None while fitting), its parties and columns."""
        if not isinstance(data, Mapping) or not data:
            raise DataError('pass the data as {"guest": (X_guest, y), "host_0": X_host_0, ...} '
                            "(or any names with roles=...)")
        roles = self._role_map(list(data))
        guests = [k for k, r in roles.items() if r == "guest"]
        if len(guests) != 1:
            raise DataError('pass the data as {"guest": (X_guest, y), "host_0": X_host_0, ...}: '
                            f"one guest (the party with the labels); got {len(guests)} in {sorted(data)}")
        guest = guests[0]
        hosts = sorted(k for k, r in roles.items() if r == "host")
        if not hosts:
            raise DataError("at least one host ('host_0') is needed for a vertical model")
        g = data[guest]
        if isinstance(g, tuple):
            if need_label and (len(g) < 2 or g[1] is None):
                raise DataError("the guest's entry must be (X_guest, y) or (X_guest, y, exposure)")
            g = tuple(g) + (None,) * (3 - len(g))
        else:
            if need_label:
                raise DataError("the guest's entry must be (X_guest, y): the guest holds the labels")
            g = (g, None, None)
        out = VerticalData(guest, table(g[0]), g[1], g[2], {h: table(data[h]) for h in hosts})
        if like is not None:
            self._check_parties(out, like)
        self._check_rows(out, task)
        self._check_columns(out, like)
        return out

    @staticmethod
    def _check_parties(d: VerticalData, like: Mapping[str, Any]) -> None:
        guest, hosts = like["guest"], like["hosts"]
        if sorted(d.hosts) != sorted(hosts):
            raise DataError(f"the model was trained with hosts {sorted(hosts)}; got {sorted(d.hosts)}. "
                            "Pass each host's data under the name it was trained with")
        if d.guest != guest:
            raise DataError(f"the model was trained with guest {guest!r}; got {d.guest!r}")

    @staticmethod
    def _check_rows(d: VerticalData, task: str) -> None:
        problems = []
        for name, t in d.hosts.items():
            if t.n_rows != d.x.n_rows:
                problems.append(f"{name} has {t.n_rows} rows but the guest has {d.x.n_rows}")
            elif t.ids is not None and d.x.ids is not None and t.ids != d.x.ids:
                problems.append(f"{name}'s rows are not in the guest's order (different ids or order: the "
                                "DataFrame indexes differ)")
        if problems:
            raise DataError(f"cannot {task}: {'; '.join(problems)}; align the parties' rows first (run PSI and "
                            "pass every party its rows in the same order, e.g. X_host.loc[X_guest.index])")

    @staticmethod
    def _check_columns(d: VerticalData, like: Mapping[str, Any] | None) -> None:
        for name, t in d.tables.items():
            if t.columns is not None and len(set(t.columns)) != len(t.columns):
                raise DataError(f"{name}'s columns repeat a name; give every column its own name")
            if like is None:
                continue
            who = "the guest" if name == d.guest else name
            names = like["names"].get(name)
            n_fit = like["counts"][name]
            if t.columns is not None and names is not None and t.columns != list(names):
                if sorted(t.columns) == sorted(names):
                    raise DataError(f"{who}'s columns are in another order than at fit; select them as "
                                    f"X[model.feature_names_in_[{name!r}]]")
                missing = [c for c in names if c not in t.columns]
                extra = [c for c in t.columns if c not in names]
                raise DataError(f"{who}'s columns differ from those at fit: missing {missing}, unexpected {extra}")
            if t.x.ndim == 2 and t.x.shape[1] != n_fit:
                raise DataError(f"{who}'s model has {n_fit} features, the data {t.x.shape[1]}")

    @staticmethod
    def _state(d: VerticalData) -> dict[str, Any]:
        """What other data is checked against: parties, column names, column counts."""
        return {"guest": d.guest, "hosts": list(d.hosts),
                "names": {name: list(t.columns) for name, t in d.tables.items() if t.columns is not None},
                "counts": {name: int(t.x.shape[1]) if t.x.ndim == 2 else 0 for name, t in d.tables.items()}}

    def _fitted(self) -> dict[str, Any]:
        self._check_fitted()
        return {"guest": self.parties_["guest"], "hosts": self.parties_["hosts"],
                "names": {k: list(v) for k, v in self.feature_names_in_.items()},
                "counts": self.n_features_per_party_}

    def _remember(self, d: VerticalData) -> None:
        """Keep what predictions are checked against (``parties_``, ``feature_names_in_`` per party)."""
        st = self._state(d)
        self.parties_ = {"guest": st["guest"], "hosts": st["hosts"]}
        self.feature_names_in_ = {k: np.asarray(v, dtype=object) for k, v in st["names"].items()}
        self.n_features_per_party_ = st["counts"]
