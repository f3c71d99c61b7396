"""``atoll hfl``: horizontal FL with clients that dial out to a server (see :mod:`atoll.hfl`).

    atoll hfl token issue --store tokens.json --client phone_17      # the operator, once per client
    atoll hfl server --config server.yaml
    atoll hfl client --server HOST:7100 --data mine.csv --certs certs/ --name client_07
    atoll hfl client --server HOST:7101 --data mine.csv --token atoll-hfl:... --ca ca.pem
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Horizontal FL across machines: one server, clients that dial out to it "
                       "(cross-device or cross-silo; clients open no port).", no_args_is_help=True)
token_app = typer.Typer(help="Enrolment tokens: let a client in without a certificate.", no_args_is_help=True)
app.add_typer(token_app, name="token")


def _fail(e: Exception) -> None:
    typer.secho(f"error: {e}", fg="red", err=True)
    raise typer.Exit(1)


@app.command("server")
def server_cmd(config: Path = typer.Option(..., "--config", help="Server YAML: job, certs, listen / token_listen, "
                                           "tokens, clients, model, params (the homo_lr parameters), ..."),
               quiet: bool = typer.Option(False, "--quiet", "-q", help="No per-round lines")) -> None:
    """Run a dial-in job: wait for the clients, train every round, save the model (the config's out)."""
    from atoll.errors import AtollError
    from atoll.hfl import ServerConfig, serve

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = ServerConfig.load(config)

        def started(endpoint) -> None:
            where = [f"{cfg.listen} (port {endpoint.port}, client certificates)" if cfg.listen else "",
                     f"{cfg.token_listen} (port {endpoint.token_port}, enrolment tokens)" if cfg.token_listen else ""]
            typer.echo(f"server {cfg.name!r}, job {cfg.job!r}, listening on {' and '.join(w for w in where if w)}")

        def stage(r: dict) -> None:
            if not quiet and r["stage"] in ("fit", "advertise", "evaluate"):
                typer.echo(f"round {r['round']}: {r['stage']} {r['answered']}/{r['asked']} clients answered "
                           f"in {r['seconds']:.2f} s")

        weights, history = serve(cfg, stage, started)
    except AtollError as e:
        _fail(e)
    last = history.rounds[-1] if history.rounds else {}
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k.startswith(("server_", "eval_", "train_"))
                        and isinstance(v, float))
    typer.echo(f"done: {len(history)} rounds; {metrics}" + (f"; model in {cfg.out}" if cfg.out else ""))


@app.command("client")
def client_cmd(server: str = typer.Option(..., "--server", help="HOST:PORT of the server"),
               data: Path = typer.Option(..., "--data", help="This client's rows (CSV or Parquet)"),
               label: str = typer.Option("y", help="Label column"),
               test_data: Optional[Path] = typer.Option(None, "--test-data", help="Local test rows (evaluation)"),
               drop: list[str] = typer.Option([], "--drop", help="A column that is not a feature (e.g. an id); "
                                              "repeat. Ignored when the server names the features"),
               certs: Optional[Path] = typer.Option(None, help="Folder with ca.pem and NAME.pem/.key"),
               name: Optional[str] = typer.Option(None, help="This client's name (its certificate's)"),
               token: Optional[str] = typer.Option(None, envvar="ATOLL_HFL_TOKEN",
                                                   help="Enrolment token (or env ATOLL_HFL_TOKEN)"),
               ca: Optional[Path] = typer.Option(None, help="The federation's CA certificate (with --token)"),
               server_name: str = typer.Option("server", help="The party the server's certificate names"),
               job: str = typer.Option("hfl", help="Job id (the server's config says it)"),
               out: Optional[Path] = typer.Option(None, help="Save the final model here (.npz)"),
               retry_for: float = typer.Option(600.0, help="Seconds to keep trying to reach the server (at the start, "
                                                           "and after a lost connection)"),
               ) -> None:
    """Join a dial-in job: connect out to the server, train when asked, until the job ends."""
    from atoll.errors import AtollError
    from atoll.federation.certs import TlsConfig
    from atoll.hfl import HflClient, load_xy
    from atoll.ml.horizontal.roles import ClientData

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if (token is None) == (certs is None):
            raise typer.BadParameter("give --certs and --name (a certificate), or --token and --ca (a token)")
        if certs is not None and not name:
            raise typer.BadParameter("--certs needs --name (the client's certificate is NAME.pem)")
        if token is not None and ca is None:
            raise typer.BadParameter("--token needs --ca (the federation's CA certificate, to check the server)")

        def rows(spec):  # the columns the job's model names, read once it is known
            classification = spec.task == "classification"
            x, y = load_xy(data, label, spec.features, drop, classification)
            if test_data is None:
                return ClientData(x, y)
            xt, yt = load_xy(test_data, label, spec.features, drop, classification)
            return ClientData(x, y, xt, yt)

        tls = TlsConfig.load(certs, name) if certs is not None else None
        client = HflClient(server, rows, tls=tls, token=token, ca_cert=ca.read_bytes() if ca else None,
                           server_name=server_name, job_id=job, retry_for=retry_for)
        typer.echo(f"client {client.party!r} dialling {server} for job {job!r}")
        result = client.run()
    except AtollError as e:
        _fail(e)
    if out is not None and result.weights is not None:
        import numpy as np

        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, **{f"w{i}": w for i, w in enumerate(result.weights)})
    typer.echo(f"{result.ended}: trained in {result.rounds_trained} rounds over {result.sessions} session(s)"
               + (f"; model in {out}" if out is not None and result.weights is not None else ""))


@token_app.command("issue")
def token_issue(store: Path = typer.Option(..., help="Token file (created if missing; keep it with the server)"),
                client: str = typer.Option(..., help="The client's name"),
                note: str = typer.Option("", help="What or whose device it is")) -> None:
    """Issue a token for a client; it is printed once (the store keeps a hash only)."""
    from atoll.errors import AtollError
    from atoll.federation.tokens import TokenStore

    try:
        typer.echo(TokenStore(store).issue(client, note))
    except AtollError as e:
        _fail(e)


@token_app.command("revoke")
def token_revoke(store: Path = typer.Option(..., help="Token file"),
                 id: Optional[str] = typer.Option(None, "--id", help="The token's id (see `list`)"),
                 client: Optional[str] = typer.Option(None, help="Revoke every token of this client")) -> None:
    """Revoke a token (a running server refuses it from now on and drops the client using it)."""
    from atoll.errors import AtollError
    from atoll.federation.tokens import TokenStore

    try:
        ids = TokenStore(store).revoke(token_id=id, client=client)
    except AtollError as e:
        _fail(e)
    typer.echo(f"revoked {', '.join(ids)}")


@token_app.command("list")
def token_list(store: Path = typer.Option(..., help="Token file")) -> None:
    """The tokens of a store: id, client, issued, revoked, note (never the secrets)."""
    from atoll.errors import AtollError
    from atoll.federation.tokens import TokenStore

    try:
        rows = TokenStore(store).list()
    except AtollError as e:
        _fail(e)
    for r in rows:
        state = f"revoked {r['revoked']}" if r["revoked"] else "live"
        typer.echo(f"{r['id']}  {r['client']:20s}  issued {r['issued']}  {state}  {r['note']}")
