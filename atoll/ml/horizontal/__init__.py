"""Horizontal federated learning: same features, different users.

    from atoll import horizontal
    model, history = horizontal.simulate(lambda: LogisticRegression(64, 10), client_data,
                                         strategy=FedAvg(), rounds=20, secure_aggregation=True)

Roles (:mod:`.roles`) run unchanged over a federation ``Context`` (deployment)
or the simulation engine (:mod:`.simulation`).
"""

from atoll.ml.horizontal import graph, partition
from atoll.ml.horizontal.models import LinearRegression, LogisticRegression, Model, flatten, unflatten
from atoll.ml.horizontal.roles import (ClientData, ContextChannel, DPConfig, FedClient, FedServer, History,
                                       client_rng, run_client, run_server)
from atoll.ml.horizontal.simulation import SimulationChannel
from atoll.ml.horizontal.strategies import (FedAdagrad, FedAdam, FedAvg, FedMedian, FedOpt, FedProx,
                                            FedTrimmedMean, FedYogi, Krum)

__all__ = ["ClientData", "ContextChannel", "DPConfig", "FedAdagrad", "FedAdam", "FedAvg", "FedClient",
           "FedMedian", "FedOpt", "FedProx", "FedServer", "FedTrimmedMean", "FedYogi", "History", "Krum",
           "LinearRegression", "LogisticRegression", "Model", "SimulationChannel", "client_rng", "flatten",
           "graph", "partition", "run_client", "run_server", "unflatten"]
