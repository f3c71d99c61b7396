"""KKRT-PSI on id files too big for memory: ids read in chunks, spilled to disk by hash, bucket by bucket.

:func:`stream_psi` runs the protocol of :mod:`atoll.secure.psi_kkrt` (same
messages, same leakage: see "what each party sees" there) on a CSV or Parquet
file and writes the intersection to a CSV file, holding at most one chunk of
input ids and one bucket of the protocol in memory:

1. Spill: the id column is read ``chunk_rows`` at a time (pandas for CSV,
   pyarrow for Parquet); each id is normalised
   (:func:`atoll.secure.psi.canonical_keys`), hashed to 128 bits
   (:func:`atoll.secure.psi_kkrt.id_hashes`) and appended, with its row number
   and its text, to one of 256 files chosen by the hash's top byte, in a
   private temporary folder.
2. Duplicates: each of the 256 files is sorted by hash; equal hashes are
   duplicate ids (refused, or the first row kept with ``duplicates="drop"``).
3. The protocol runs over the buckets, each a range of those files
   (:class:`SpillBuckets`); with ``result_to="both"`` each bucket's result
   goes to the host as soon as it is known.
4. Output: the ids of each bucket's result, in bucket order and by id hash
   within a bucket (the agreed order of streaming: a function of the
   intersection alone, the same at every party), appended to ``out``.

Memory per party is bounded by one chunk of ids and one bucket of the
protocol (at most about 2^18 ids of the larger party, up to 67M ids): it does
not grow with the set. Disk: a 36-byte record per id (twice while spilling)
plus the id's text.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from atoll.errors import ConfigError, DataError
from atoll.federation.context import Context
from atoll.secure.psi import PsiParams, PsiResult, _progress, canonical_keys
from atoll.secure.psi_kkrt import MAX_BUCKETS, KkrtPsiGuest, KkrtPsiHost, id_hashes, top_byte

__all__ = ["SpillBuckets", "read_chunks", "stream_psi"]

_REC = np.dtype([("h0", "<u8"), ("h1", "<u8"), ("row", "<i8"), ("off", "<i8"), ("len", "<i4")])
#: bytes of records buffered in memory before they are appended to the 256 spill files
FLUSH_BYTES = 64 << 20


def read_chunks(path: str | Path, column: str | None = None, chunk_rows: int = 1 << 20) -> Iterator[list[Any]]:
    """The id column of a CSV (read as text) or Parquet file, ``chunk_rows`` ids at a time."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"id file {path} does not exist")
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        f = pq.ParquetFile(path)
        names = f.schema_arrow.names
        col = column or names[0]
        if col not in names:
            raise ConfigError(f"{path} has no column {col!r}; its columns are {names}")
        for batch in f.iter_batches(batch_size=chunk_rows, columns=[col]):
            yield batch.column(0).to_pylist()
        return
    import pandas as pd

    header = pd.read_csv(path, dtype=str, nrows=0).columns
    if len(header) == 0:
        raise DataError(f"{path} has no columns; put the ids in a column with a header")
    col = column or str(header[0])
    if col not in header:
        raise ConfigError(f"{path} has no column {col!r}; its columns are {list(header)}")
    for frame in pd.read_csv(path, dtype=str, keep_default_na=False, usecols=[col], chunksize=chunk_rows):
        yield frame[col].tolist()


def _first_column(path: Path) -> str:
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).schema_arrow.names[0]
    import pandas as pd

    return str(pd.read_csv(path, dtype=str, nrows=0).columns[0])


class SpillBuckets:
    """A party's id hashes on disk, sorted by hash; ``get(b, P)`` as :class:`~atoll.secure.psi_kkrt.Buckets`.

    Files in ``folder``: ``ids.txt`` (every id's text, appended as read), ``NNN.rec`` (the
    records of top byte ``NNN``, appended when the in-memory buffer is full) and
    ``sorted.rec`` (every record, de-duplicated, by top byte then hash: a bucket is one
    contiguous read).
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.n = 0
        self.rows_read = 0
        self._starts = np.zeros(MAX_BUCKETS + 1, dtype=np.int64)  # record index where each top byte starts
        self._served: dict[int, np.ndarray] = {}
        self._text: Any = None

    def spill(self, chunks: Iterator[list[Any]], params: PsiParams, prog: Any = None) -> None:
        """Steps 1 and 2: normalise, hash and spill every chunk; then sort and de-duplicate."""
        task = prog.add_task("reading ids", total=None) if prog is not None else None
        row = off = 0
        buf: list[list[np.ndarray]] = [[] for _ in range(MAX_BUCKETS)]
        buffered = 0
        flushed = np.zeros(MAX_BUCKETS, dtype=bool)
        with open(self.folder / "ids.txt", "wb") as text:
            for chunk in chunks:
                keys = canonical_keys(chunk, params.strip, params.unicode_form)
                h = id_hashes(keys)
                texts = [str(x).encode("utf-8", "surrogatepass") for x in chunk]
                rec = np.empty(len(keys), dtype=_REC)
                rec["h0"], rec["h1"] = h[:, 0], h[:, 1]
                rec["row"] = np.arange(row, row + len(keys), dtype=np.int64)
                rec["len"] = [len(t) for t in texts]
                ends = np.cumsum(rec["len"], dtype=np.int64)
                rec["off"] = off + ends - rec["len"]
                text.write(b"".join(texts))
                off += int(ends[-1]) if len(ends) else 0
                part = top_byte(h)
                order = np.argsort(part, kind="stable")
                bounds = np.searchsorted(part[order], np.arange(MAX_BUCKETS + 1))
                for p in np.flatnonzero(np.diff(bounds)).tolist():
                    buf[p].append(rec[order[bounds[p]:bounds[p + 1]]])
                buffered += rec.nbytes
                if buffered > FLUSH_BYTES:
                    for p in range(MAX_BUCKETS):
                        if buf[p]:
                            with open(self.folder / f"{p:03d}.rec", "ab") as f:
                                np.concatenate(buf[p]).tofile(f)
                            buf[p], flushed[p] = [], True
                    buffered = 0
                row += len(keys)
                if prog is not None:
                    prog.advance(task, len(keys))
        self.rows_read = row
        dups = 0
        with open(self.folder / "sorted.rec", "wb") as out:
            for p in range(MAX_BUCKETS):
                parts = ([np.fromfile(self.folder / f"{p:03d}.rec", dtype=_REC)] if flushed[p] else []) + buf[p]
                buf[p] = []
                rec = np.concatenate(parts) if parts else np.zeros(0, dtype=_REC)
                rec = rec[np.lexsort((rec["row"], rec["h0"], rec["h1"]))]  # by hash; first row first
                same = (rec["h0"][1:] == rec["h0"][:-1]) & (rec["h1"][1:] == rec["h1"][:-1])
                if same.any():
                    dups += int(same.sum())
                    rec = rec[np.concatenate([[True], ~same])]
                rec.tofile(out)
                self._starts[p + 1] = self._starts[p] + len(rec)
        if dups and params.duplicates == "error":
            raise DataError(f"{dups} duplicate ids after normalisation; make ids unique or pass "
                            "duplicates='drop' to keep the first occurrence")
        self.n = int(self._starts[-1])

    def get(self, b: int, buckets: int) -> tuple[np.ndarray, np.ndarray]:
        width = MAX_BUCKETS // buckets
        lo, hi = int(self._starts[b * width]), int(self._starts[(b + 1) * width])
        rec = np.fromfile(self.folder / "sorted.rec", dtype=_REC, count=hi - lo, offset=lo * _REC.itemsize) \
            if hi > lo else np.zeros(0, dtype=_REC)
        self._served[b] = rec
        return np.stack([rec["h0"], rec["h1"]], axis=1), rec["row"].copy()

    def texts(self, rows: np.ndarray, b: int) -> list[str]:
        """The ids (as read) of ``rows`` of bucket ``b`` (as last served by :meth:`get`), in that order."""
        rec = self._served.pop(b)
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return []
        order = np.argsort(rec["row"])
        at = order[np.searchsorted(rec["row"], rows, sorter=order)]
        if self._text is None:
            self._text = np.memmap(self.folder / "ids.txt", dtype=np.uint8, mode="r")
        text = self._text
        return [bytes(text[o:o + n]).decode("utf-8", "surrogatepass")
                for o, n in zip(rec["off"][at].tolist(), rec["len"][at].tolist())]

    def close(self) -> None:
        self._text = None


class _Writer:
    def __init__(self, path: Path | None, column: str):
        self.count = 0
        self._f = None
        self._path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(path, "w", newline="", encoding="utf-8")
            self._w = csv.writer(self._f)
            self._w.writerow([column])

    def write(self, ids: list[str]) -> None:
        self.count += len(ids)
        if self._f is not None:
            self._w.writerows([x] for x in ids)

    def close(self, discard: bool = False) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
            if discard:
                self._path.unlink(missing_ok=True)


def stream_psi(ctx: Context, path: str | Path, out: str | Path | None, column: str | None = None,
               params: PsiParams | None = None, chunk_rows: int = 1 << 20,
               workdir: str | Path | None = None) -> PsiResult:
    """KKRT-PSI of the ids in ``path`` (CSV or Parquet), the result written to the CSV ``out``.

    Run it at the guest and at every host (same settings). Returns a
    :class:`PsiResult` with ``size`` (None at a host with ``result_to="guest"``,
    which writes no file) and statistics; ``ids``/``positions`` stay None (the ids
    are in ``out``). ``workdir``: where the temporary spill folder goes.
    """
    p = params or PsiParams(protocol="kkrt")
    if p.protocol != "kkrt":
        raise ConfigError(f"streaming PSI runs the kkrt protocol, not {p.protocol!r}")
    if ctx.role not in ("guest", "host"):
        raise ConfigError(f"party {ctx.party!r} has role {ctx.role!r}; PSI runs between 'guest' and 'host' parties")
    t0 = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="atoll-psi-", dir=workdir))
    source = None
    try:
        source = SpillBuckets(folder)
        with _progress(p.progress, ctx.party) as prog:
            source.spill(read_chunks(path, column, chunk_rows), p, prog)
        col = column or _first_column(Path(path))
        t1 = time.perf_counter()
        learns = ctx.role == "guest" or p.result_to == "both"
        writer = _Writer(Path(out) if (out is not None and learns) else None, col)
        try:
            if ctx.role == "guest":
                res = KkrtPsiGuest(p).run_buckets(
                    ctx, source, lambda b, rows, where: writer.write(source.texts(rows, b)), ordered=True)
            else:
                res, _ = KkrtPsiHost(p).run_buckets(
                    ctx, source, (lambda b, rows: writer.write(source.texts(rows, b))) if learns else None)
        except BaseException:
            writer.close(discard=True)  # a partial result would read as a smaller intersection
            raise
        writer.close()
    finally:
        if source is not None:
            source.close()
        shutil.rmtree(folder, ignore_errors=True)
    t2 = time.perf_counter()
    res.stats.update(rows=source.rows_read, streamed=True)
    res.stats["seconds"].update(spill=t1 - t0, total=t2 - t0)
    res.size = writer.count if learns else None
    res.stats["size"] = res.size
    return res
