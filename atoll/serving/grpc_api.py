"""The guest's predict API over gRPC (mutual TLS), beside the HTTP/JSON one.

Service ``atoll.ServingPredict``, method ``Predict``: the request is the wire-encoded dict
``{"ids": [...], "features": {column: float array}?, "exposure": float array?}`` (single or batch),
the answer ``{"ids", "scores" (float array), "versions", "level", "sha256", "request_id"}`` or
``{"error": category, "step": step, "detail": text}``. Callers present a certificate of the
deployment's CA; ``clients`` (names on those certificates) limits who may call.
"""

from __future__ import annotations

from concurrent import futures
from typing import Any, Sequence

import grpc
import numpy as np
import pandas as pd

from atoll import wire
from atoll.errors import ConfigError, WireError
from atoll.serving.protocol import MAX_REQUEST_BYTES, GuestServing, ServingError, _peer_name

SERVICE = "atoll.ServingPredict"


def _predict(guest: GuestServing, payload: bytes) -> dict[str, Any]:
    try:
        body = wire.loads(payload, max_bytes=MAX_REQUEST_BYTES)
    except WireError:
        raise ServingError("bad_request", "parse", "the request is not a wire value") from None
    if not isinstance(body, dict) or not isinstance(body.get("ids"), (list, tuple)):
        raise ServingError("bad_request", "parse", "a request is {ids: [...], features?: {...}}")
    ids = [str(i) if isinstance(i, (int, np.integer)) else i for i in body["ids"]]
    frame = None
    feats = body.get("features")
    if feats is not None:
        if not isinstance(feats, dict) or not all(isinstance(v, np.ndarray) and v.shape == (len(ids),)
                                                  for v in feats.values()):
            raise ServingError("bad_request", "features", "features are {column: one float per id}")
        frame = pd.DataFrame({str(k): v.astype(np.float64) for k, v in feats.items()},
                             index=[str(i) for i in ids])
    s = guest.score(ids, frame, body.get("exposure"))
    return {"ids": s.ids, "scores": s.scores, "versions": s.versions, "level": s.level, "sha256": s.sha256,
            "request_id": s.request_id}


def predict_handler(guest: GuestServing, clients: Sequence[str] | None = None) -> grpc.GenericRpcHandler:
    allowed = None if clients is None else set(clients)

    def predict(request: bytes, context: grpc.ServicerContext) -> bytes:
        who = _peer_name(context)
        if allowed is not None and who not in allowed:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "not a client of this predict API")
        try:
            return wire.dumps(_predict(guest, request))
        except ServingError as e:
            return wire.dumps({"error": e.category, "step": e.step, "detail": str(e)})

    return grpc.method_handlers_generic_handler(SERVICE, {"Predict": grpc.unary_unary_rpc_method_handler(predict)})


def serve_predict(guest: GuestServing, listen: str, tls: Any, clients: Sequence[str] | None = None,
                  max_workers: int = 16) -> tuple[grpc.Server, int]:
    """Start the gRPC predict API (mutual TLS when ``tls`` is given); returns (server, port)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers, thread_name_prefix="atoll-predict"),
                         options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", MAX_REQUEST_BYTES)])
    server.add_generic_rpc_handlers((predict_handler(guest, clients),))
    if tls is None:
        port = server.add_insecure_port(listen)
    else:
        port = server.add_secure_port(listen, grpc.ssl_server_credentials(
            [(tls.key, tls.cert)], root_certificates=tls.ca_cert, require_client_auth=True))
    if port == 0:
        raise ConfigError(f"cannot listen on {listen}: is the port in use?")
    server.start()
    return server, port


class PredictClient:
    """A caller of the guest's gRPC predict API (``tls``: the caller's own certificate)."""

    def __init__(self, address: str, tls: Any, guest: str = "guest"):
        if tls is None:
            self.channel = grpc.insecure_channel(address)
        else:
            creds = grpc.ssl_channel_credentials(tls.ca_cert, tls.key, tls.cert)
            self.channel = grpc.secure_channel(address, creds, options=[("grpc.ssl_target_name_override", guest)])
        self._call = self.channel.unary_unary(f"/{SERVICE}/Predict")

    def predict(self, ids: Sequence[Any], features: dict[str, np.ndarray] | None = None,
                timeout: float = 10.0) -> dict[str, Any]:
        body: dict[str, Any] = {"ids": list(ids)}
        if features is not None:
            body["features"] = {k: np.asarray(v, dtype=np.float64) for k, v in features.items()}
        ans = wire.loads(self._call(wire.dumps(body), timeout=timeout), max_bytes=64 << 20)
        if "error" in ans:
            raise ServingError(str(ans["error"]), str(ans.get("step")), str(ans.get("detail")))
        return ans

    def close(self) -> None:
        self.channel.close()
