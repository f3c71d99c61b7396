"""``homo_lr`` / ``homo_linr`` / ``homo_nn``: horizontal federated models (FedAvg family, optional
secure aggregation and differential privacy).

Derived from the algorithm registry (:mod:`atoll.ml.registry`): the parameters
(:class:`~atoll.ml.horizontal.algorithms.HomoParams`), roles, model parts, checks and twins
are declared in :mod:`atoll.ml.horizontal.algorithms`; the roles of
:mod:`atoll.ml.horizontal.roles` (see that module for the protocol and what each party sees)
run here: the ``server`` runs ``run_server`` with the chosen strategy (and secure aggregation
from :mod:`atoll.secure.secagg` if ``secure_aggregation: true``: the server then sees only the
sum of the clients' updates); each ``client`` runs ``run_client`` on its own training rows.
Before training, each client tells the server its feature count and a digest of its column
names (they must agree); after the last round the server sends the final global weights to
every client, so each keeps the model it will predict with. Prediction is local to each
client (its own rows, no messages). ``centralized_twin`` is scikit-learn's model of the same
family and L2 penalty (an ``MLPClassifier`` with the same layers for ``homo_nn``), trained on
every client's training rows stacked.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from atoll.errors import DataError
from atoll.jobs.artifacts import Table
from atoll.jobs.component import AlgorithmComponent, TaskContext, predicts, scores
from atoll.jobs.registry import register


class HomoComponent(AlgorithmComponent):
    """The job step of a registered horizontal model (``algorithm`` names it)."""

    def _model(self, n_features: int) -> Any:
        from atoll.ml.horizontal.algorithms import build_model

        return build_model(self.name, self.params, n_features)

    def run_server(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        from atoll.ml.horizontal.algorithms import dp_config, secagg_config, strategy
        from atoll.ml.horizontal.roles import run_server

        with tc.fed.scope("setup"):
            shapes = tc.fed.gather("client", "shape")
        if len({(s["n_features"], s["columns"]) for s in shapes.values()}) != 1:
            raise DataError(f"{self.name}: the clients' columns differ: {shapes}; every client needs the "
                            "same features in the same order")
        n_features = int(next(iter(shapes.values()))["n_features"])
        p = self.params
        weights, history = run_server(tc.fed, self._model(n_features).get_weights(), p.rounds, strategy(p),
                                      secure_aggregation=secagg_config(p), dp=dp_config(p), seed=tc.seed)
        with tc.fed.scope("final"):
            tc.fed.send("client", "weights", [np.asarray(w) for w in weights])
        losses = [r.get("train_loss") for r in history.rounds]
        tc.log.info("%s: %d rounds, last train loss %s", self.name, len(history), losses[-1] if losses else None)
        return {"model": self.part(tc, {"weights": weights, "n_features": n_features,
                                        "history": {"train_loss": [float(v) for v in losses if v is not None],
                                                    "epsilon": [float(r["epsilon"]) for r in history.rounds
                                                                if r.get("epsilon") is not None]}})}

    def run_client(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        from atoll.ml.horizontal.algorithms import columns_digest
        from atoll.ml.horizontal.roles import run_client

        train: Table | None = inputs.get("train")
        if train is None or train.y is None:
            raise DataError(f"{self.name}: client {tc.party!r} needs labelled training data")
        cols = list(train.x.columns)
        with tc.fed.scope("setup"):
            tc.fed.send("server", "shape", {"n_features": len(cols), "columns": columns_digest(cols)})
        model = self._model(len(cols))
        y = train.y.to_numpy()
        y = y.astype(np.int64) if self.task == "binary" else y.astype(np.float64)
        run_client(tc.fed, model, (train.values(), y))
        with tc.fed.scope("final"):
            weights = tc.fed.recv("server", "weights")
        return {"model": self.part(tc, {"weights": weights, "columns": cols})}

    @classmethod
    def predict(cls, tc: TaskContext, model: dict | None, data: Table | None, params: dict) -> dict | None:
        if not predicts(cls.name, tc, model, data, ("client",)):
            return None
        m = cls(params)._model(len(model["columns"]))
        m.set_weights(cls.load_part(tc, model)["weights"])
        return scores(data, cls._score(m, data.values()), cls.task)

    @classmethod
    def _score(cls, m: Any, x: np.ndarray) -> np.ndarray:
        return m.predict_proba(x)[:, 1] if cls.task == "binary" else m.predict(x)


@register
class HomoLR(HomoComponent):
    """Horizontal logistic regression (binary labels 0/1 at every client)."""

    algorithm = "homo_lr"


@register
class HomoLinR(HomoComponent):
    """Horizontal linear regression."""

    algorithm = "homo_linr"


@register
class HomoNN(HomoComponent):
    """Horizontal neural network (PyTorch MLP, binary classification); needs the ``torch`` extra.

    The network is ``Linear -> ReLU`` per entry of ``hidden``, then ``Linear(., 2)``; weights
    travel as numpy arrays (:mod:`atoll.ml.horizontal.torch_model`). The centralised twin is
    scikit-learn's ``MLPClassifier`` with the same layers, trained by SGD on the stacked rows.
    """

    algorithm = "homo_nn"

    @classmethod
    def check(cls, job: Any, spec: Any, index: int, check_data: bool) -> None:
        super().check(job, spec, index, check_data)
        try:
            import torch  # noqa: F401
        except ImportError:
            raise job.error(f"{spec.id} (homo_nn) needs PyTorch: pip install 'atoll[torch]'",
                            "pipeline", index, "component") from None

    @classmethod
    def _score(cls, m: Any, x: np.ndarray) -> np.ndarray:
        import torch

        m.module.eval()
        with torch.no_grad():
            logits = m.module(torch.as_tensor(x, dtype=torch.float32))
            return torch.softmax(logits, dim=1)[:, 1].double().numpy()
