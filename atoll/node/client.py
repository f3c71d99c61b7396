"""A small client of a node's REST API (what the ``atoll job|data|audit|model`` commands use).

The node's URL comes from ``--node`` or ``ATOLL_NODE``; the token from ``--token``,
``ATOLL_TOKEN`` or the credentials file ``atoll login`` writes (``ATOLL_CREDENTIALS``,
default ``~/.config/atoll/credentials.json``, mode 0600, one token per node URL).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx

from atoll.errors import AtollError, ConfigError


class NodeError(AtollError):
    """The node refused a request; the text is the node's reason."""

    def __init__(self, status: int, detail: str):
        self.status = status
        super().__init__(detail)


def credentials_file() -> Path:
    return Path(os.environ.get("ATOLL_CREDENTIALS") or Path.home() / ".config" / "atoll" / "credentials.json")


def save_token(url: str, token: str) -> Path:
    f = credentials_file()
    f.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(f.read_text()) if f.exists() else {}
    data[url.rstrip("/")] = token
    f.write_text(json.dumps(data, indent=1))
    f.chmod(0o600)
    return f


def node_url(url: str | None) -> str:
    url = url or os.environ.get("ATOLL_NODE")
    if not url:
        raise ConfigError("which node? pass --node http://HOST:PORT or set ATOLL_NODE")
    return url if url.startswith(("http://", "https://")) else f"http://{url}"


def saved_token(url: str) -> str | None:
    f = credentials_file()
    if not f.exists():
        return None
    return json.loads(f.read_text()).get(url.rstrip("/"))


class NodeClient:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0):
        self.url = node_url(url).rstrip("/")
        self.token = token or os.environ.get("ATOLL_TOKEN") or saved_token(self.url)
        self._http = httpx.Client(base_url=self.url + "/api/v1", timeout=timeout)

    def request(self, method: str, path: str, auth: bool = True, **kw: Any) -> Any:
        headers = kw.pop("headers", {})
        if auth:
            if not self.token:
                raise ConfigError(f"no token for {self.url}: run `atoll login --node {self.url} --bootstrap-file "
                                  "NODE_DIR/bootstrap.token` (or pass --token)")
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            r = self._http.request(method, path, headers=headers, **kw)
        except httpx.HTTPError as e:
            raise ConfigError(f"cannot reach the node at {self.url}: {e}; is `atoll node start` running?") from None
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise NodeError(r.status_code, detail if isinstance(detail, str) else json.dumps(detail))
        if r.headers.get("content-type", "").startswith("application/json"):
            return r.json()
        return r.content

    def wait_up(self, seconds: float) -> None:
        """Wait until the node answers /health (it may still be starting)."""
        end = time.time() + seconds
        while True:
            try:
                self.get("/health", auth=False)
                return
            except ConfigError:
                if time.time() >= end:
                    raise
                time.sleep(0.3)

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, json=body, **kw)

    def close(self) -> None:
        self._http.close()
