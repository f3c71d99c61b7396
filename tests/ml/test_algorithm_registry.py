"""Registering an algorithm, as a newcomer would: one declaration gives the job component (name,
parameters, layout, task, checks, model parts, twin) and the facade (signature, validation).
A toy two-party algorithm (the sum of both parties' column sums) runs end to end through the
derived facade; the registry is restored after the test."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import Field

from atoll.errors import ConfigError, DataError
from atoll.federation import Party
from atoll.jobs.component import AlgorithmComponent
from atoll.ml import registry
from atoll.ml.facade import FederatedEstimator
from atoll.ml.registry import Algorithm, AlgorithmParams, ModelPart, param_error


class ToyParams(AlgorithmParams):
    scale: float = Field(1.0, gt=0.0)
    rounds: int = Field(1, ge=1)


class ToyGuest:
    def __init__(self, params: ToyParams):
        self.params = params

    def fit(self, ctx: Any, x: np.ndarray) -> dict:
        total = float(x.sum()) + sum(float(v) for v in ctx.gather("host", "sum").values())
        return {"total": total * self.params.scale}


class ToyHost:
    def __init__(self, params: ToyParams):
        self.params = params

    def fit(self, ctx: Any, x: np.ndarray) -> dict:
        ctx.send("guest", "sum", float(x.sum()))
        return {}


def _check(params: ToyParams, parties: dict[str, list[str]]) -> None:
    if params.rounds > 1 and len(parties.get("host", [])) > 1:
        raise param_error("several rounds take one host", "rounds")


def _twin(params: ToyParams, seed: int, task: str) -> tuple[Any, Any]:
    return None, None


def _run(ctx: Any, role: Any, x: np.ndarray) -> dict:
    return role.fit(ctx, x)


class ToySum(FederatedEstimator):
    def fit(self, data: dict) -> "ToySum":
        p = self._params()
        d = self._vertical(data, need_label=False, task="add")
        roles = self.algorithm.roles
        parties = {d.guest: Party("guest", _run, {"role": roles["guest"](p), "x": d.x.x})}
        for name, t in d.hosts.items():
            parties[name] = Party("host", _run, {"role": roles["host"](p), "x": t.x})
        self.total_ = self._run(parties)[d.guest]["total"]
        self._remember(d)
        return self


@pytest.fixture
def toy(monkeypatch):
    alg = Algorithm(name="toy_sum", params=ToyParams, roles={"guest": ToyGuest, "host": ToyHost}, layout="vertical",
                    task="regression", parts={"guest": ModelPart(dict, dict)}, twin=_twin, check=_check,
                    facade_defaults={"scale": 2.0}, summary="the sum of every party's values")
    monkeypatch.setitem(registry._REGISTRY, "toy_sum", alg)
    assert registry.register(alg) is alg  # registering the same declaration again is harmless
    return alg


def test_one_declaration_gives_component_and_facade(toy):
    class ToyComponent(AlgorithmComponent):  # what a component module writes (plus its run/predict)
        algorithm = "toy_sum"

    assert (ToyComponent.name, ToyComponent.Params, ToyComponent.layout, ToyComponent.task) == \
        ("toy_sum", ToyParams, "vertical", "regression")
    assert ToyComponent.centralized_twin is _twin and ToyComponent.__doc__ == toy.summary

    class Facade(ToySum):
        algorithm = toy

    est = Facade()
    assert est.get_params() == {"scale": 2.0, "rounds": 1, "transport": "threads", "timeout": 600.0, "roles": None}
    with pytest.raises(ConfigError, match="scale"):
        Facade(scale=-1)._params()
    x = np.arange(6.0).reshape(3, 2)
    est = Facade(roles={"a": "guest", "b": "host", "c": "host"}).fit({"a": x, "b": 2 * x, "c": x[:, :1]})
    assert est.total_ == pytest.approx(2.0 * (15 + 30 + 6))
    with pytest.raises(DataError, match="b has 2 rows but the guest has 3"):
        Facade(roles={"a": "guest", "b": "host"}).fit({"a": x, "b": x[:2]})


def test_check_hook_errors_name_the_step_and_the_parameter(toy):
    class ToyComponent(AlgorithmComponent):
        algorithm = "toy_sum"

    class Job:  # the two things a check needs from a job spec
        parties = {"g": type("P", (), {"role": "guest"}), "h1": type("P", (), {"role": "host"}),
                   "h2": type("P", (), {"role": "host"})}

        def parties_of(self, role: str) -> list[str]:
            return [k for k, v in self.parties.items() if v.role == role]

        def error(self, msg: str, *path: Any) -> Exception:
            return ValueError(msg, path)

    spec = type("S", (), {"id": "train", "params": {"rounds": 2}})
    with pytest.raises(ValueError) as e:
        ToyComponent.check(Job(), spec, 3, False)
    assert e.value.args == ("train: several rounds take one host", ("pipeline", 3, "params", "rounds"))
    spec.params = {"rounds": 1}
    ToyComponent.check(Job(), spec, 3, False)  # fine with one round
