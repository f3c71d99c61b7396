"""Test-only components (loaded through a job file's ``plugins:``), to exercise the runner
without the cryptographic algorithms:

* ``toy_vlr``: a vertical logistic regression in PLAINTEXT (hosts send x_h @ w_h to the
  guest, the guest sends the residual back). Insecure on purpose; a test double only.
* ``slow``: waits ``seconds`` while exchanging a message per tick (kill/resume tests).
* ``boom``: raises at one party (failure reporting tests).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict
from sklearn.linear_model import LogisticRegression

from atoll.jobs import Component, Slot, TaskContext, register


class ToyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs: int = 30
    lr: float = 0.5


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


@register
class ToyVLR(Component):
    name = "toy_vlr"
    inputs = {"train": Slot("data")}
    outputs = {"model": "model"}
    Params = ToyParams
    layout = "vertical"

    def run_guest(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        t = inputs["train"]
        x, y = t.values(), t.y.to_numpy(dtype=float)
        w = np.zeros(x.shape[1]); b = 0.0
        losses = []
        for e in range(self.params.epochs):
            with tc.fed.scope("epoch", e):
                z = x @ w + b + sum(tc.fed.gather("host", "wx").values())
                p = _sigmoid(z)
                d = (p - y) / len(y)
                tc.fed.send("host", "d", d)
                w -= self.params.lr * (x.T @ d)
                b -= self.params.lr * d.sum()
                losses.append(float(-np.mean(y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12))))
            tc.progress((e + 1) / self.params.epochs)
        return {"model": {"w": w, "b": b, "history": {"loss": losses}}}

    def run_host(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        x = inputs["train"].values()
        w = np.zeros(x.shape[1])
        for e in range(self.params.epochs):
            with tc.fed.scope("epoch", e):
                tc.fed.send("guest", "wx", x @ w)
                d = tc.fed.recv("guest", "d")
                w -= self.params.lr * (x.T @ d)
        return {"model": {"w": w}}

    @classmethod
    def predict(cls, tc: TaskContext, model: dict, data: Any, params: Any) -> dict | None:
        if tc.role == "host":
            tc.fed.send("guest", "wx", data.values() @ model["w"])
            return None
        if tc.role == "guest":
            z = data.values() @ model["w"] + model["b"] + sum(tc.fed.gather("host", "wx").values())
            return {"ids": np.asarray(data.ids, dtype=np.int64), "score": _sigmoid(z),
                    "label": None if data.y is None else data.y.to_numpy(), "task": "binary"}
        return None

    @classmethod
    def centralized_twin(cls, params: Any, seed: int, task: str):
        return LogisticRegression(max_iter=1000, random_state=seed), lambda m, x: m.predict_proba(x)[:, 1]


class SlowParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = 1.0


@register
class Slow(Component):
    name = "slow"
    inputs = {"data": Slot("data", optional=True)}
    outputs = {"data": "data"}
    Params = SlowParams

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        end = time.monotonic() + self.params.seconds
        i = 0
        peers = [p for p in tc.fed.parties if p != tc.party]
        while True:  # the leader's clock alone decides when to stop (a local clock would race)
            with tc.fed.scope("tick", i):
                tc.fed.send(peers, "tick", i)
                tc.fed.gather(peers, "tick")
            time.sleep(0.05)
            i += 1
            # every party ticks the same number of times: agree on stopping with the guest's clock
            with tc.fed.scope("stop", i):
                if tc.party == sorted(tc.fed.parties)[0]:
                    stop = time.monotonic() >= end
                    tc.fed.send(peers, "stop", stop)
                else:
                    stop = tc.fed.recv(sorted(tc.fed.parties)[0], "stop")
            if stop:
                break
        return {"data": inputs.get("data")}


class BoomParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    party: str = "guest"


@register
class Boom(Component):
    name = "boom"
    inputs = {"data": Slot("data", optional=True)}
    outputs = {"data": "data"}
    Params = BoomParams

    def run(self, tc: TaskContext, inputs: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.2)
        if tc.party == self.params.party:
            raise ValueError("boom: the injected failure\n  (a cause spread over two lines)")
        return {"data": inputs.get("data")}
