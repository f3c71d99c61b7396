"""The ``atoll`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

import atoll

app = typer.Typer(help="Atoll: federated learning where every party's raw data stays where it is.",
                  no_args_is_help=True, add_completion=False)
certs_app = typer.Typer(help="Certificates for mutual TLS between parties.", no_args_is_help=True)
app.add_typer(certs_app, name="certs")


@app.command()
def version() -> None:
    """Print Atoll's version."""
    typer.echo(atoll.__version__)


@certs_app.command("init")
def certs_init(parties: str = typer.Option(..., help="Comma-separated party names, e.g. guest,host,arbiter"),
               out: Path = typer.Option(..., help="Folder to write ca.pem and PARTY.pem/.key into"),
               days: int = typer.Option(365, help="Validity in days"),
               hosts: Optional[str] = typer.Option(None, help="Extra host names / IPs for the certificates")
               ) -> None:
    """Make a local CA and one key pair per party (the certificate names the party)."""
    from atoll.federation.certs import init_certs

    names = [p.strip() for p in parties.split(",") if p.strip()]
    if not names:
        raise typer.BadParameter("name at least one party")
    init_certs(names, out, days=days, hosts=[h.strip() for h in (hosts or "").split(",") if h.strip()])
    typer.echo(f"wrote CA and certificates for {', '.join(names)} to {out}")


if __name__ == "__main__":
    app()
