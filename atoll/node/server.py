"""``atoll node start``: the node and its REST API in one process, until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from atoll.node.config import NodeConfig


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def serve(config: str | Path, log_file: str | Path | None = None) -> None:
    import uvicorn

    from atoll.node.api import build_app
    from atoll.node.service import Node

    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    cfg = NodeConfig.load(config)
    node = Node(cfg)
    pid_file = cfg.resolve("node.pid")
    pid_file.write_text(str(os.getpid()))
    host, port = _host_port(cfg.api)
    logging.getLogger("atoll.node").info("node %s: federation %s, REST http://%s/api/v1 (OpenAPI at /docs), "
                                         "board http://%s/board/", cfg.name, cfg.federation, cfg.api, cfg.api)
    print(f"node {cfg.name}: federation {cfg.federation} (gRPC + mTLS), REST http://{cfg.api}/api/v1 "
          f"(OpenAPI at http://{cfg.api}/docs), board http://{cfg.api}/board/", flush=True)
    try:
        # open board streams end within a few seconds of a stop instead of holding it
        uvicorn.run(build_app(node), host=host, port=port, log_level="warning", access_log=False,
                    timeout_graceful_shutdown=3)
    finally:
        node.close()
        pid_file.unlink(missing_ok=True)
        logging.shutdown()
    # background deliveries to partners that are gone may still be retrying: they hold nothing
    # that needs flushing (the store is closed), so the process ends now instead of joining them
    os._exit(0)
