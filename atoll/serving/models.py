"""The one place serving learns how each algorithm's model parts are loaded, scored and combined.

For every algorithm it serves, :data:`ADAPTERS` maps the name a job saved with the model part
(its ``component`` field) to three functions:

* ``load(part_dict) -> model``: the party's part, from the wire dict a job saved
  (``RUN/PARTY/STEP/model.bin``, or the node's model store: the same bytes);
* ``partial(host_model, x, party) -> value``: what a host answers for its rows ``x`` (a wire value);
* ``combine(guest_model, x, partials, exposure) -> scores``: the guest's final scores from its own
  rows and every host's answer — checking each answer's shape first (a hostile or confused host
  gets a :class:`DataError`, never a wrong score).

Each function reuses the algorithm's own code (:mod:`atoll.ml.vertical._glm`,
:mod:`atoll.ml.vertical.secureboost`, the job components' (de)serialisers), so a served score is
the score ``atoll predict`` gives for the same rows. When the algorithm registry lands, this module
is the one to point at it; nothing else in :mod:`atoll.serving` names an algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from atoll.errors import ConfigError, DataError

#: the protection levels a served model can run at (see :mod:`atoll.serving.protocol`)
LEVELS = ("plain-partial", "masked")


@dataclass(frozen=True)
class Adapter:
    """How serving handles one algorithm (see the module docstring)."""

    load: Callable[[dict], Any]
    partial: Callable[[Any, np.ndarray, str], Any]
    combine: Callable[[Any, np.ndarray, Mapping[str, Any], "np.ndarray | None"], np.ndarray]
    task: Callable[[Any], str]
    #: levels this algorithm can be served at
    levels: tuple[str, ...] = ("plain-partial",)
    #: masked level of linear models: a host's partial is a float vector, masked in Z_2^64 among hosts
    linear: bool = False
    #: masked level of other models (one host, the guest's HE key): the guest's encrypted query,
    #: the host's encrypted answer, the guest's scores from the decrypted answer
    mask_query: Callable[[Any, np.ndarray, Any], Any] | None = None
    mask_answer: Callable[[Any, np.ndarray, str, Any], Any] | None = None
    mask_combine: Callable[[Any, np.ndarray], np.ndarray] | None = None


# ---------------------------------------------------------------------------------- linear models
_FAMILY = {"hetero_lr": "logistic", "hetero_linr": "linear", "hetero_poisson": "poisson"}
_GLM_TASK = {"logistic": "binary", "linear": "regression", "poisson": "poisson"}


@dataclass(frozen=True)
class LinearPart:
    family: str
    coef: np.ndarray
    constant: float  # the guest's intercept, or a host's offset
    exposure: bool = False


def _load_glm(d: dict) -> LinearPart:
    family = d.get("family")
    if family not in _GLM_TASK:
        raise ConfigError(f"model part of unknown family {family!r}")
    coef = np.asarray(d["coef"], dtype=np.float64)
    if coef.ndim != 1:
        raise ConfigError("a linear model part's coefficients must be a vector")
    const = float(d["intercept"] if d.get("role") == "guest" else d.get("offset", 0.0))
    return LinearPart(family, coef, const, bool(d.get("exposure", False)))


def _glm_partial(m: LinearPart, x: np.ndarray, party: str) -> np.ndarray:
    return x @ m.coef + m.constant


def check_linear_partial(host: str, value: Any, n: int) -> np.ndarray:
    """A host's partial linear scores, refused unless they are ``n`` finite floats."""
    a = value if isinstance(value, np.ndarray) else None
    if a is None or a.shape != (n,) or a.dtype.kind not in "fi" or not np.all(np.isfinite(a)):
        shape = getattr(value, "shape", type(value).__name__)
        raise DataError(f"{host} answered with {shape}, expected {n} finite partial scores")
    return a.astype(np.float64)


def linear_score(m: LinearPart, x: np.ndarray, host_sum: np.ndarray, exposure: np.ndarray | None) -> np.ndarray:
    """Prediction from the guest's rows and the sum of every host's partial linear score."""
    from atoll.ml.vertical._glm import mean_function

    if m.exposure and exposure is None:
        raise DataError("this model was trained with an exposure column: send each row's exposure")
    return mean_function(m.family, x @ m.coef + m.constant + host_sum, exposure)


def _glm_combine(m: LinearPart, x: np.ndarray, partials: Mapping[str, Any],
                 exposure: np.ndarray | None) -> np.ndarray:
    total = np.zeros(len(x))
    for host, value in partials.items():
        total = total + check_linear_partial(host, value, len(x))
    return linear_score(m, x, total, exposure)


# ---------------------------------------------------------------------------------- SecureBoost
@dataclass
class TreesPart:
    """A SecureBoost part with its routing compiled (:mod:`atoll.serving.trees`) on first use."""

    model: Any
    compiled: dict[str, Any]


def _load_sb(d: dict) -> TreesPart:
    from atoll.ml import registry  # the model parts' (de)serialisers are the algorithm's

    sb = registry.get("secureboost")
    if d.get("role") == "guest":
        from atoll.serving.trees import compile_guest

        m = sb.load("guest", d)
        return TreesPart(m, {"guest": compile_guest(m)})
    return TreesPart(sb.load("host", d), {})


def _sb_partial(m: TreesPart, x: np.ndarray, party: str) -> Any:
    from atoll.serving.trees import host_answer

    return host_answer(_host_routing(m, party), x)


def _sb_combine(m: TreesPart, x: np.ndarray, partials: Mapping[str, Any], exposure: np.ndarray | None) -> np.ndarray:
    from atoll.ml.vertical.boosting_core import get_objective
    from atoll.serving.trees import guest_margin

    g = m.model
    margin = guest_margin(m.compiled["guest"], x, partials) + g.base_margin[None, :]
    return get_objective(g.objective).transform(margin)


def _host_routing(m: TreesPart, party: str) -> Any:
    from atoll.serving.trees import compile_host

    routing = m.compiled.get(party)
    if routing is None:
        routing = m.compiled[party] = compile_host(m.model, party)
    return routing


def _sb_mask_query(m: TreesPart, x: np.ndarray, pk: Any) -> Any:
    from atoll.serving.trees import masked_query

    return masked_query(m.compiled["guest"], x, pk)


def _sb_mask_answer(m: TreesPart, x: np.ndarray, party: str, query: Any) -> Any:
    from atoll.serving.trees import masked_answer

    return masked_answer(_host_routing(m, party), x, query)


def _sb_mask_combine(m: TreesPart, margin: np.ndarray) -> np.ndarray:
    from atoll.ml.vertical.boosting_core import get_objective

    g = m.model
    return get_objective(g.objective).transform(np.asarray(margin, np.float64)[:, None] + g.base_margin[None, :])


def _sb_task(m: TreesPart) -> str:
    from atoll.ml.vertical.secureboost import TASKS

    return TASKS[m.model.objective]


ADAPTERS: dict[str, Adapter] = {
    **{name: Adapter(_load_glm, _glm_partial, _glm_combine, lambda m: _GLM_TASK[m.family],
                     levels=LEVELS, linear=True) for name in _FAMILY},
    "secureboost": Adapter(_load_sb, _sb_partial, _sb_combine, _sb_task, levels=LEVELS,
                           mask_query=_sb_mask_query, mask_answer=_sb_mask_answer, mask_combine=_sb_mask_combine),
}


def adapter(algorithm: str) -> Adapter:
    """The adapter of a served algorithm; a clear error for one serving cannot run."""
    a = ADAPTERS.get(algorithm)
    if a is None:
        raise ConfigError(f"serving cannot run {algorithm!r} models; it serves {', '.join(sorted(ADAPTERS))}")
    return a
