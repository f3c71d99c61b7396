"""The algorithm registry: every algorithm is declared once, and everything else reads it.

An algorithm's module writes its role classes as ordinary classes, ONE parameter model
(a subclass of :class:`AlgorithmParams`, a pydantic model), and then registers::

    HETERO_LR = registry.register(Algorithm(
        name="hetero_lr",                               # the job component's name too
        params=HeteroLRParams,                          # THE parameter model
        roles={"guest": HeteroLRGuest, "host": HeteroLRHost, "arbiter": HeteroLRArbiter},
        layout="vertical", task="binary",
        parts={"guest": ModelPart(save_guest, load_guest), "host": ModelPart(save_host, load_host)},
        twin=centralised_twin,                          # the plaintext model of the baseline
        check=check_parties,                            # static checks of a job's roles
    ))

and adds ``"hetero_lr": "atoll.ml.vertical.hetero_lr"`` to :data:`MODULES` below (the one
registration line; a module loads on the first look-up of its name, so importing the registry
stays light). A job component is then one small class naming the algorithm (see
:class:`atoll.jobs.component.AlgorithmComponent`). From that declaration:

* the job component (:mod:`atoll.jobs.components`) takes its name, parameter model, layout,
  task, checks, model parts and centralised twin (:class:`atoll.jobs.component.AlgorithmComponent`);
* the scikit-learn facade (:class:`atoll.ml.facade.FederatedEstimator`) takes its ``__init__``
  signature, ``get_params`` / ``set_params`` / ``clone`` and validation from the same fields
  (plus the facade's own ``transport``, ``timeout`` and ``roles``), with the defaults
  ``facade_defaults`` changes for interactive use;
* later users (node, serving) find roles and model parts by the algorithm's name.

A parameter is therefore written in exactly one place. Parameter models refuse unknown
fields; constructing one directly raises :class:`~atoll.errors.ConfigError` with the field
and what to do, while job files (``model_validate``) get pydantic's located errors. HE scheme
fields are checked against :func:`atoll.crypto.he.scheme_names` (the crypto registry) at
validation time, so a scheme registered later is accepted without touching any algorithm.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Mapping

from pydantic import BaseModel, ConfigDict, ValidationError

from atoll.errors import ConfigError

__all__ = ["MODULES", "Algorithm", "AlgorithmParams", "ModelPart", "check_scheme", "find", "get",
           "names", "register"]

#: the built-in algorithms: name -> the module that registers it (imported on the first look-up
#: of that name). A new algorithm's module calls :func:`register` and gets one line here.
MODULES: dict[str, str] = {
    "hetero_lr": "atoll.ml.vertical.hetero_lr",
    "hetero_linr": "atoll.ml.vertical.hetero_linr",
    "hetero_poisson": "atoll.ml.vertical.hetero_poisson",
    "secureboost": "atoll.ml.vertical.secureboost",
    "ss_lr": "atoll.ml.vertical.ss_lr",
    "ss_linr": "atoll.ml.vertical.ss_lr",
    "hetero_pearson": "atoll.ml.vertical.pearson",
    "homo_lr": "atoll.ml.horizontal.algorithms",
    "homo_linr": "atoll.ml.horizontal.algorithms",
    "homo_nn": "atoll.ml.horizontal.algorithms",
}

def _describe(e: ValidationError, model: str) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "parameters"
        what = "unknown parameter" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{loc}: {what}")
    return f"{model}: " + "; ".join(parts)


class AlgorithmParams(BaseModel):
    """Base of every algorithm's parameter model: unknown fields refused, validated on assignment.

    ``pinned``: fields the algorithm itself fixes (a GLM's ``family``); its facade does not offer them.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    pinned: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise ConfigError(_describe(e, type(self).__name__)) from None

    @classmethod
    def settable(cls) -> dict[str, Any]:
        """The fields a user sets (all but the pinned ones), with their defaults."""
        out = {}
        for name, f in cls.model_fields.items():
            if name in cls.pinned:
                continue
            out[name] = f.get_default(call_default_factory=True)
        return out


def check_scheme(value: str, extra: Iterable[str] = ()) -> str:
    """A field validator's body for ``scheme``: one of the crypto registry's schemes (or ``extra``)."""
    from atoll.crypto import he

    known = [*he.scheme_names(), *extra]
    if value not in known:
        raise ValueError(f"unknown HE scheme {value!r}; use one of {known}")
    return value


@dataclass(frozen=True)
class ModelPart:
    """How one role's model part becomes a plain dict of wire types (job outputs, model store) and back."""

    save: Callable[[Any], dict[str, Any]]
    load: Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class Algorithm:
    """One algorithm, declared once (see the module docstring).

    ``task``: what its scores are (``binary``, ``regression``, ``poisson``, ``multiclass``), or a
    function of the parameters (SecureBoost's objective). ``twin(params, seed, task)`` returns
    ``(estimator, score_fn)`` for the centralised baseline. ``check(params, parties)`` gets
    the job's parties by role (``{"guest": [...], "host": [...]}``) and raises
    :class:`~atoll.errors.ConfigError` (with ``.field`` naming the parameter at fault, if one is).
    """

    name: str
    params: type[AlgorithmParams]
    roles: Mapping[str, type]
    layout: str = "vertical"
    task: str | Callable[[Any], str] = ""
    parts: Mapping[str, ModelPart] = field(default_factory=dict)
    twin: Callable[..., tuple[Any, Any]] | None = None
    check: Callable[[Any, Mapping[str, list[str]]], None] | None = None
    #: facade defaults that differ from the job defaults (e.g. a regressor's optimizer)
    facade_defaults: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""

    def role(self, role: str) -> type:
        try:
            return self.roles[role]
        except KeyError:
            raise ConfigError(f"{self.name} has no role {role!r}; its roles: {sorted(self.roles)}") from None

    def task_of(self, params: Any) -> str:
        return self.task(params) if callable(self.task) else self.task

    def save(self, role: str, part: Any) -> dict[str, Any]:
        return self.parts[role].save(part)

    def load(self, role: str, data: dict[str, Any]) -> Any:
        return self.parts[role].load(data)

    def facade_params(self) -> dict[str, Any]:
        """The facade's parameters from the model: every settable field, facade defaults applied."""
        out = self.params.settable()
        unknown = set(self.facade_defaults) - set(out)
        if unknown:
            raise TypeError(f"{self.name}: facade_defaults name unknown parameters {sorted(unknown)}")
        return {**out, **self.facade_defaults}


def param_error(message: str, field: str | None = None) -> ConfigError:
    """A :class:`ConfigError` a ``check`` hook raises; ``field`` names the parameter at fault."""
    err = ConfigError(message)
    err.field = field  # type: ignore[attr-defined]
    return err


_REGISTRY: dict[str, Algorithm] = {}


def register(alg: Algorithm) -> Algorithm:
    """Make ``alg`` known by its name (returns it, so a module can keep it as a constant)."""
    other = _REGISTRY.get(alg.name)
    if other is not None and other.params.__qualname__ != alg.params.__qualname__:
        raise TypeError(f"algorithm name {alg.name!r} is taken by {other.params.__module__}")
    _REGISTRY[alg.name] = alg
    return alg


def find(name: str) -> Algorithm | None:
    """The algorithm ``name``, importing its module (from :data:`MODULES`) if need be; None if unknown."""
    if name not in _REGISTRY and name in MODULES:
        importlib.import_module(MODULES[name])
    return _REGISTRY.get(name)


def get(name: str) -> Algorithm:
    alg = find(name)
    if alg is None:
        raise KeyError(f"unknown algorithm {name!r}; known: {', '.join(names())}")
    return alg


def names() -> list[str]:
    """Every registered algorithm (the built-in ones imported)."""
    for module in dict.fromkeys(MODULES.values()):
        importlib.import_module(module)
    return sorted(_REGISTRY)
