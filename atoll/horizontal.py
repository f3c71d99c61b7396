"""``atoll.horizontal``: the one-call facade for horizontal federated learning in simulation.

    from atoll import horizontal
    from atoll.ml.horizontal import LogisticRegression, FedAvg, partition

    parts = partition.iid(len(x), 10)
    result = horizontal.simulate(lambda: LogisticRegression(64, 10),
                                 [(x[p], y[p]) for p in parts],
                                 strategy=FedAvg(), rounds=20,
                                 secure_aggregation=True, test_data=(x_test, y_test))
    model, history = result          # or result.model, result.history

Everything here is re-exported from :mod:`atoll.ml.horizontal`; ``simulate`` runs
the same server and client roles a deployment runs (see its docstrings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from atoll.ml.horizontal import *  # noqa: F401,F403 - the facade re-exports the package
from atoll.ml.horizontal import __all__ as _pkg_all
from atoll.ml.horizontal.models import Model
from atoll.ml.horizontal.roles import DPConfig, FedServer, History
from atoll.ml.horizontal.simulation import DropFn, SimulationChannel
from atoll.ml.horizontal.strategies import FedAvg
from atoll.secure.secagg import SecAggAborted, SecAggConfig

__all__ = [*_pkg_all, "SecAggAborted", "SecAggConfig", "SimulationResult", "simulate"]


@dataclass
class SimulationResult:
    """What :func:`simulate` returns; unpacks as ``model, history``."""

    model: Model
    weights: list[np.ndarray]
    history: History

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.history))

    def __getitem__(self, i: int) -> Any:
        return (self.model, self.history)[i]


def simulate(model_fn: Callable[[], Model], client_data: Sequence | Callable[[int], Any],
             strategy: FedAvg | None = None, rounds: int = 10,
             secure_aggregation: SecAggConfig | bool | None = None, dp: DPConfig | None = None,
             *, num_clients: int | None = None, test_data: tuple[np.ndarray, np.ndarray] | None = None,
             evaluate_fn: Callable[[list[np.ndarray]], dict] | None = None, backend: str = "inprocess",
             workers: int | None = None, seed: int = 0, drop: DropFn | None = None) -> SimulationResult:
    """Simulate federated training of ``model_fn()`` over ``client_data``.

    ``client_data``: a list of per-client ``(x, y)`` / ``(x, y, x_test, y_test)`` /
    :class:`ClientData`, or a function ``index -> data`` (then give ``num_clients``)
    so data is loaded only while that client trains. ``test_data``: a server-side
    test set evaluated every round (``server_accuracy``, ``server_loss`` in the
    history). ``secure_aggregation``: ``True`` or a :class:`SecAggConfig`
    (``degree=`` for SecAgg+). ``dp``: a :class:`DPConfig`. ``backend``:
    ``inprocess`` | ``threads`` | ``processes`` | ``ray``. ``drop(round, stage,
    client)``: simulate dropouts. ``SecAggConfig(epoch_rounds=E)`` runs the multi-round
    protocol (keys and seeds set up once per ``E`` rounds). Graph models: give each client
    the data of :func:`atoll.ml.horizontal.graph.client_data` and ``model_fn`` a
    :class:`atoll.ml.horizontal.gnn.GNNModel`.
    """
    init = model_fn()
    if evaluate_fn is None and test_data is not None:
        xt, yt = test_data

        def evaluate_fn(weights: list[np.ndarray]) -> dict:
            m = model_fn()
            m.set_weights(weights)
            return m.evaluate(xt, yt)

    channel = SimulationChannel(model_fn, client_data, num_clients, backend, workers, drop)
    try:
        server = FedServer(init.get_weights(), rounds, strategy, secure_aggregation, dp, evaluate_fn, seed)
        weights, history = server.run(channel)
    finally:
        channel.close()
    init.set_weights(weights)
    return SimulationResult(init, weights, history)
