"""Hetero feature binning: WOE / IV of every party's features, the labels kept at the guest, under HE.

FATE 1.x ``HeteroFeatureBinning`` (the guest learns the per-bin event counts of the host's bins; the WOE
transform is the guest's) and SecretFlow's ``VertWoeBinning`` (which sends decrypted per-bin counts to the
feature owner) are the references; here, by default, the host learns nothing.

Protocol (guest = label holder, hosts = feature holders; rows aligned by PSI beforehand, in the same order):

1. Every party bins its own columns locally (:mod:`atoll.ml.feature.binning`: quantile, bucket, ChiMerge's
   fine bins, categories; a missing-value bin per feature, always kept).
2. The guest makes an HE key pair (Paillier or OU), one-hot encodes its label over its ``K`` classes and
   packs each row's ``K`` indicators into ONE plaintext (:class:`atoll.crypto.packing.Packer`, unsigned slots
   of ``1 + ceil(log2 rows)`` bits, so no sum of rows can spill), encrypts and sends the public key, ``K`` and
   the encrypted rows, in messages of at most ``chunk_bytes``.
3. Each host sums the encrypted rows per (feature, bin) of its own features
   (:class:`atoll.crypto.histogram.RowHistograms`, one multiplication per row and feature), packs as many
   (feature, bin) cells as fit into one ciphertext (:meth:`Packer.pack`, Horner's rule: ``n_slots // K``
   cells per ciphertext), re-randomises them (so the guest cannot match a sum against its own ciphertexts)
   and sends them with the number of bins of each feature and the feature names.
4. The guest decrypts the per-bin class counts of every host feature, checks them (each feature's counts
   sum to the row count, nothing outside its bins) and computes WOE and IV for all parties' features
   (:func:`atoll.ml.feature.binning.woe_iv`). ChiMerge merges host bins from those counts and sends each host
   the grouping of its fine bins (which bins merge, no count).
5. With ``share_woe`` the guest sends each host the WOE of its own bins only (for a host-side WOE
   transform and the host's scorecard points).

What each party sees:

* Host: the public key, ``K``, the encrypted packed label indicators of every row (never a label, a count
  or a WOE). With ChiMerge, which of its adjacent fine bins were merged (a function of the label
  counts: it shows which neighbouring bins have similar event rates). With ``share_woe``, the WOE of each
  of its own bins, from which it can read each bin's event rate relative to the overall rate (a label
  leak about groups of rows: documented, off by default).
* Guest: per host feature, the number of bins, the column name and the class counts of each bin (bin
  order, never a bin edge or a feature value), hence each host bin's size and event rate: what WOE / IV
  are made of (as in FATE).

Trust: the host checks what it can (the key's scheme and size, the class count, the row count, the
ciphertexts' layout), the guest that the decrypted counts are consistent (every feature's counts sum to
the row count, nothing outside its bins). Neither can check the other's plaintexts: as in FATE and
SecretFlow there is no zero-knowledge proof that the guest encrypted 0/1 label indicators, and a guest that
encrypted, say, a distinct power of two per row would read from the sums which rows fall in each host
bin. The protocol is secure against a semi-honest (curious, protocol-following) guest and host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from atoll.crypto import he
from atoll.crypto.cipherarray import CipherArray
from atoll.errors import CryptoError, DataError
from atoll.federation import Context
from atoll.ml.feature.binning import (
    BinningParams,
    FeatureBins,
    bin_codes,
    bins_from_wire,
    bins_to_wire,
    chimerge_groups,
    class_codes,
    count_by_bin,
    fit_local,
    merge_bins,
    merge_counts,
    table,
)

__all__ = ["BinningModel", "HeteroBinningGuest", "HeteroBinningHost", "label_packer", "host_counts_plain",
           "model_to_wire", "model_from_wire"]

MAX_CLASSES = 64
MAX_FEATURES = 100_000
MAX_BINS = 4097


def label_packer(pk: Any, n_rows: int, n_slots: int | None = None) -> he.Packer:
    """The packer both sides derive from the key and the row count: one bit per class indicator, headroom
    for a sum of every row."""
    return he.Packer(pk, value_bits=1, max_terms=max(int(n_rows), 1), n_slots=n_slots)


def host_counts_plain(codes: np.ndarray, n_bins: Sequence[int], ycodes: np.ndarray, k: int) -> np.ndarray:
    """What the guest decrypts, computed in the clear: (d, max n_bins, K) counts (the oracle's kernel)."""
    nb = max(n_bins, default=1)
    out = np.zeros((codes.shape[1], nb, k), dtype=np.int64)
    for f, n in enumerate(n_bins):
        out[f, :n] = count_by_bin(codes[:, f], n, ycodes, k)
    return out


@dataclass
class BinningModel:
    """One party's fitted binning: its own bins and, where it knows them, WOE / IV tables.

    ``tables[name]`` (guest: every party's features, host names prefixed ``"PARTY."``; host: its own features
    with ``share_woe``, WOE only) holds ``counts`` (guest), ``woe`` (bins, C), ``iv`` (C,), ``iv_rank``.
    """

    role: str
    bins: list[FeatureBins]
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    classes: list[float] = field(default_factory=list)
    hosts: dict[str, list[str]] = field(default_factory=dict)  # guest: each host's feature names

    @property
    def columns(self) -> list[str]:
        return [b.name for b in self.bins]


def _send_chunked(ctx: Context, to: str, key: str, enc: CipherArray, chunk_bytes: int) -> None:
    per = max(1, int(chunk_bytes) // max(enc.pk.cipher_bytes, 1))
    n_chunks = max(1, -(-len(enc) // per))
    ctx.send(to, f"{key}_chunks", n_chunks)
    for i in range(n_chunks):
        with ctx.scope("chunk", i):
            ctx.send(to, key, enc[i * per:(i + 1) * per])


def _recv_chunked(ctx: Context, frm: str, key: str, pk: Any, n_rows: int) -> CipherArray:
    n_chunks = ctx.recv(frm, f"{key}_chunks")
    if type(n_chunks) is not int or not 1 <= n_chunks <= max(n_rows, 1):
        raise CryptoError("the guest announced a bad number of chunks of encrypted labels")
    parts = []
    for i in range(n_chunks):
        with ctx.scope("chunk", i):
            part = ctx.recv(frm, key)
        if not isinstance(part, CipherArray) or part.pk != pk or part.ndim != 1:
            raise CryptoError("encrypted labels are not a vector under the guest's announced public key")
        parts.append(part)
    enc = he.concatenate(parts) if len(parts) > 1 else parts[0]
    if enc.shape != (n_rows,):
        raise DataError(f"the guest sent {enc.shape[0]} encrypted labels for {n_rows} rows: were the "
                        "parties aligned (psi) on the same rows?")
    return enc


class HeteroBinningGuest:
    """Guest side: bins its columns, encrypts its labels, decrypts the hosts' per-bin counts, computes WOE / IV.

    What the guest sees: see the module docstring.
    """

    def __init__(self, params: BinningParams):
        self.params = params

    def fit(self, ctx: Context, x: np.ndarray, y: np.ndarray, columns: Sequence[str]) -> BinningModel:
        p = self.params
        x = np.asarray(x, dtype=np.float64)
        ycodes, classes = class_codes(y)
        k = len(classes)
        if k > MAX_CLASSES:
            raise DataError(f"the label has {k} classes; binning takes at most {MAX_CLASSES}")
        n = len(ycodes)
        hosts = ctx.parties_of("host")
        pk, sk = he.generate_keypair(p.scheme, p.key_bits)
        packer = label_packer(pk, n, n_slots=k)
        onehot = np.zeros((n, k), dtype=np.int64)
        onehot[np.arange(n), ycodes] = 1
        enc = packer.encrypt_ints(onehot, jobs=p.n_jobs)
        for h in hosts:
            ctx.send(h, "setup", {"pk": pk, "n_classes": k, "n_rows": n})
            _send_chunked(ctx, h, "labels", enc, p.chunk_bytes)

        bins = fit_local(x, [str(c) for c in columns], p)
        codes = bin_codes(x, bins)
        tables: dict[str, dict[str, Any]] = {}
        for j, b in enumerate(bins):
            counts = count_by_bin(codes[:, j], b.n_bins, ycodes, k)
            b, counts = self._merge(b, counts)
            bins[j] = b
            tables[b.name] = table(b, counts, p.adjustment)

        big = label_packer(pk, n)
        per = big.n_slots // k
        host_names: dict[str, list[str]] = {}
        for h in hosts:
            msg = ctx.recv(h, "counts")
            counts = self._decode(msg, big, sk, per, k, n)
            names = [str(v) for v in msg["names"]]
            groups = []
            for f, (name, kind) in enumerate(zip(names, msg["kinds"])):
                c = counts[f, :int(msg["n_bins"][f])]
                if p.method == "chimerge" and kind == "numeric":
                    g = chimerge_groups(c, p.max_bin, p.chi_threshold, p.monotone, p.adjustment, p.merge_by)
                    c = merge_counts(c, g)
                    groups.append(g)
                else:
                    groups.append(np.arange(len(c), dtype=np.int64))
                tables[f"{h}.{name}"] = table(None, c, p.adjustment)
            host_names[h] = names
            if p.method == "chimerge":
                ctx.send(h, "groups", groups)
            if p.share_woe:
                ctx.send(h, "woe", [tables[f"{h}.{name}"]["woe"] for name in names])
        return BinningModel("guest", bins, tables, [float(c) for c in classes], host_names)

    def _merge(self, b: FeatureBins, counts: np.ndarray) -> tuple[FeatureBins, np.ndarray]:
        p = self.params
        if p.method != "chimerge" or b.kind != "numeric":
            return b, counts
        g = chimerge_groups(counts, p.max_bin, p.chi_threshold, p.monotone, p.adjustment, p.merge_by)
        return merge_bins(b, g), merge_counts(counts, g)

    @staticmethod
    def _decode(msg: Any, packer: he.Packer, sk: Any, per: int, k: int, n: int) -> np.ndarray:
        if not isinstance(msg, dict) or set(msg) != {"ct", "n_bins", "names", "kinds"}:
            raise CryptoError("a host's per-bin sums have an unexpected layout")
        nb = np.asarray(msg["n_bins"])
        d = len(nb)
        if nb.dtype.kind not in "iu" or not 0 < d <= MAX_FEATURES or nb.min() < 2 or nb.max() > MAX_BINS:
            raise CryptoError("a host announced bad bin counts")
        names, kinds = msg["names"], msg["kinds"]
        if (not isinstance(names, list) or not isinstance(kinds, list) or len(names) != d or len(kinds) != d
                or any(not isinstance(v, str) or not 0 < len(v) <= 256 for v in names) or len(set(names)) != d
                or any(v not in ("numeric", "categorical") for v in kinds)):
            raise CryptoError("a host's feature names or kinds do not match its features (one distinct name "
                              "of at most 256 characters and one kind per feature)")
        nbmax = int(nb.max())
        ct = msg["ct"]
        need = -(-d * nbmax // per)
        if not isinstance(ct, CipherArray) or ct.pk != packer.pk or ct.shape != (need,):
            raise CryptoError(f"expected {d} features x {nbmax} bins in {need} ciphertexts under the guest's key")
        slots = packer.decrypt_ints(sk, ct, k=per * k)
        counts = slots.reshape(-1, k)[:d * nbmax].reshape(d, nbmax, k)
        for f in range(d):
            if counts[f, int(nb[f]):].any() or int(counts[f].sum()) != n:
                raise CryptoError("a host's per-bin sums are inconsistent (counts outside its bins, or not "
                                  "summing to the row count)")
        return counts


class HeteroBinningHost:
    """Host side: bins its own columns and sums the guest's encrypted label indicators per bin.

    What the host sees: see the module docstring (nothing of the labels in the default mode).
    """

    def __init__(self, params: BinningParams):
        self.params = params

    def fit(self, ctx: Context, x: np.ndarray, columns: Sequence[str]) -> BinningModel:
        p = self.params
        x = np.asarray(x, dtype=np.float64)
        n = len(x)
        setup = ctx.recv("guest", "setup")
        if not isinstance(setup, dict) or set(setup) != {"pk", "n_classes", "n_rows"}:
            raise CryptoError("the guest's binning setup has an unexpected layout")
        pk, k = setup["pk"], setup["n_classes"]
        if not isinstance(pk, he.PublicKeyBase) or pk.scheme != p.scheme or pk.key_bits < 512:
            raise CryptoError(f"expected a {p.scheme} public key of >= 512 bits from the guest")
        if type(k) is not int or not 2 <= k <= MAX_CLASSES:
            raise CryptoError(f"the guest announced {k!r} classes (2..{MAX_CLASSES} accepted)")
        if setup["n_rows"] != n:
            raise DataError(f"the guest has {setup['n_rows']} rows, this host {n}: align the parties (psi) first")
        enc = _recv_chunked(ctx, "guest", "labels", pk, n)
        big = label_packer(pk, n)
        if enc.packing is None or enc.packing[0] != big.slot_bits or enc.packing[1] > 1 or enc.packing[2]:
            raise CryptoError("the encrypted labels are not packed as announced (unsigned one-bit indicators)")
        if big.n_slots < k:
            raise CryptoError(f"{k} classes do not fit one plaintext of this key")
        bins = fit_local(x, [str(c) for c in columns], p)
        codes = bin_codes(x, bins)
        n_bins = [b.n_bins for b in bins]
        nbmax = max(n_bins, default=2)
        codes = codes.astype(np.uint16 if nbmax <= 65535 else np.int64)  # SecureBoost's code width: less to place
        with he.RowHistograms(enc, codes, nbmax, jobs=p.n_jobs) as rh:
            (hist,) = rh.build([np.arange(n)])
        packed = big.pack(hist.ravel(), slots=k, jobs=p.n_jobs).rerandomize(jobs=p.n_jobs)
        ctx.send("guest", "counts", {"ct": packed, "n_bins": np.asarray(n_bins, np.int64),
                                     "names": [b.name for b in bins], "kinds": [b.kind for b in bins]})
        if p.method == "chimerge":
            groups = ctx.recv("guest", "groups")
            if not isinstance(groups, list) or len(groups) != len(bins):
                raise CryptoError("the guest's bin groups do not match this host's features")
            for j, (b, g) in enumerate(zip(bins, groups)):
                g = np.asarray(g)
                if (g.shape != (b.n_bins,) or g.dtype.kind not in "iu" or (np.diff(g) < 0).any()
                        or g[0] != 0 or (np.diff(g) > 1).any()):
                    raise CryptoError("the guest's bin groups are not a merge of adjacent bins")
                if b.kind == "numeric":
                    bins[j] = merge_bins(b, g)
        tables: dict[str, dict[str, Any]] = {}
        if p.share_woe:
            woe = ctx.recv("guest", "woe")
            if not isinstance(woe, list) or len(woe) != len(bins):
                raise CryptoError("the guest's WOE tables do not match this host's features")
            for b, w in zip(bins, woe):
                w = np.asarray(w, np.float64)
                if w.ndim != 2 or w.shape[0] != b.n_bins or not np.isfinite(w).all():
                    raise CryptoError("a WOE table from the guest does not match its feature's bins")
                tables[b.name] = {"woe": w}
        return BinningModel("host", bins, tables)


# ---- model parts (wire-typed dicts: saved with atoll's codec, never pickle)
def model_to_wire(m: BinningModel) -> dict[str, Any]:
    return {"role": m.role, "bins": bins_to_wire(m.bins),
            "tables": {name: {k: v for k, v in t.items() if k != "labels"} for name, t in m.tables.items()},
            "classes": list(m.classes), "hosts": {h: list(v) for h, v in m.hosts.items()}}


def model_from_wire(d: dict[str, Any]) -> BinningModel:
    if not isinstance(d, dict) or d.get("role") not in ("guest", "host"):
        raise DataError("not a saved binning model")
    bins = bins_from_wire(d["bins"])
    tables = {}
    for name, t in d["tables"].items():
        t = dict(t)
        t["woe"] = np.asarray(t["woe"], np.float64)
        if "counts" in t:
            t["counts"] = np.asarray(t["counts"], np.int64)
        tables[str(name)] = t
    return BinningModel(d["role"], bins, tables, [float(c) for c in d.get("classes", [])],
                        {str(h): [str(c) for c in v] for h, v in d.get("hosts", {}).items()})
