"""Plumbing of ``atoll psi``: read ids from CSV, run PSI between nodes or standalone, write the result.

Two nodes (each runs its own command; certificates from ``atoll certs init``)::

    atoll psi --role guest --party guest --ids guest.csv --address 10.0.0.1:50051 \\
        --peer host_0=10.0.0.2:50052 --certs certs/ --out aligned.csv
    atoll psi --role host --party host_0 --ids host.csv --address 10.0.0.2:50052 \\
        --peer guest=10.0.0.1:50051 --certs certs/ --out aligned.csv

``--address`` is where this node listens — exactly that address, nothing else — and
where its peers dial it (pass ``0.0.0.0:PORT`` to listen on every interface).

Standalone (every party as a local process over gRPC + mutual TLS on loopback)::

    atoll psi --standalone --ids guest.csv --host-ids host.csv --out aligned/

``--protocol kkrt`` runs KKRT-PSI (OT extension) instead of ECDH; with ``--stream`` the id
file (CSV or Parquet) is read in chunks and the result written as it comes, in bounded
memory (:mod:`atoll.secure.psi_stream`). ``--protocol unbalanced --cache-dir DIR`` keeps
the offline phase of unbalanced PSI between runs (:mod:`atoll.secure.psi_unbalanced`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from atoll.errors import ConfigError, DataError
from atoll.secure.psi import PsiParams, run_psi


def read_ids(path: str | Path, column: str | None = None) -> list[str]:
    """The id column of a CSV file (header row; first column unless ``column``), read as text."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"id file {path} does not exist")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if frame.shape[1] == 0:
        raise DataError(f"{path} has no columns; put the ids in a column with a header")
    if column is None:
        column = str(frame.columns[0])
    if column not in frame.columns:
        raise ConfigError(f"{path} has no column {column!r}; its columns are {list(frame.columns)}")
    return frame[column].tolist()


def column_name(path: str | Path, column: str | None = None) -> str:
    """The id column's name: ``column``, or the header of the first column of ``path``."""
    if column:
        return column
    import pandas as pd

    return str(pd.read_csv(path, dtype=str, nrows=0).columns[0])


def write_ids(path: str | Path, ids: Sequence[Any], column: str = "id") -> None:
    import pandas as pd

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({column: list(ids)}).to_csv(path, index=False)


def role_of(party: str) -> str:
    if party == "guest" or party.startswith("guest_"):
        return "guest"
    if party == "host" or party.startswith("host_"):
        return "host"
    raise ConfigError(f"party name {party!r}: use 'guest' or 'host_0', 'host_1', ...")


def parse_peers(peers: Sequence[str]) -> dict[str, str]:
    out = {}
    for spec in peers:
        name, sep, addr = spec.partition("=")
        if not sep or ":" not in addr or not name:
            raise ConfigError(f"--peer {spec!r}: use NAME=HOST:PORT, e.g. host_0=10.0.0.2:50052")
        out[name.strip()] = addr.strip()
    return out


def run_node(party: str, ids: list[str], address: str, peers: dict[str, str], certs: str | None,
             params: PsiParams, job_id: str = "psi", timeout: float = 3600.0) -> Any:
    """Run this node's side of a PSI over gRPC (mutual TLS when ``certs`` is given): this party's
    ids of the intersection (None at a host with ``result_to="guest"``), or with
    ``params.cardinality_only`` the intersection size."""
    def work(ctx: Any) -> Any:
        res = run_psi(ctx, ids, params)
        return res.size if params.cardinality_only else res.ids

    return _on_node(party, address, peers, certs, job_id, timeout, work)


def run_node_stream(party: str, path: str | Path, column: str | None, out: str | Path, address: str,
                    peers: dict[str, str], certs: str | None, params: PsiParams, chunk_rows: int = 1 << 20,
                    job_id: str = "psi", timeout: float = 3600.0) -> int | None:
    """This node's side of a streamed KKRT-PSI of the file ``path``; the result goes to ``out``.
    Returns the intersection size (None at a host when only the guest learns it)."""
    from atoll.secure.psi_stream import stream_psi

    return _on_node(party, address, peers, certs, job_id, timeout,
                    lambda ctx: stream_psi(ctx, path, out, column, params, chunk_rows).size)


def _on_node(party: str, address: str, peers: dict[str, str], certs: str | None, job_id: str,
             timeout: float, work: Any) -> Any:
    from atoll.federation.certs import TlsConfig
    from atoll.federation.context import Context
    from atoll.federation.grpc_transport import GrpcEndpoint
    from atoll.federation.transport import failure_summary

    addresses = {party: address, **peers}
    roles = {p: role_of(p) for p in addresses}
    tls = TlsConfig.load(certs, party) if certs else None
    endpoint = GrpcEndpoint(party, addresses, tls, listen=address)  # exactly there, nowhere else
    try:
        transport = endpoint.open_job(job_id, roles)
        ctx = Context(party, roles, transport, task="psi", timeout=timeout)
        try:
            return work(ctx)
        except BaseException as e:
            transport.abort(failure_summary(e))
            raise
    finally:
        endpoint.close()


def _standalone_party(ctx: Any, path: str, column: str | None, params: dict) -> Any:
    res = run_psi(ctx, read_ids(path, column), PsiParams(**params))
    return res.size if res.ids is None and params.get("cardinality_only") else res.ids


def _standalone_stream(ctx: Any, path: str, column: str | None, params: dict, out: str,
                       chunk_rows: int) -> int | None:
    from atoll.secure.psi_stream import stream_psi

    return stream_psi(ctx, path, out, column, PsiParams(**params), chunk_rows).size


def run_standalone(guest_ids: str | Path, host_ids: Sequence[str | Path], column: str | None,
                   params: PsiParams, stream_to: str | Path | None = None,
                   chunk_rows: int = 1 << 20) -> dict[str, Any]:
    """Every party as a local process (gRPC + mutual TLS on loopback); ``{party: result}``.

    With ``stream_to`` (a folder), each party streams its file through KKRT-PSI and writes
    ``PARTY.csv`` there itself; the results are then the intersection sizes.
    """
    from atoll.federation import Party, launch

    if not host_ids:
        raise ConfigError("standalone PSI needs at least one --host-ids file")
    kw = dataclasses.asdict(params)
    names = {"guest": guest_ids, **{f"host_{i}": path for i, path in enumerate(host_ids)}}
    parties = {}
    for name, path in names.items():
        role = "guest" if name == "guest" else "host"
        if stream_to is None:
            parties[name] = Party(role, _standalone_party, {"path": str(path), "column": column, "params": kw})
        else:
            parties[name] = Party(role, _standalone_stream, {
                "path": str(path), "column": column, "params": kw, "out": str(Path(stream_to) / f"{name}.csv"),
                "chunk_rows": chunk_rows})
    return launch(parties, mode="processes", timeout=3600.0)
