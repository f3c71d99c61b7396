"""``atoll serve``: start a party's serving process, make mask keys."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Online prediction: a party's serving process (guest predict API or host partial scores).",
                  no_args_is_help=True)


def _fail(e: Exception) -> None:
    typer.secho(f"error: {e}", fg="red", err=True)
    raise typer.Exit(1)


@app.command("host")
def host_cmd(config: Path = typer.Option(..., "--config", help="Host serving config (YAML)"),
             listen: Optional[str] = typer.Option(None, help="Override the config's listen address "
                                                  "(another replica of the same party)")) -> None:
    """Serve this host's partial scores to the session's guests (gRPC, mutual TLS) until stopped."""
    from atoll.errors import AtollError
    from atoll.serving.config import HostConfig, build_host, load_config

    try:
        cfg = load_config(config)
        if not isinstance(cfg, HostConfig):
            raise typer.BadParameter("this is a guest's config; use atoll serve guest")
        host, tls = build_host(cfg)
        server = host.serve(listen or cfg.listen, tls)
        if cfg.metrics_listen:
            from atoll.serving.metrics import serve_metrics

            serve_metrics(host.metrics, cfg.metrics_listen)
    except (AtollError, OSError) as e:
        _fail(e)
    addr = (listen or cfg.listen).rpartition(":")[0]
    typer.echo(f"serving {cfg.party} (session {cfg.session}, versions {', '.join(host.versions)}) "
               f"on {addr}:{host.port}", )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    server.stop(1)


@app.command("guest")
def guest_cmd(config: Path = typer.Option(..., "--config", help="Guest serving config (YAML)"),
              admin_token_file: Optional[Path] = typer.Option(None, help="File with the token for the admin "
                                                              "calls (publish, canary, promote, rollback)")) -> None:
    """Serve the predict API (HTTP/JSON; Prometheus metrics on /metrics) until stopped."""
    import uvicorn

    from atoll.errors import AtollError
    from atoll.serving.config import GuestConfig, build_guest, load_config
    from atoll.serving.http import make_app

    try:
        cfg = load_config(config)
        if not isinstance(cfg, GuestConfig):
            raise typer.BadParameter("this is a host's config; use atoll serve host")
        guest = build_guest(cfg)
        token = admin_token_file.read_text().strip() if admin_token_file else None
    except (AtollError, OSError) as e:
        _fail(e)
    host, _, port = cfg.listen.rpartition(":")
    typer.echo(f"guest predict API on http://{host}:{port}/api/v1/predict (level {cfg.level})")
    grpc_server = None
    if cfg.grpc_listen:
        from atoll.serving.config import tls_of
        from atoll.serving.grpc_api import serve_predict

        grpc_server, gport = serve_predict(guest, cfg.grpc_listen, tls_of(cfg), cfg.grpc_clients)
        typer.echo(f"guest predict API over gRPC on {cfg.grpc_listen.rpartition(':')[0]}:{gport}")
    try:
        uvicorn.run(make_app(guest, token), host=host, port=int(port), log_level="warning")
    finally:
        if grpc_server is not None:
            grpc_server.stop(1)
        guest.close()


def _admin(guest: str, token_file: Path, path: str, body: dict | None = None) -> None:
    import json

    import httpx

    try:
        token = token_file.read_text().strip()
        r = httpx.post(f"{guest.rstrip('/')}/api/v1/{path}", json=body,
                       headers={"Authorization": f"Bearer {token}"}, timeout=30.0)
    except (OSError, httpx.HTTPError) as e:
        _fail(e)
    if r.status_code != 200:
        _fail(Exception(r.json().get("detail", r.text) if r.headers.get("content-type", "").startswith(
            "application/json") else r.text))
    typer.echo(json.dumps(r.json(), indent=2))


GuestOpt = typer.Option(..., "--guest", help="The guest's predict API, e.g. http://127.0.0.1:8080")
TokenOpt = typer.Option(..., "--admin-token-file", help="File with the guest's admin token")


@app.command("publish")
def publish_cmd(version: str = typer.Argument(...), guest: str = GuestOpt, token: Path = TokenOpt) -> None:
    """Make a version routable once every host serves it (checked against the pinned hashes)."""
    _admin(guest, token, "publish", {"version": version})


@app.command("canary")
def canary_cmd(version: str = typer.Argument(...), fraction: float = typer.Option(..., help="Share of ids, 0-1"),
               guest: str = GuestOpt, token: Path = TokenOpt) -> None:
    """Send the share FRACTION of request ids (the same ids every time) to VERSION."""
    _admin(guest, token, "canary", {"version": version, "fraction": fraction})


@app.command("promote")
def promote_cmd(guest: str = GuestOpt, token: Path = TokenOpt) -> None:
    """Make the canary the stable version (the old one is kept for rollback)."""
    _admin(guest, token, "promote")


@app.command("rollback")
def rollback_cmd(guest: str = GuestOpt, token: Path = TokenOpt) -> None:
    """Drop the canary, or restore the version before the last promotion."""
    _admin(guest, token, "rollback")


@app.command("mask-key")
def mask_key_cmd(out: Path = typer.Option(..., help="File to write this host's X25519 private key to")) -> None:
    """Make a host's masking key (for level masked); prints the public key to give the other hosts."""
    from atoll.tee.envelope import x25519_keypair

    sk, pk = x25519_keypair()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(sk)
    typer.echo(pk.hex())


if __name__ == "__main__":
    app()
