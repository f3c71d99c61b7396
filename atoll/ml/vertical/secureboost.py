"""SecureBoost: lossless federated gradient boosting on vertically split data.

Cheng et al., "SecureBoost: A Lossless Federated Learning Framework", IEEE
Intelligent Systems 2021 (arXiv:1901.08755), with XGBoost's split rules (Chen
and Guestrin, KDD 2016), packed (g, h) plaintexts and cipher compression of
histogram bins (as in FATE's and SecretFlow's SGB implementations).

Protocol (guest = the party with labels, hosts = feature holders; rows aligned by PSI beforehand):

1. Setup. Every party bins its own features (quantile cuts, a bin for missing
   values); the guest makes an HE key pair (OU by default, Paillier, or none in
   plaintext mode) and sends the public key with its row count and a SHA-256 digest of its
   row ids in order; each host compares them with its own and stops the job with a
   :class:`~atoll.errors.DataError` if its rows are not the guest's, in the guest's order
   (joint prediction checks the rows to score the same way).
2. Each boosting round, the guest computes gradients and hessians of its loss
   (on a row subsample, or GOSS-weighted rows, when asked), quantises them to
   integers (``boosting_core.quantize``), packs each row's (g, h) of every output
   into one plaintext (as many outputs per plaintext as fit), encrypts, and sends
   the encrypted sampled rows plus the round's sampled-row mask to the hosts.
3. Trees grow level by level. For the nodes of a level, the guest names which
   node of each sibling pair to build (the one with fewer sampled rows); each
   host sums the encrypted rows per (feature, bin) of its own features,
   packs several bins into one ciphertext and sends them; the guest decrypts
   and derives the sibling's histogram by subtraction from the parent's.
4. The guest scans all parties' histograms for the best gain (its own in the
   clear) and tells each host only which nodes it won, with (feature, bin,
   missing direction); the host records the threshold value in a private
   lookup table and returns which of the node's rows go left. The guest relays
   the partition (row masks) to all hosts.
5. At the leaves the guest computes the weights ``-G/(H + lambda)`` (times the
   learning rate) and updates its scores; the hosts never see a weight.
6. Joint prediction: each host evaluates its own splits on its rows and sends,
   per tree, the leaves each row can still reach (a bit matrix); the guest
   intersects them with its own and adds the leaf values.

What each party sees:

* Hosts: the public key, the digest of the guest's row ids (equal to its own when the rows
  are aligned), the encrypted packed (g, h) of every row (never a
  plaintext gradient, hessian or label), the tree topologies, which party owns
  each split, and every node's row set (the instance space: a known property of
  SecureBoost). With ``subsample < 1`` or GOSS, also each round's set of sampled
  rows; under GOSS that set contains every row of the top ``top_rate`` share by
  |g| (mixed with a random ``other_rate`` share of the rest, indistinguishable
  to the host), so a host learns which rows are likely to have large gradients
  that round; the GOSS weights themselves are applied inside the encrypted
  (g, h). The number of outputs (classes) and the row count. Nothing from the
  guest at prediction time beyond the number of rows to route.
* Guest: for every built node, the per-bin sums of g and h of each host feature
  (bin order, not bin values), which host feature and bin won, and the host's
  left/right row partitions; never a host threshold or feature value. At
  prediction time, each host's reachable-leaf sets for every row.
* Plaintext mode (``scheme="plain"``) runs the same messages with the gradients
  in the clear: for reference and timing only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import numpy as np
from pydantic import Field, field_validator, model_validator

from atoll.errors import ConfigError, DataError
from atoll.federation import Context, Party
from atoll.ml import registry
from atoll.ml.facade import FederatedEstimator
from atoll.ml.registry import Algorithm, AlgorithmParams, ModelPart, check_scheme, param_error
from atoll.ml.vertical._glm import ids_digest
from atoll.ml.vertical.boosting_binning import BinMapper
from atoll.ml.vertical.boosting_cipher import make_guest_cipher, make_host_cipher, plain_histogram
from atoll.ml.vertical.boosting_core import (
    SplitInfo,
    Tree,
    best_splits,
    get_objective,
    go_left,
    leaf_weight,
    quantize,
    quantize_bits,
    reachable_leaves,
    split_ok,
)

log = logging.getLogger(__name__)

__all__ = ["SecureBoostParams", "SecureBoostGuest", "SecureBoostHost", "SecureBoostGuestModel",
           "SecureBoostHostModel", "HeteroSecureBoost"]


class SecureBoostParams(AlgorithmParams):
    """THE parameters of SecureBoost (names and meanings as in XGBoost's scikit-learn API): the job
    step's ``params``, :class:`HeteroSecureBoost`'s constructor arguments and the protocol's.

    ``scheme``: an HE scheme of :func:`atoll.crypto.he.scheme_names` (default ``ou``), or
    ``plain`` (the same messages in the clear: for reference and timing only). ``goss``:
    gradient-based one-side sampling (needs ``subsample=1``) keeping the ``top_rate`` share of
    rows by |g| and a random ``other_rate`` share of the rest. ``early_stopping_rounds``: stop
    when the loss on the validation rows (``eval_set``, a job's ``validate`` input) has not
    improved for this many rounds, and keep the trees up to the best round. ``random_state``:
    a job derives it from the job's seed when unset; ``n_jobs``: HE worker processes per party.
    """

    n_estimators: int = Field(10, ge=1)
    max_depth: int = Field(5, ge=1)
    learning_rate: float = Field(0.3, gt=0.0)
    reg_lambda: float = Field(1.0, ge=0.0)
    gamma: float = Field(0.0, ge=0.0)
    min_child_weight: float = Field(1.0, ge=0.0)
    max_bin: int = Field(32, ge=2)
    subsample: float = Field(1.0, gt=0.0, le=1.0)
    colsample_bytree: float = Field(1.0, gt=0.0, le=1.0)
    objective: Literal["binary:logistic", "reg:squarederror", "multi:softprob"] = "binary:logistic"
    scheme: str = "ou"
    key_bits: int = Field(2048, ge=512)
    random_state: int | None = None
    early_stopping_rounds: int | None = Field(None, ge=1)
    n_jobs: int = Field(1, ge=1)
    goss: bool = False
    top_rate: float = Field(0.2, gt=0.0, lt=1.0)
    other_rate: float = Field(0.1, gt=0.0, lt=1.0)

    @field_validator("scheme")
    @classmethod
    def _scheme(cls, v: str) -> str:
        return check_scheme(v, extra=("plain",))

    @model_validator(mode="after")
    def _goss(self) -> SecureBoostParams:
        if self.goss and (self.subsample < 1 or self.top_rate + self.other_rate > 1):
            raise ValueError("GOSS needs subsample=1 and top_rate + other_rate <= 1")
        return self


#: what the ``evaluate`` step computes for each objective
TASKS = {"binary:logistic": "binary", "reg:squarederror": "regression", "multi:softprob": "multiclass"}


def goss_weights(grad_abs: np.ndarray, top_rate: float, other_rate: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Gradient-based one-side sampling (Ke et al., LightGBM, NeurIPS 2017): row weights.

    The ``top_rate`` share of rows with the largest |g| keep weight 1; an
    ``other_rate`` share drawn from the rest gets ``(1 - top_rate) / other_rate``;
    the others 0 (not used for this tree's histograms).
    """
    n = len(grad_abs)
    n_top = int(np.ceil(top_rate * n))
    n_other = int(np.ceil(other_rate * n))
    order = np.argsort(-grad_abs, kind="stable")
    w = np.zeros(n)
    w[order[:n_top]] = 1.0
    rest = order[n_top:]
    if len(rest) and n_other:
        pick = rng.choice(rest, size=min(n_other, len(rest)), replace=False)
        w[pick] = (1.0 - top_rate) / other_rate
    return w


def _pack_mask(mask: np.ndarray) -> tuple[bytes, int]:
    return np.packbits(mask.astype(bool)).tobytes(), int(len(mask))


def _unpack_mask(msg: tuple) -> np.ndarray:
    raw, n = msg
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=int(n)).astype(bool)


def _column_sample(rng: np.random.Generator, d: int, frac: float) -> np.ndarray:
    if frac >= 1 or d == 0:
        return np.arange(d)
    k = max(1, int(round(frac * d)))
    return np.sort(rng.choice(d, size=k, replace=False))


def _threshold_left(x: np.ndarray, threshold: float, missing_left: bool) -> np.ndarray:
    x32 = x.astype(np.float32).astype(np.float64)
    return np.where(np.isnan(x32), missing_left, x32 < threshold)


# ============================================================================ models

@dataclass
class SecureBoostGuestModel:
    """What the guest keeps: trees (its own thresholds, hosts' split owners), leaf values, base score."""

    objective: str
    base_margin: np.ndarray
    n_outputs: int
    trees: list[Tree]
    feature_gain: dict[str, np.ndarray] = field(default_factory=dict)
    feature_count: dict[str, np.ndarray] = field(default_factory=dict)
    best_iteration: int | None = None
    seconds_per_round: list[float] = field(default_factory=list)
    #: per round: loss on the training rows (log loss, RMSE or multi-class log loss by objective),
    #: and on the ``eval_set`` rows when there is one
    train_loss: list[float] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)
    #: guest wall seconds by phase: encrypt, hosts (waiting for histograms), decrypt, split, partition
    timings: dict[str, float] = field(default_factory=dict)
    #: work counters of the HE cipher (e.g. rounds encrypted in worker processes), empty in plaintext mode
    stats: dict[str, int] = field(default_factory=dict)


@dataclass
class SecureBoostHostModel:
    """What a host keeps: per tree, the topology and its private lookup table.

    ``lookup[t][node] = (feature, threshold, missing_left)``: rows with
    ``x[feature] < threshold`` (or missing, if ``missing_left``) go left.
    """

    topologies: list[dict]
    lookup: list[dict[int, tuple[int, float, bool]]]
    #: host wall seconds by phase: prepare (decode the round's rows), histogram (build, pack, re-randomise)
    timings: dict[str, float] = field(default_factory=dict)
    #: work counters of the HE cipher (node histograms built in worker processes / in-process)
    stats: dict[str, int] = field(default_factory=dict)


# ============================================================================ guest

class SecureBoostGuest:
    """Guest (label holder): gradients, key owner, split finding, leaf weights."""

    def __init__(self, params: SecureBoostParams | None = None):
        self.params = params or SecureBoostParams()

    # ------------------------------------------------------------------ training
    def fit(self, ctx: Context, x: np.ndarray, y: np.ndarray,
            eval_set: tuple[np.ndarray, np.ndarray] | None = None,
            ids: list | None = None) -> SecureBoostGuestModel:
        """Train; ``ids`` (the rows' ids, in order) are checked against each host's by digest."""
        p = self.params
        obj = get_objective(p.objective)
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).ravel()
        obj.check_labels(y)
        if len(x) != len(y):
            raise DataError(f"guest features have {len(x)} rows but labels {len(y)}")
        cipher = make_guest_cipher(p.scheme, p.key_bits, p.n_jobs)
        try:
            model = self._fit(ctx, x, y, eval_set, obj, cipher, ids_digest(ids, len(y)))
            model.stats = dict(cipher.stats)
            return model
        finally:
            cipher.close()

    def _fit(self, ctx: Context, x: np.ndarray, y: np.ndarray, eval_set, obj, cipher,
             digest: str) -> SecureBoostGuestModel:
        p = self.params
        hosts = ctx.parties_of("host")
        n = len(y)
        K = obj.n_outputs(y)
        rng = np.random.default_rng(p.random_state)
        slots_chunk = cipher.slots_per_chunk(2 * K)  # slots (2 per output) per row plaintext
        outs_chunk = slots_chunk // 2
        ctx.broadcast("host", "setup", {"scheme": p.scheme, "pk": cipher.public(), "n_rows": n, "digest": digest,
                                        "n_outputs": K, "outputs_per_chunk": outs_chunk,
                                        "has_eval": eval_set is not None,
                                        "params": {"max_bin": p.max_bin, "colsample_bytree": p.colsample_bytree,
                                                   "random_state": p.random_state,
                                                   "early_stopping_rounds": p.early_stopping_rounds}})
        mapper = BinMapper.fit(x, p.max_bin)
        cipher.warm()
        n_feats = ctx.gather("host", "n_features")  # sent once each host is set up: rounds time trees only
        codes = mapper.transform(x)
        self.mapper = mapper
        nb = mapper.n_slots
        base = obj.base_margin(y)
        margin = np.tile(base, (n, 1))
        model = SecureBoostGuestModel(p.objective, base, K, [])
        parties = ["guest", *hosts]
        d_of = {"guest": x.shape[1], **{h: int(n_feats[h]) for h in hosts}}
        model.feature_gain = {q: np.zeros(d_of[q]) for q in parties}
        model.feature_count = {q: np.zeros(d_of[q]) for q in parties}
        ev_margin = None
        best_score, best_round, since_best = np.inf, -1, 0
        if eval_set is not None:
            ev_x, ev_y = np.asarray(eval_set[0], np.float64), np.asarray(eval_set[1], np.float64).ravel()
            ev_margin = np.tile(base, (len(ev_y), 1))
        for r in range(p.n_estimators):
            t0 = time.perf_counter()
            with ctx.scope("round", r):
                g, h = obj.grad_hess(y, margin)
                sampled = np.ones(n, dtype=bool)
                if p.subsample < 1:
                    sampled = rng.random(n) < p.subsample
                if p.goss:
                    w = goss_weights(np.abs(g).sum(axis=1), p.top_rate, p.other_rate, rng)
                    sampled = w > 0
                    g, h = g * w[:, None], h * w[:, None]
                rows = np.flatnonzero(sampled)
                bits = (quantize_bits(len(rows), float(np.abs(g[rows]).max())),
                        quantize_bits(len(rows), float(h[rows].max())))
                qg, qh = quantize(g[rows], h[rows], bits)
                qg_full = np.zeros((n, K))
                qh_full = np.zeros((n, K))
                qg_full[rows], qh_full[rows] = qg, qh
                payload = []
                t_enc = time.perf_counter()
                for c0 in range(0, K, outs_chunk):
                    ks = range(c0, min(c0 + outs_chunk, K))
                    slots = np.stack([a for k in ks for a in (qg[:, k], qh[:, k])], axis=1)
                    payload.append(cipher.encrypt_rows(slots))
                ctx.broadcast("host", "gh", {"stop": False, "sampled": _pack_mask(sampled), "chunks": payload})
                _tick(model, "encrypt", t_enc)
                new_trees = []
                for k in range(K):
                    with ctx.scope("output", k):
                        tree, leaf_of = self._grow(ctx, hosts, cipher, codes, nb, k, outs_chunk, sampled,
                                                   qg_full[:, k], qh_full[:, k], bits, rng, model)
                    margin[:, k] += np.asarray(tree.value)[leaf_of]
                    new_trees.append(tree)
                model.trees += new_trees
                model.train_loss.append(_eval_loss(p.objective, y, margin))
                stop = False
                if ev_margin is not None:
                    ev_margin += self._predict_margin(ctx, ev_x, new_trees, len(model.trees) - K, K)
                    score = _eval_loss(p.objective, ev_y, ev_margin)
                    model.valid_loss.append(score)
                    if score < best_score - 1e-12:
                        best_score, best_round, since_best = score, r, 0
                    else:
                        since_best += 1
                    stop = p.early_stopping_rounds is not None and since_best >= p.early_stopping_rounds
            model.seconds_per_round.append(time.perf_counter() - t0)
            log.info("secureboost round %d: %.2f s", r, model.seconds_per_round[-1])
            if stop:
                break
        with ctx.scope("round", len(model.seconds_per_round)):
            ctx.broadcast("host", "gh", {"stop": True})
        if ev_margin is not None and p.early_stopping_rounds is not None:
            model.best_iteration = best_round
            model.trees = model.trees[:(best_round + 1) * K]
            ctx.broadcast("host", "keep_trees", len(model.trees))
        self.model = model
        return model

    def _grow(self, ctx: Context, hosts: list[str], cipher, codes: np.ndarray, nb: int, k: int,
              outs_chunk: int, sampled: np.ndarray, qg: np.ndarray, qh: np.ndarray, bits: tuple[int, int],
              rng: np.random.Generator, model: SecureBoostGuestModel) -> tuple[Tree, np.ndarray]:
        """Grow one tree for output ``k`` level by level; returns it and each training row's leaf."""
        p = self.params
        scale = np.array([2.0 ** -bits[0], 2.0 ** -bits[1]])  # exact powers of two
        n = len(qg)
        slot = 2 * (k % outs_chunk)
        n_slots = 2 * min(outs_chunk, model.n_outputs - (k - k % outs_chunk))
        own_cols = _column_sample(rng, codes.shape[1], p.colsample_bytree)
        tree = Tree(output=k)
        tree.add_node()
        node_rows: dict[int, np.ndarray] = {0: np.arange(n)}
        parent_of: dict[int, int] = {}
        sibling_of: dict[int, int] = {}
        hists: dict[int, np.ndarray] = {}  # node -> (d_total, nb, 2) integer-valued sums
        gh_vals = np.stack([qg, qh], axis=1)
        fmap: list[tuple[str, int]] = []
        allowed: np.ndarray | None = None
        frontier = [0]
        levels = 0
        for depth in range(p.max_depth):
            if not frontier:
                break
            levels += 1
            with ctx.scope("depth", depth):
                # 3. build the node of each sibling pair with fewer sampled rows, derive the other
                build, derive = [], []
                for node in frontier:
                    if node == 0:
                        build.append(0)
                    elif node < sibling_of[node]:
                        sib = sibling_of[node]
                        na = int(sampled[node_rows[node]].sum())
                        nb_ = int(sampled[node_rows[sib]].sum())
                        small, big = (node, sib) if na <= nb_ else (sib, node)
                        build.append(small)
                        derive.append(big)
                t0 = time.perf_counter()
                ctx.broadcast("host", "build", build)
                host_h = ctx.gather("host", "hist")
                t0 = _tick(model, "hosts", t0)
                if depth == 0:
                    fmap = [("guest", j) for j in range(codes.shape[1])]
                    for hname in hosts:
                        fmap += [(hname, int(j)) for j in host_h[hname]["features"]]
                    own = set(own_cols.tolist())
                    allowed = np.asarray([i for i, (q, j) in enumerate(fmap) if q != "guest" or j in own])
                decoded = {}
                for hname in hosts:  # one decryption per host and level
                    hp = host_h[hname]
                    got = cipher.decode([hp["hists"][str(node)] for node in build], len(hp["features"]), nb, n_slots)
                    decoded[hname] = dict(zip(build, got))
                for node in build:
                    rows = node_rows[node]
                    rows = rows[sampled[rows]]
                    parts = [plain_histogram(gh_vals[rows], codes[rows], nb)]
                    parts += [decoded[hname][node][:, :, slot:slot + 2] for hname in hosts]
                    hists[node] = np.concatenate(parts, axis=0)
                for node in derive:
                    hists[node] = hists[parent_of[node]] - hists[sibling_of[node]]
                t0 = _tick(model, "decrypt", t0)
                # 4. best split of each node over every party's features
                splits: dict[int, tuple[str, SplitInfo]] = {}
                for node in frontier:
                    rows = node_rows[node]
                    srows = rows[sampled[rows]]
                    total = np.array([qg[srows].sum(), qh[srows].sum()]) * scale
                    s = best_splits(hists[node] * scale, total, p.reg_lambda, p.min_child_weight, allowed)
                    if split_ok(s, p.gamma):
                        owner, local = fmap[s.feature]
                        splits[node] = (owner, SplitInfo(s.gain, local, s.bin, s.missing_left, s.left, s.right))
                t0 = _tick(model, "split", t0)
                structure = []
                for node in frontier:
                    if node not in splits:
                        continue
                    owner, s = splits[node]
                    lc, rc = tree.add_node(), tree.add_node()
                    tree.left[node], tree.right[node] = lc, rc
                    tree.owner[node] = owner
                    tree.gain[node] = s.gain
                    model.feature_gain[owner][s.feature] += s.gain
                    model.feature_count[owner][s.feature] += 1
                    if owner == "guest":
                        tree.feature[node] = s.feature
                        tree.threshold[node] = self.mapper.threshold(s.feature, s.bin)
                        tree.missing_left[node] = s.missing_left
                    structure.append((int(node), owner, int(lc), int(rc)))
                for hname in hosts:
                    mine = {str(nd): (int(s.feature), int(s.bin), bool(s.missing_left))
                            for nd, (o, s) in splits.items() if o == hname}
                    ctx.send(hname, "splits", {"structure": structure, "mine": mine})
                masks = ctx.gather("host", "masks") if structure else {}
                partition = {}
                new_frontier = []
                for node, owner, lc, rc in structure:
                    rows = node_rows.pop(node)
                    if owner == "guest":
                        s = splits[node][1]
                        gl = go_left(codes[rows, s.feature], s.bin, s.missing_left, nb - 1)
                    else:
                        gl = _unpack_mask(masks[owner][str(node)])
                        if len(gl) != len(rows):
                            raise DataError(f"{owner} sent a partition of {len(gl)} rows for a node of {len(rows)}")
                    partition[str(node)] = _pack_mask(gl)
                    node_rows[lc], node_rows[rc] = rows[gl], rows[~gl]
                    parent_of[lc] = parent_of[rc] = node
                    sibling_of[lc], sibling_of[rc] = rc, lc
                    new_frontier += [lc, rc]
                if structure:
                    ctx.broadcast("host", "partition", partition)
                _tick(model, "partition", t0)
                for node in frontier:
                    if node not in splits:
                        hists.pop(node, None)
                for node, _, _, _ in structure:
                    hists.pop(parent_of.get(node, -1), None)
                frontier = new_frontier
        with ctx.scope("depth", levels):
            ctx.broadcast("host", "build", None)
        # 5. leaf weights
        leaf_of = np.zeros(n, dtype=np.int64)
        for node, rows in node_rows.items():
            srows = rows[sampled[rows]]
            G, H = qg[srows].sum() * scale[0], qh[srows].sum() * scale[1]
            tree.value[node] = p.learning_rate * leaf_weight(G, H, p.reg_lambda, p.min_child_weight)
            leaf_of[rows] = node
        return tree, leaf_of

    # ------------------------------------------------------------------ prediction
    def _predict_margin(self, ctx: Context, x: np.ndarray, trees: list[Tree], first: int,
                        K: int, ids: list | None = None) -> np.ndarray:
        """6. Joint prediction of ``trees`` (global indices from ``first``) on aligned rows."""
        x = np.asarray(x, dtype=np.float64)
        n = len(x)
        ctx.broadcast("host", "predict", {"first": int(first), "count": len(trees), "n_rows": n,
                                          "digest": ids_digest(ids, n)})
        reach = ctx.gather("host", "reach")
        out = np.zeros((n, K))
        for t, tree in enumerate(trees):
            left, right = np.asarray(tree.left), np.asarray(tree.right)

            def decide(node: int, tree: Tree = tree) -> np.ndarray:
                return _threshold_left(x[:, tree.feature[node]], tree.threshold[node], tree.missing_left[node])

            mask = reachable_leaves(left, right, tree.owner, "guest", decide, n)
            for hname, msgs in reach.items():
                raw, shape = msgs[t]
                m = np.unpackbits(np.frombuffer(raw, np.uint8), count=int(np.prod(shape))).astype(bool)
                mask &= m.reshape(shape)
            if not np.all(mask.sum(axis=1) == 1):
                raise DataError("joint prediction did not route every row to exactly one leaf; "
                                "are the parties' rows aligned (same ids, same order)?")
            leaves = [i for i in range(tree.n_nodes) if tree.left[i] < 0]
            vals = np.asarray(tree.value)[leaves]
            out[:, tree.output] += vals[np.argmax(mask, axis=1)]
        return out

    def predict_margin(self, ctx: Context, x: np.ndarray, model: SecureBoostGuestModel | None = None,
                       ids: list | None = None) -> np.ndarray:
        model = model or self.model
        with ctx.scope("predict"):
            with ctx.scope("request", 0):
                m = self._predict_margin(ctx, x, model.trees, 0, model.n_outputs, ids)
            with ctx.scope("request", 1):
                ctx.broadcast("host", "predict", None)
        return m + model.base_margin[None, :]


# ============================================================================ host

#: what the guest announces that decides what a host reveals: checked against the host's own
_SETUP_CHECKED = ("max_bin", "colsample_bytree", "random_state", "early_stopping_rounds")


def check_setup(own: SecureBoostParams, setup: Any) -> None:
    """Refuse a guest's set-up that is not this host's configuration (as PSI does): the scheme,
    the binning resolution and sampling, and — for encrypted schemes — a public key of at least
    the host's ``key_bits``. A deviating guest must not obtain plaintext or finer histograms."""
    if not isinstance(setup, dict) or not isinstance(setup.get("params"), dict):
        raise ConfigError("the guest's set-up message is malformed")
    if setup.get("scheme") != own.scheme:
        raise ConfigError(f"the guest asks for scheme {setup.get('scheme')!r}; this host is configured for "
                          f"{own.scheme!r} and sends its histograms under nothing else")
    prm = setup["params"]
    for k in _SETUP_CHECKED:
        if prm.get(k) != getattr(own, k):
            raise ConfigError(f"the guest runs with {k}={prm.get(k)!r}; this host is configured for "
                              f"{k}={getattr(own, k)!r}; use the same parameters at every party")
    if own.scheme != "plain":
        from atoll.crypto import he

        he.check_peer_key(setup.get("pk"), own.scheme, own.key_bits, None, "the guest")


class SecureBoostHost:
    """Host (feature holder): encrypted histograms, private split lookup table, its rows' routing."""

    def __init__(self, params: SecureBoostParams | None = None):
        self.params = params or SecureBoostParams()

    def fit(self, ctx: Context, x: np.ndarray, eval_x: np.ndarray | None = None,
            ids: list | None = None) -> SecureBoostHostModel:
        x = np.asarray(x, dtype=np.float64)
        setup = ctx.recv("guest", "setup")
        check_setup(self.params, setup)
        prm = setup["params"]
        max_bin, colsample = int(prm["max_bin"]), float(prm["colsample_bytree"])
        n_jobs = int(self.params.n_jobs)
        if int(setup["n_rows"]) != len(x):
            raise DataError(f"host has {len(x)} rows but the guest {setup['n_rows']}; align rows with PSI first")
        if setup.get("digest") != ids_digest(ids, len(x)):
            raise DataError(f"cannot train: {ctx.party}'s rows are not in the guest's order (different ids or "
                            "order); align the rows with PSI first and pass every party its rows in that order")
        cipher = make_host_cipher(setup["scheme"], setup["pk"], n_jobs)
        mapper = BinMapper.fit(x, max_bin)
        codes = mapper.transform(x)
        self.mapper = mapper
        nb = mapper.n_slots
        K, outs_chunk = int(setup["n_outputs"]), int(setup["outputs_per_chunk"])
        seed = prm.get("random_state")
        rng = np.random.default_rng(None if seed is None else [int(seed), sum(map(ord, ctx.party))])
        model = SecureBoostHostModel([], [])
        r = 0
        try:
            cipher.warm()
            ctx.send("guest", "n_features", int(x.shape[1]))
            while True:
                with ctx.scope("round", r):
                    msg = ctx.recv("guest", "gh")
                    if msg["stop"]:
                        break
                    t0 = time.perf_counter()
                    sampled = _unpack_mask(msg["sampled"])
                    chunks = [cipher.prepare(c) for c in msg["chunks"]]
                    model.timings["prepare"] = model.timings.get("prepare", 0.0) + time.perf_counter() - t0
                    for k in range(K):
                        with ctx.scope("output", k):
                            topo, lookup = self._grow(ctx, cipher, chunks[k // outs_chunk], codes, nb,
                                                      sampled, colsample, rng, mapper,
                                                      2 * min(outs_chunk, K - (k - k % outs_chunk)),
                                                      model.timings)
                        model.topologies.append(topo)
                        model.lookup.append(lookup)
                    if setup["has_eval"]:
                        if eval_x is None:
                            raise DataError("the guest has an eval_set: give this host its eval rows too")
                        self._answer_predict(ctx, np.asarray(eval_x, np.float64), model)
                r += 1
            if setup["has_eval"] and prm.get("early_stopping_rounds") is not None:
                keep = int(ctx.recv("guest", "keep_trees"))
                model.topologies, model.lookup = model.topologies[:keep], model.lookup[:keep]
            model.stats = dict(cipher.stats)
        finally:
            cipher.close()
        self.model = model
        return model

    def _grow(self, ctx: Context, cipher, payload, codes: np.ndarray, nb: int,
              sampled: np.ndarray, colsample: float, rng: np.random.Generator, mapper: BinMapper,
              n_slots: int, timings: dict[str, float]) -> tuple[dict, dict]:
        feats = _column_sample(rng, codes.shape[1], colsample)
        position = np.cumsum(sampled) - 1
        sub_codes = np.ascontiguousarray(codes[:, feats])
        if len(sampled) != len(codes) or len(payload) != int(sampled.sum()):
            raise DataError("the guest's encrypted rows do not match its sampled-row mask; are the parties' "
                            "rows aligned?")
        # the payload holds the sampled rows only, in row order: their codes stay with them for the tree
        tree_rows = cipher.rows(payload, np.ascontiguousarray(sub_codes[sampled]), nb)
        try:
            return self._grow_levels(ctx, cipher, tree_rows, codes, nb, sampled, position, feats, mapper,
                                     n_slots, timings)
        finally:
            tree_rows.close()

    def _grow_levels(self, ctx: Context, cipher, tree_rows, codes: np.ndarray, nb: int, sampled: np.ndarray,
                     position: np.ndarray, feats: np.ndarray, mapper: BinMapper, n_slots: int,
                     timings: dict[str, float]) -> tuple[dict, dict]:
        n = len(codes)
        node_rows: dict[int, np.ndarray] = {0: np.arange(n)}
        left: dict[int, int] = {}
        right: dict[int, int] = {}
        owner: dict[int, str] = {}
        lookup: dict[int, tuple[int, float, bool]] = {}
        depth = 0
        while True:
            with ctx.scope("depth", depth):
                build = ctx.recv("guest", "build")
                if build is None:
                    break
                t0 = time.perf_counter()
                row_sets = []
                for node in build:
                    rows = node_rows[int(node)]
                    row_sets.append(position[rows[sampled[rows]]])
                hists = {str(node): h for node, h in zip(build, cipher.histograms(tree_rows, row_sets, n_slots))}
                ctx.send("guest", "hist", {"features": feats.astype(np.int64), "hists": hists})
                timings["histogram"] = timings.get("histogram", 0.0) + time.perf_counter() - t0
                sp = ctx.recv("guest", "splits")
                structure = sp["structure"]
                if structure:
                    masks = {}
                    for key, (f, b, ml) in sp["mine"].items():
                        node = int(key)
                        f = int(f)
                        if not 0 <= f < codes.shape[1]:
                            raise DataError(f"guest named feature {f} but this host has {codes.shape[1]}")
                        rows = node_rows[node]
                        gl = go_left(codes[rows, f], int(b), bool(ml), nb - 1)
                        masks[key] = _pack_mask(gl)
                        lookup[node] = (f, mapper.threshold(f, int(b)), bool(ml))
                    ctx.send("guest", "masks", masks)
                    part = ctx.recv("guest", "partition")
                    for node, own, lc, rc in structure:
                        rows = node_rows.pop(int(node))
                        gl = _unpack_mask(part[str(node)])
                        node_rows[int(lc)], node_rows[int(rc)] = rows[gl], rows[~gl]
                        left[int(node)], right[int(node)], owner[int(node)] = int(lc), int(rc), str(own)
            depth += 1
        n_nodes = 1 + 2 * len(left)
        topo = {"left": np.full(n_nodes, -1, np.int32), "right": np.full(n_nodes, -1, np.int32),
                "owner": [""] * n_nodes}
        for node in left:
            topo["left"][node], topo["right"][node], topo["owner"][node] = left[node], right[node], owner[node]
        return topo, lookup

    # ------------------------------------------------------------------ prediction
    def _answer_predict(self, ctx: Context, x: np.ndarray, model: SecureBoostHostModel,
                        ids: list | None = None) -> bool:
        req = ctx.recv("guest", "predict")
        if req is None:
            return False
        first, count = int(req["first"]), int(req["count"])
        if int(req["n_rows"]) != len(x):
            raise DataError(f"host has {len(x)} rows to predict but the guest {req['n_rows']}; align rows first")
        if req.get("digest") != ids_digest(ids, len(x)):
            raise DataError(f"cannot score: {ctx.party}'s rows are not in the guest's order (different ids or "
                            "order); align the rows first")
        out = []
        for t in range(first, first + count):
            topo, lookup = model.topologies[t], model.lookup[t]

            def decide(node: int, lookup=lookup) -> np.ndarray:
                f, thr, ml = lookup[node]
                return _threshold_left(x[:, f], thr, ml)

            m = reachable_leaves(topo["left"], topo["right"], topo["owner"], ctx.party, decide, len(x))
            out.append((np.packbits(m.ravel()).tobytes(), m.shape))
        ctx.send("guest", "reach", out)
        return True

    def predict(self, ctx: Context, x: np.ndarray, model: SecureBoostHostModel | None = None,
                ids: list | None = None) -> None:
        model = model or self.model
        x = np.asarray(x, dtype=np.float64)
        with ctx.scope("predict"):
            i = 0
            while True:
                with ctx.scope("request", i):
                    if not self._answer_predict(ctx, x, model, ids):
                        break
                i += 1


def _tick(model: SecureBoostGuestModel, what: str, since: float) -> float:
    now = time.perf_counter()
    model.timings[what] = model.timings.get(what, 0.0) + now - since
    return now


def _eval_loss(objective: str, y: np.ndarray, margin: np.ndarray) -> float:
    """The objective's loss: log loss, RMSE or multi-class log loss (:mod:`atoll.ml.metrics`)."""
    from atoll.ml import metrics

    pred = get_objective(objective).transform(margin)
    if objective == "binary:logistic":
        return metrics.log_loss(y, pred)
    if objective == "reg:squarederror":
        return metrics.rmse(y, pred)
    return metrics.multiclass_log_loss(y, pred)


# ============================================================================ model parts
_TREE_FIELDS = ("left", "right", "owner", "feature", "threshold", "missing_left", "gain", "value")


def save_guest(m: SecureBoostGuestModel) -> dict[str, Any]:
    return {"objective": m.objective, "base_margin": np.asarray(m.base_margin, np.float64),
            "n_outputs": int(m.n_outputs),
            "trees": [{"output": int(t.output), **{f: list(getattr(t, f)) for f in _TREE_FIELDS}}
                      for t in m.trees],
            "feature_gain": {k: np.asarray(v) for k, v in m.feature_gain.items()},
            "feature_count": {k: np.asarray(v) for k, v in m.feature_count.items()},
            "best_iteration": m.best_iteration, "seconds_per_round": list(m.seconds_per_round),
            # per-round losses: the report plots them
            "history": {k: [float(v) for v in getattr(m, k)] for k in ("train_loss", "valid_loss")
                        if getattr(m, k)}}


def load_guest(d: dict[str, Any]) -> SecureBoostGuestModel:
    trees = []
    for t in d["trees"]:
        tree = Tree(output=int(t["output"]))
        for f in _TREE_FIELDS:
            setattr(tree, f, list(t[f]))
        tree.left = [int(v) for v in tree.left]
        tree.right = [int(v) for v in tree.right]
        tree.feature = [int(v) for v in tree.feature]
        tree.missing_left = [bool(v) for v in tree.missing_left]
        trees.append(tree)
    return SecureBoostGuestModel(d["objective"], np.asarray(d["base_margin"]), int(d["n_outputs"]), trees,
                                 dict(d["feature_gain"]), dict(d["feature_count"]), d["best_iteration"],
                                 list(d["seconds_per_round"]),
                                 train_loss=list(d.get("history", {}).get("train_loss", [])),
                                 valid_loss=list(d.get("history", {}).get("valid_loss", [])))


def save_host(m: SecureBoostHostModel) -> dict[str, Any]:
    return {"topologies": [{"left": np.asarray(t["left"]), "right": np.asarray(t["right"]),
                            "owner": list(t["owner"])} for t in m.topologies],
            "lookup": [[[int(node), int(f), float(thr), bool(ml)] for node, (f, thr, ml) in sorted(lk.items())]
                       for lk in m.lookup]}


def load_host(d: dict[str, Any]) -> SecureBoostHostModel:
    topo = [{"left": np.asarray(t["left"], np.int32), "right": np.asarray(t["right"], np.int32),
             "owner": list(t["owner"])} for t in d["topologies"]]
    lookup = [{int(node): (int(f), float(thr), bool(ml)) for node, f, thr, ml in lk} for lk in d["lookup"]]
    return SecureBoostHostModel(topo, lookup)


# ============================================================================ centralised twin
def twin_params(params: SecureBoostParams, best_iteration: int | None) -> SecureBoostParams:
    """The twin grows as many rounds as the federated model kept (after early stopping)."""
    if best_iteration is None:
        return params
    return params.model_copy(update={"n_estimators": int(best_iteration) + 1})


def centralized_twin(params: SecureBoostParams, seed: int, task: str) -> tuple[Any, Any]:
    """XGBoost (if installed) or scikit-learn's ``HistGradientBoosting`` with the same number of trees,
    depth, learning rate, L2 term and bins, trained on the joined data."""
    p = params
    try:
        import xgboost as xgb

        kw = dict(n_estimators=p.n_estimators, max_depth=p.max_depth, learning_rate=p.learning_rate,
                  reg_lambda=p.reg_lambda, gamma=p.gamma, min_child_weight=p.min_child_weight,
                  max_bin=p.max_bin, subsample=p.subsample, colsample_bytree=p.colsample_bytree,
                  tree_method="hist", random_state=seed)
        if task == "binary":
            return xgb.XGBClassifier(**kw), lambda m, x: m.predict_proba(x)[:, 1]
        if task == "multiclass":
            return xgb.XGBClassifier(objective="multi:softprob", **kw), lambda m, x: m.predict_proba(x)
        return xgb.XGBRegressor(**kw), lambda m, x: m.predict(x)
    except ImportError:
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        kw = dict(max_iter=p.n_estimators, max_depth=p.max_depth, learning_rate=p.learning_rate,
                  l2_regularization=p.reg_lambda, max_bins=min(p.max_bin, 255), min_samples_leaf=1,
                  early_stopping=False, random_state=seed)
        if task == "binary":
            return HistGradientBoostingClassifier(**kw), lambda m, x: m.predict_proba(x)[:, 1]
        if task == "multiclass":
            return HistGradientBoostingClassifier(**kw), lambda m, x: m.predict_proba(x)
        return HistGradientBoostingRegressor(**kw), lambda m, x: m.predict(x)


def check_parties(params: SecureBoostParams, parties: dict[str, list[str]]) -> None:
    """The registry's ``check`` hook: a guest and at least one host (the arbiter takes no part)."""
    if not parties.get("guest") or not parties.get("host"):
        raise param_error("needs a guest and at least one host")


SECUREBOOST = registry.register(Algorithm(
    name="secureboost", params=SecureBoostParams, roles={"guest": SecureBoostGuest, "host": SecureBoostHost},
    layout="vertical", task=lambda p: TASKS[p.objective],
    parts={"guest": ModelPart(save_guest, load_guest), "host": ModelPart(save_host, load_host)},
    twin=centralized_twin, check=check_parties,
    summary="vertical gradient-boosted trees; the guest holds labels and the HE key"))


# ============================================================================ simulation facade
def _guest_fit(ctx: Context, params: SecureBoostParams, x, y, eval_set=None, ids=None):
    return {"model": SecureBoostGuest(params).fit(ctx, x, y, eval_set, ids=ids)}


def _host_fit(ctx: Context, params: SecureBoostParams, x, eval_x=None, ids=None):
    return SecureBoostHost(params).fit(ctx, x, eval_x, ids=ids)


def _guest_predict(ctx: Context, params: SecureBoostParams, model: SecureBoostGuestModel, x, ids=None):
    return SecureBoostGuest(params).predict_margin(ctx, x, model, ids=ids)


def _host_predict(ctx: Context, params: SecureBoostParams, model: SecureBoostHostModel, x, ids=None):
    SecureBoostHost(params).predict(ctx, x, model, ids=ids)
    return None


class HeteroSecureBoost(FederatedEstimator):
    """Simulation facade: all parties in one call (threads or processes), scikit-learn style.

        model = HeteroSecureBoost(n_estimators=5, max_depth=5, scheme="ou").fit(
            {"guest": (X_guest, y), "host_0": X_host})
        p = model.predict_proba({"guest": X_guest_test, "host_0": X_host_test})

    Parameters: :class:`SecureBoostParams`' (``scheme``: "ou" (default), "paillier" or "plain":
    no encryption, same protocol), plus ``transport`` ("threads": in-process, or "processes":
    one process per party, gRPC + mTLS), ``timeout`` and ``roles`` (party name -> "guest" /
    "host" for names other than "guest", "host_0", ...). ``feature_importances_`` is XGBoost's
    "gain" importance (mean gain of the splits using a feature, normalised), over guest
    features then each host's in order; ``feature_names_in_`` maps each party given as a
    DataFrame to its column names.
    """

    algorithm = SECUREBOOST

    def fit(self, data: Mapping[str, Any], eval_set: Mapping[str, Any] | None = None,
            recorder=None) -> "HeteroSecureBoost":
        params = self._params()
        self._launch_mode()
        d = self._vertical(data, need_label=True, task="train")
        ev = None
        if eval_set is not None:  # same parties, same columns as the training data
            ev = self._vertical(eval_set, need_label=True, task="evaluate", like=self._state(d))
        ev_g = None if ev is None else (ev.x.x, np.asarray(ev.y, dtype=np.float64).ravel())
        y = np.asarray(d.y, dtype=np.float64).ravel()
        spec = {d.guest: Party("guest", _guest_fit, {"params": params, "x": d.x.x, "y": y, "eval_set": ev_g,
                                                     "ids": d.x.ids})}
        for name, t in d.hosts.items():
            spec[name] = Party("host", _host_fit, {"params": params, "x": t.x, "ids": t.ids,
                                                   "eval_x": None if ev is None else ev.hosts[name].x})
        t0 = time.perf_counter()
        res = self._run(spec, recorder=recorder)
        self.fit_seconds_ = time.perf_counter() - t0
        self.guest_model_ = res[d.guest]["model"]
        self.host_models_ = {k: res[k] for k in d.hosts}
        self.hosts_ = list(d.hosts)
        self.params_ = params
        self.n_outputs_ = self.guest_model_.n_outputs
        if self.objective == "multi:softprob":
            self.classes_ = np.arange(self.n_outputs_)
        elif self.objective == "binary:logistic":
            self.classes_ = np.array([0, 1])
        self.best_iteration = self.guest_model_.best_iteration
        self._remember(d)
        return self

    @property
    def feature_importances_(self) -> np.ndarray:
        m = self.guest_model_
        parts = ["guest", *self.hosts_]
        gain = np.concatenate([m.feature_gain[q] for q in parts])
        cnt = np.concatenate([m.feature_count[q] for q in parts])
        avg = np.divide(gain, cnt, out=np.zeros_like(gain), where=cnt > 0)
        total = avg.sum()
        return avg / total if total > 0 else avg

    def predict_margin(self, data: Mapping[str, Any], recorder=None) -> np.ndarray:
        d = self._vertical(data, need_label=False, task="score", like=self._fitted())
        params = self.params_
        spec = {d.guest: Party("guest", _guest_predict, {"params": params, "model": self.guest_model_,
                                                         "x": d.x.x, "ids": d.x.ids})}
        for name, t in d.hosts.items():
            spec[name] = Party("host", _host_predict, {"params": params, "model": self.host_models_[name],
                                                       "x": t.x, "ids": t.ids})
        return self._run(spec, recorder=recorder)[d.guest]

    def predict_proba(self, data: Mapping[str, Any]) -> np.ndarray:
        """Class probabilities (n, n_classes); for regression use :meth:`predict`."""
        if self.objective == "reg:squarederror":
            raise ConfigError("predict_proba is for classifiers; use predict() for regression")
        p = get_objective(self.objective).transform(self.predict_margin(data))
        return np.stack([1 - p, p], axis=1) if p.ndim == 1 else p

    def predict(self, data: Mapping[str, Any]) -> np.ndarray:
        m = self.predict_margin(data)
        if self.objective == "reg:squarederror":
            return m[:, 0]
        p = get_objective(self.objective).transform(m)
        return (p > 0.5).astype(np.int64) if p.ndim == 1 else np.argmax(p, axis=1)
