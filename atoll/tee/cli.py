"""``atoll tee ...``: the Data Lab tools (keys, policies, measuring, launching, encrypting, authorising)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Trusted execution: attested enclaves, data encrypted to them, pooled training inside.",
                  no_args_is_help=True, add_completion=False)


def _fail(e: Exception) -> None:
    typer.secho(f"error: {e}", fg="red", err=True)
    raise typer.Exit(1)


@app.command()
def keygen(name: str = typer.Option(..., help="This party's name"),
           out: Path = typer.Option(..., help="File for the private keys (mode 0600)")) -> None:
    """Make a party's keys: Ed25519 (signs authorisations) and X25519 (receives models). Prints the public part."""
    from atoll.tee.authorisation import PartyKeys

    keys = PartyKeys.generate(name)
    keys.save(out)
    pub = out.with_suffix(".pub.json")
    pub.write_text(keys.public().model_dump_json(indent=2) + "\n")
    typer.echo(f"private keys in {out}; public keys in {pub}")


@app.command()
def measure(workload: str = typer.Option("tee-ml", help="Workload name"),
            root: Optional[Path] = typer.Option(None, help="Source root holding atoll/ (default: this install)"),
            manifest: bool = typer.Option(False, help="Print the whole manifest, not just the measurement")) -> None:
    """Print a workload's measurement (SHA-256 of its manifest: its files, libraries, configuration)."""
    from atoll.errors import AtollError
    from atoll.tee import measure as m

    try:
        man = m.manifest(m.get_workload(workload), root)
    except AtollError as e:
        _fail(e)
    typer.echo(json.dumps(man, indent=2, sort_keys=True) if manifest else m.measurement_of(man))


@app.command("sim-platform")
def sim_platform(folder: Optional[Path] = typer.Option(None, "--dir", help="Platform folder "
                                                        "(default $ATOLL_TEE_SIM_DIR or ~/.atoll/tee-sim)")) -> None:
    """Create (if needed) the simulated enclave platform and print its attestation public key."""
    from atoll.tee.simulated import SIMULATED_MARK, SimulatedPlatform

    p = SimulatedPlatform(folder)
    typer.echo(f"{SIMULATED_MARK}\nsimulated platform {p.folder}\nattestation key: {p.public_key.hex()}")


@app.command()
def policy(measurement: list[str] = typer.Option(..., help="Allowed measurement (repeat)"),
           out: Path = typer.Option(..., help="Policy file to write (JSON; YAML is read too)"),
           address: Optional[str] = typer.Option(None, help="HOST:PORT of the enclave's attested channel"),
           backend: list[str] = typer.Option(["sgx-dcap"], help="Accepted backend (repeat): sgx-dcap, tdx, "
                                             "gramine-sgx, simulated"),
           tcb: list[str] = typer.Option(["UpToDate"], help="Accepted TCB status (repeat)"),
           sim_dir: Optional[Path] = typer.Option(None, help="With backend simulated: pin this simulated "
                                                  "platform's key (default platform folder)")) -> None:
    """Write an enclave policy: the measurements, backends and TCB statuses an owner accepts."""
    from atoll.tee.base import EnclavePolicy
    from atoll.tee.simulated import SimulatedPlatform

    keys = [SimulatedPlatform(sim_dir).public_key.hex()] if "simulated" in backend else []
    try:
        EnclavePolicy(measurements=measurement, backends=backend, accepted_tcb=tcb, simulated_platform_keys=keys,
                      address=address).save(out)
    except ValueError as e:
        _fail(e)
    typer.echo(f"wrote {out}" + (" (accepts SIMULATED: NO HARDWARE PROTECTION enclaves)" if keys else ""))


@app.command()
def launch(workdir: Path = typer.Option(..., help="Folder for the enclave's image and log"),
           backend: str = typer.Option("simulated", help="simulated or gramine-sgx"),
           workload: str = typer.Option("tee-ml"),
           sim_dir: Optional[Path] = typer.Option(None, help="Simulated platform folder"),
           host: str = typer.Option("127.0.0.1", help="Address the simulated enclave's attested channel binds")
           ) -> None:
    """Start an enclave and keep it running (Ctrl-C stops it); prints its address and measurement."""
    from atoll.errors import AtollError
    from atoll.tee.base import get_backend

    try:
        opts = {"workdir": workdir}
        if backend == "simulated":
            opts.update(platform_dir=sim_dir, host=host)
        enclave = get_backend(backend)().launch(workload, **opts)
    except AtollError as e:
        _fail(e)
    mark = "SIMULATED: NO HARDWARE PROTECTION\n" if enclave.simulated else ""
    typer.echo(f"{mark}enclave {workload} on {backend}\naddress: {enclave.address[0]}:{enclave.address[1]}\n"
               f"measurement: {enclave.measurement}\nlog: {enclave.log_path}")
    try:
        while enclave.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        enclave.stop()


@app.command()
def encrypt(data: Path = typer.Argument(..., help="CSV or Parquet file of this party's rows"),
            to: Path = typer.Option(..., "--to", help="Enclave policy (atoll tee policy) naming its address"),
            out: Path = typer.Option(..., help="Encrypted file to write"),
            owner: str = typer.Option(..., help="This party's name"),
            keys: Path = typer.Option(..., help="This party's keys (atoll tee keygen)"),
            krs: Path = typer.Option(..., help="This party's key-release service folder"),
            id_column: Optional[str] = typer.Option(None, "--id", help="Id column (default: the first)"),
            label: Optional[str] = typer.Option(None, help="Label column (label holder only)"),
            chunk_rows: int = typer.Option(4096, help="Rows per encrypted chunk (the enclave streams chunks)"),
            upload: Optional[str] = typer.Option(None, help="Also upload to a folder or s3://BUCKET/PREFIX")) -> None:
    """Attest the enclave, check it against the policy, encrypt DATA so only that measurement can open it."""
    from atoll.errors import AtollError
    from atoll.tee.authorisation import PartyKeys
    from atoll.tee.base import EnclavePolicy
    from atoll.tee.datalab import encrypt_file
    from atoll.tee.keyrelease import KeyReleaseService

    try:
        pol = EnclavePolicy.load(to)
        service = KeyReleaseService(krs, PartyKeys.load(keys), pol.simulated_platform_keys, pol.accepted_tcb)
        res = encrypt_file(data, pol, out, owner, service, id_column, label, chunk_rows, upload_to=upload)
    except AtollError as e:
        _fail(e)
    h = res["header"]
    mark = "SIMULATED: NO HARDWARE PROTECTION: " if res["attested"]["simulated"] else ""
    typer.echo(f"{mark}encrypted {h['n_rows']} rows x {len(h['columns'])} columns to enclave "
               f"{h['enclave']['measurement']} ({h['enclave']['backend']})\nkey id: {h['key_id']}\n"
               f"location: {res['location']}")


@app.command()
def authorise(keys: Path = typer.Option(..., help="The owner's keys"),
              krs: Path = typer.Option(..., help="The owner's key-release service folder"),
              key_id: str = typer.Option(..., help="Key id of the encrypted file (atoll tee encrypt prints it)"),
              job: str = typer.Option(..., help="Job id the authorisation is for"),
              measurement: list[str] = typer.Option(..., help="Allowed workload measurement (repeat)"),
              recipient: list[str] = typer.Option(..., help="Partner allowed to receive the model: a public "
                                                  "keys file from atoll tee keygen (repeat)"),
              backend: list[str] = typer.Option(["sgx-dcap"], help="Allowed backend (repeat)"),
              operation: list[str] = typer.Option(["train"], help="train and/or predict"),
              dataset: str = typer.Option("data", help="Name of the data set"),
              expires_in: float = typer.Option(86400.0, help="Seconds until it expires"),
              out: Path = typer.Option(..., help="Signed authorisation to write (JSON)")) -> None:
    """Sign an authorisation: which measurement, job and partners may use one encrypted data set."""
    from atoll.errors import AtollError
    from atoll.tee.authorisation import PartyKeys, PartyPublic
    from atoll.tee.keyrelease import KeyReleaseService

    try:
        pubs = [PartyPublic.model_validate_json(Path(r).read_text()) for r in recipient]
        service = KeyReleaseService(krs, PartyKeys.load(keys))
        signed = service.authorise(key_id, dataset, job, measurement, {p.name: p.box_key for p in pubs},
                                   backends=backend, operations=operation, expires_in=expires_in)
    except (AtollError, OSError, ValueError) as e:
        _fail(e)
    out.write_text(json.dumps({"body": signed.body.hex(), "signature": signed.signature.hex()}) + "\n")
    typer.echo(f"authorisation {json.loads(signed.body)['id']} written to {out}")


@app.command()
def revoke(keys: Path = typer.Option(...), krs: Path = typer.Option(...),
           authorisation_id: str = typer.Argument(..., help="Id printed by atoll tee authorise")) -> None:
    """Withdraw an authorisation: the key-release service refuses every later run under it."""
    from atoll.tee.authorisation import PartyKeys
    from atoll.tee.keyrelease import KeyReleaseService

    KeyReleaseService(krs, PartyKeys.load(keys)).revoke(authorisation_id)
    typer.echo(f"revoked {authorisation_id}")


@app.command("verify-quote")
def verify_quote(quote: Path = typer.Argument(..., help="Raw SGX or TDX DCAP quote"),
                 collateral: Path = typer.Option(..., help="Collateral JSON (from a PCCS)"),
                 backend: str = typer.Option("sgx-dcap", help="sgx-dcap or tdx"),
                 at: Optional[float] = typer.Option(None, help="Verify as of this Unix time (default now)")) -> None:
    """Verify a real quote with dcap-qvl and print its measurement, TCB status and advisories."""
    from atoll.errors import AtollError
    from atoll.tee.base import EnclavePolicy, Evidence, get_backend

    try:
        facts = get_backend(backend).verify_quote(Evidence(backend, quote.read_bytes(), collateral.read_text()),
                                                  EnclavePolicy(measurements=["00"], backends=[backend]),
                                                  time.time() if at is None else at)
    except AtollError as e:
        _fail(e)
    typer.echo(json.dumps({"measurement": facts.measurement, "tcb_status": facts.tcb_status,
                           "advisories": list(facts.advisories), "debug": facts.debug,
                           "report_data": facts.report_data.hex(), **facts.details}, indent=2))


@app.command("gramine-manifest")
def gramine_manifest_cmd(out: Path = typer.Option(..., help="Folder for the image and the manifest template"),
                         workload: str = typer.Option("tee-ml"),
                         enclave_size: str = typer.Option("2G", help="Enclave size (a power of two)")) -> None:
    """Build the workload's image and write its Gramine manifest template (for SGX machines)."""
    from atoll.errors import AtollError
    from atoll.tee.gramine import gramine_manifest
    from atoll.tee.measure import build_image

    try:
        image = build_image(workload, out / "image")
        (out / "python.manifest.template").write_text(gramine_manifest(image, enclave_size=enclave_size))
    except AtollError as e:
        _fail(e)
    typer.echo(f"image and {out / 'python.manifest.template'} written; Atoll measurement {image.measurement}\n"
               "next: gramine-manifest, gramine-sgx-sign (prints MRENCLAVE: put it in the owners' policies), "
               "gramine-sgx python")
