"""The ``atoll`` command line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import typer

import atoll
from atoll.tee.cli import app as tee_app
from atoll.hfl_cli import app as hfl_app
from atoll.serving.cli import app as serve_app

app = typer.Typer(help="Atoll: federated learning where every party's raw data stays where it is.",
                  no_args_is_help=True, add_completion=False,
                  context_settings={"help_option_names": ["-h", "--help"]})
certs_app = typer.Typer(help="Certificates for mutual TLS between parties.", no_args_is_help=True)
app.add_typer(certs_app, name="certs")
app.add_typer(tee_app, name="tee")
app.add_typer(hfl_app, name="hfl")
app.add_typer(serve_app, name="serve")


def _node_commands() -> None:
    from atoll.node.cli import register

    register(app)


_node_commands()


LOG_LEVELS = ("debug", "info", "warning", "error")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time, so that under the live progress display
    (which redirects it) a warning is printed above the display instead of into it."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # logging.StreamHandler.__init__ assigns it
        pass


def _print_version(value: bool) -> None:
    if value:
        typer.echo(atoll.__version__)
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="Print Atoll's version and exit."),
          log_level: str = typer.Option("warning", "--log-level", envvar="ATOLL_LOG_LEVEL",
                                        help="Messages of this command at or above this level go to stderr: "
                                             + " | ".join(LOG_LEVELS))) -> None:
    """Atoll: federated learning where every party's raw data stays where it is."""
    level = log_level.lower()
    if level not in LOG_LEVELS:
        raise typer.BadParameter(f"{log_level!r}: use one of {', '.join(LOG_LEVELS)}", param_hint="--log-level")
    logger = logging.getLogger("atoll")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(getattr(logging, level.upper()))


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


@certs_app.command("ca")
def certs_ca(out: Path = typer.Option(..., help="Folder to write ca.pem and ca.key into"),
             days: int = typer.Option(365, help="Validity in days")) -> None:
    """Make a local certificate authority only (nodes sign their own certificates with it: atoll node init --ca)."""
    from atoll.federation.certs import init_certs

    init_certs([], out, days=days)
    typer.echo(f"wrote ca.pem and ca.key to {out}")


@app.command("run")
def run_cmd(job: Optional[Path] = typer.Argument(None, help="Job file (YAML); see examples/"),
            resume: Optional[Path] = typer.Option(None, "--resume", help="Run folder to finish: "
                                                  "completed steps are kept, not run again"),
            centralized_baseline: bool = typer.Option(False, "--centralized-baseline",
                                                      help="Also train the centralised twin on the joined "
                                                      "data (simulation only) and compare in the report"),
            out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default runs/NAME-TIME)"),
            threads: bool = typer.Option(False, "--threads", help="Run parties as threads in this process "
                                         "(fast, for trying things) instead of processes over gRPC/mTLS"),
            quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display")) -> None:
    """Run every party of a job on this machine (processes over loopback gRPC with mutual TLS)."""
    from atoll.errors import AtollError
    from atoll.jobs import run_job
    from atoll.jobs.summary import print_summary

    if (job is None) == (resume is None):
        raise typer.BadParameter("give a job file, or --resume RUN_DIR (not both)")
    try:
        result = run_job(job, run_dir=out, resume=resume, mode="threads" if threads else None,
                         centralized_baseline=centralized_baseline, display=not quiet)
    except AtollError as e:
        typer.secho(str(e), fg="red", err=True)
        raise typer.Exit(1) from None
    print_summary(result)


@app.command("predict")
def predict_cmd(run_dir: Path = typer.Argument(..., help="Folder of a finished 'atoll run'"),
                data: list[str] = typer.Option([], "--data", help="PARTY=FILE: new data for a party "
                                               "(CSV/Parquet, same columns); repeat per party"),
                out: Optional[Path] = typer.Option(None, "--out", help="Output folder"),
                threads: bool = typer.Option(False, "--threads", help="Parties as threads in this process"),
                quiet: bool = typer.Option(False, "--quiet", "-q")) -> None:
    """Apply a trained pipeline to new aligned data; each party loads only its own saved part."""
    from atoll.errors import AtollError
    from atoll.jobs import predict_job

    specs = {}
    for item in data:
        party, eq, path = item.partition("=")
        if not eq or not party or not path:
            raise typer.BadParameter(f"--data {item!r}: write PARTY=FILE")
        specs[party.strip()] = {"path": str(Path(path).resolve())}
    try:
        written = predict_job(run_dir, out_dir=out, data=specs, mode="threads" if threads else None,
                              display=not quiet)
    except AtollError as e:
        typer.secho(str(e), fg="red", err=True)
        raise typer.Exit(1) from None
    for party, path in written.items():
        typer.echo(f"{party}: predictions in {path}")
    for w in written.warnings:
        typer.secho(f"warning: {w}", fg="yellow", err=True)


@app.command("psi")
def psi_command(
        ids: Path = typer.Option(..., help="CSV file with this party's ids (header row; first column "
                                           "unless --column)"),
        column: Optional[str] = typer.Option(None, help="Name of the id column"),
        role: Optional[str] = typer.Option(None, help="guest or host (two-node mode)"),
        party: Optional[str] = typer.Option(None, help="This party's name (default: guest / host_0)"),
        address: Optional[str] = typer.Option(None, help="HOST:PORT this node listens on (exactly there; "
                                                          "0.0.0.0:PORT for every interface) and peers dial"),
        peer: list[str] = typer.Option([], help="Another party as NAME=HOST:PORT (repeat per party)"),
        certs: Optional[Path] = typer.Option(None, help="Folder with ca.pem and PARTY.pem/.key "
                                                        "(from `atoll certs init`) for mutual TLS"),
        job_id: str = typer.Option("psi", help="Same id on every side: names this alignment"),
        standalone: bool = typer.Option(False, help="Run every party here as local processes"),
        host_ids: list[Path] = typer.Option([], help="Standalone: a host's id CSV (repeat per host)"),
        out: Path = typer.Option(..., help="Two-node: CSV to write the aligned ids to; "
                                           "standalone: folder for PARTY.csv files"),
        result_to: str = typer.Option("both", help="both: every party learns the result; "
                                                   "guest: only the guest"),
        duplicates: str = typer.Option("error", help="error, or drop (keep the first occurrence)"),
        strip: bool = typer.Option(True, help="Strip whitespace around ids (must match on all sides)"),
        protocol: str = typer.Option("ecdh", help="ecdh (X25519), kkrt (OT extension: fastest for big "
                                                  "sets) or unbalanced (small set against a huge one)"),
        stream: bool = typer.Option(False, help="kkrt: read the id file in chunks and write the result as it "
                                                "comes (bounded memory, CSV or Parquet; result ordered by id hash)"),
        chunk_rows: int = typer.Option(1 << 20, help="--stream: ids read at a time"),
        cache_dir: Optional[Path] = typer.Option(None, help="unbalanced: folder for this party's offline cache"),
        cardinality: bool = typer.Option(False, help="ecdh, one host: learn only how many ids are in common "
                                                     "(PSI-CA); nothing is written"),
) -> None:
    """Private set intersection: align this party's ids with other parties' without revealing others."""
    from atoll.errors import AtollError
    from atoll.secure import psi_cli
    from atoll.secure.psi import PsiParams

    try:
        params = PsiParams(protocol=protocol, result_to=result_to, duplicates=duplicates, strip=strip,
                           cache_dir=str(cache_dir) if cache_dir else None, cardinality_only=cardinality)
        if stream and protocol != "kkrt":
            raise typer.BadParameter("--stream runs the kkrt protocol: add --protocol kkrt")
        if standalone and stream:
            sizes = psi_cli.run_standalone(ids, host_ids, column, params, stream_to=out, chunk_rows=chunk_rows)
            typer.echo(f"{sizes['guest']} ids in common; aligned ids written to {out}/")
            return
        if standalone:
            results = psi_cli.run_standalone(ids, host_ids, column, params)
            if cardinality:
                typer.echo(f"{results['guest']} ids in common (cardinality only: no ids were learnt)")
                return
            files = {"guest": ids, **{f"host_{i}": h for i, h in enumerate(host_ids)}}
            for name, found in results.items():
                if found is not None:
                    psi_cli.write_ids(out / f"{name}.csv", found, psi_cli.column_name(files[name], column))
            size = len(results["guest"] or [])
            typer.echo(f"{size} ids in common; aligned ids written to {out}/")
            return
        if role not in ("guest", "host") or not address or not peer:
            raise typer.BadParameter("two-node mode needs --role guest|host, --address and --peer "
                                     "(or use --standalone with --host-ids)")
        name = party or ("guest" if role == "guest" else "host_0")
        if psi_cli.role_of(name) != role:
            raise typer.BadParameter(f"party {name!r} does not play role {role!r}")
        if stream:
            size = psi_cli.run_node_stream(name, ids, column, out, address, psi_cli.parse_peers(peer),
                                           str(certs) if certs else None, params, chunk_rows, job_id=job_id)
            typer.echo("done; only the guest learns the intersection (result_to=guest)" if size is None
                       else f"{size} ids in common; aligned ids written to {out}")
            return
        found = psi_cli.run_node(name, psi_cli.read_ids(ids, column), address, psi_cli.parse_peers(peer),
                                 str(certs) if certs else None, params, job_id=job_id)
        if cardinality:
            typer.echo("done; only the guest learns the size (result_to=guest)" if found is None
                       else f"{found} ids in common (cardinality only: no ids were learnt)")
            return
        if found is None:
            typer.echo("done; only the guest learns the intersection (result_to=guest)")
            return
        psi_cli.write_ids(out, found, psi_cli.column_name(ids, column))
        typer.echo(f"{len(found)} ids in common; aligned ids written to {out}")
    except AtollError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
