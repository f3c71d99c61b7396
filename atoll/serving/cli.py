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
    except AtollError as e:
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
    try:
        uvicorn.run(make_app(guest, token), host=host, port=int(port), log_level="warning")
    finally:
        guest.close()


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
