"""Exact k-nearest-neighbour search on unit vectors, Euclidean distance, pruned by a compressed first pass.

Brute force reads every value of every vector: 392 KiB per image in the reference ``flatten`` mode.
Here a query is first compared with the PCA projections of all vectors (a few hundred values each).
For an orthonormal basis, ``|P(x - q)|^2 + (|R x| - |R q|)^2 <= |x - q|^2`` (R: the residual outside the
basis), so those cheap numbers are lower bounds. Exact distances are computed, with BLAS, only for the
vectors whose bound could still beat the k-th best exact distance; the answer is the same as brute force.
:class:`ExactMethod` derives what it needs (the reference pipeline's projection, neighbour graph and map).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from imgsim.analysis.map2d import MapBuilder
from imgsim.progress import ProgressFn
from imgsim.search import GRAPH_K, Neighbors
from imgsim.search.projection import PCAProjection

if TYPE_CHECKING:
    from imgsim.store.generations import GenerationWriter, Index

# Squared distances closer than this are treated as possible ties of the float32 pass.
_TIE = 1e-5
PROJECTION_COMPONENTS = 256
#: Rows per neighbour-graph block: one progress report each.
GRAPH_BLOCK = 64


class ExactSearch:
    """Exact Euclidean k-NN over (memory-mapped) unit vectors.

    ``fit`` takes the vectors and a fitted :class:`PCAProjection` (plus the stored projections, residuals
    and squared norms, when an index already holds them). ``last_exact_fraction_`` reports the share of
    vectors whose exact distance the last call had to compute (1.0 would be brute force).
    """

    def __init__(self, slack: float = 1e-3, query_block: int = 32, refine_up_to: int = 16):
        self.slack = slack
        self.query_block = query_block
        self.refine_up_to = refine_up_to

    def fit(self, vectors: np.ndarray, projection: PCAProjection, projected: np.ndarray | None = None,
            residual: np.ndarray | None = None, sqnorm: np.ndarray | None = None) -> "ExactSearch":
        self.vectors_ = vectors
        self.projection_ = projection
        if projected is None or residual is None:
            projected, residual = projection.transform(vectors)
        self.projected_ = np.ascontiguousarray(projected, dtype=np.float32)
        self.residual_ = np.asarray(residual, dtype=np.float32)
        self.pnorm2_ = np.einsum("ij,ij->i", self.projected_, self.projected_)
        self.sqnorm_ = squared_norms(vectors) if sqnorm is None else np.asarray(sqnorm, dtype=np.float64)
        self.last_exact_fraction_ = 0.0
        return self

    @property
    def n(self) -> int:
        return len(self.vectors_)

    # --- queries -----------------------------------------------------------------------------------

    def kneighbors(self, queries: np.ndarray, k: int, prefer: int | None = None,
                   allowed: np.ndarray | None = None) -> Neighbors:
        """The ``k`` nearest rows to each query vector (k clamped to the collection size).

        ``prefer`` is a row that wins ties (a query that is itself indexed comes first at distance 0).
        ``allowed`` (a boolean mask over the rows) restricts the answer to its rows: exactly the exact search
        over that subset, k clamped to its size.
        """
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        pq, rq = self.projection_.transform(q)

        def fetch(block: np.ndarray):
            return q[block], pq[block], rq[block]

        prefer_rows = np.full(len(q), -1 if prefer is None else prefer)
        return self._search(len(q), fetch, k, exclude=np.full(len(q), -1), prefer=prefer_rows, allowed=allowed)

    def kneighbors_rows(self, rows: np.ndarray, k: int, exclude_self: bool = True) -> Neighbors:
        """Neighbours of indexed rows, using their stored vectors and projections; self excluded by default."""
        rows = np.asarray(rows, dtype=np.int64)

        def fetch(block: np.ndarray):
            r = rows[block]
            order = np.argsort(r)
            vecs = np.empty((len(r), self.vectors_.shape[1]), dtype=np.float32)
            vecs[order] = self.vectors_[r[order]]
            return vecs, self.projected_[r], self.residual_[r]

        exclude = rows if exclude_self else np.full(len(rows), -1)
        return self._search(len(rows), fetch, k, exclude=exclude, prefer=rows)

    def pairs_within(self, threshold: float, limit: int | None = None, allowed: np.ndarray | None = None,
                     block: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every pair ``i < j`` at distance ``<= threshold``: arrays ``(i, j, distance)`` in ``(i, j)`` order; with
        ``limit``, the first ``limit`` (a large threshold links nearly n²/2 pairs: the scan stops instead); with
        ``allowed`` (a row mask), pairs of allowed rows only."""
        t2 = float(threshold) ** 2
        out_i, out_j, out_d = [], [], []
        computed = found = 0
        if limit is not None:
            block = min(block, 64)  # a capped scan is a visitor's: its block's n-wide bounds stay small
        for start in range(0, self.n, block):
            if limit is not None and found >= limit:
                break
            rows = np.arange(start, min(start + block, self.n))
            if allowed is not None:
                rows = rows[allowed[rows]]
                if not len(rows):
                    continue
            lb = self._lower_bounds(self.projected_[rows], self.residual_[rows])
            lb[rows[:, None] >= np.arange(self.n)[None, :]] = np.inf  # keep j > i
            if allowed is not None:
                lb[:, ~allowed] = np.inf
            a, j = np.nonzero(lb <= t2 + self.slack)
            if not len(a):
                continue
            cols, inv = np.unique(j, return_inverse=True)
            used = np.unique(a)
            d2 = self._exact(np.asarray(self.vectors_[rows[used]], dtype=np.float32), self.sqnorm_[rows[used]], cols)
            computed += d2.size
            d2 = d2[np.searchsorted(used, a), inv]
            keep = np.flatnonzero(d2 <= t2)
            if limit is not None:
                keep = keep[: limit - found]  # in (i, j) order: the block's pairs past the limit are never kept
            out_i.append(rows[a[keep]])
            out_j.append(j[keep])
            out_d.append(np.sqrt(d2[keep]))
            found += len(keep)
        self.last_exact_fraction_ = computed / max(1, self.n * self.n / 2)
        if not out_i:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        return np.concatenate(out_i)[:limit], np.concatenate(out_j)[:limit], np.concatenate(out_d)[:limit]

    # --- internals ---------------------------------------------------------------------------------

    def _lower_bounds(self, pq: np.ndarray, rq: np.ndarray) -> np.ndarray:
        """Squared-distance lower bounds, shape (len(pq), n)."""
        pq = np.asarray(pq, dtype=np.float32)
        lb = self.pnorm2_[None, :] + np.einsum("ij,ij->i", pq, pq)[:, None] - 2.0 * (pq @ self.projected_.T)
        lb += np.square(self.residual_[None, :] - np.asarray(rq, dtype=np.float32)[:, None])
        return np.maximum(lb, 0.0, out=lb)

    def _exact(self, q: np.ndarray, qsq: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Exact squared distances between query vectors and the rows ``cols`` (sorted)."""
        x = np.asarray(self.vectors_[cols], dtype=np.float32)
        d2 = np.asarray(qsq, dtype=np.float64)[:, None] + self.sqnorm_[cols][None, :] - 2.0 * (q @ x.T)
        # Near-duplicates: the expanded form loses precision close to 0, so recompute those directly.
        for a, b in zip(*np.nonzero(d2 < 1e-4)):
            diff = x[b].astype(np.float64) - q[a].astype(np.float64)
            d2[a, b] = diff @ diff
        return np.maximum(d2, 0.0)

    def _search(self, m: int, fetch: Callable, k: int, exclude: np.ndarray, prefer: np.ndarray,
                allowed: np.ndarray | None = None) -> Neighbors:
        n = self.n
        pool = None if allowed is None else np.flatnonzero(np.asarray(allowed, dtype=bool))
        k = max(0, min(int(k), (n if pool is None else len(pool)) - (1 if (exclude >= 0).any() else 0)))
        indices = np.zeros((m, k), dtype=np.int64)
        distances = np.zeros((m, k), dtype=np.float64)
        if k == 0 or m == 0:
            return Neighbors(indices, distances)
        want = k + 1
        c = min(n, max(2 * want, want + 16))
        # A subset whose full vectors cost less to read than the bounds of every row is simply scanned.
        scan = pool is not None and len(pool) <= max(c, n * self.projected_.shape[1] // (4 * self.vectors_.shape[1]))
        computed = 0
        for start in range(0, m, self.query_block):
            block = np.arange(start, min(start + self.query_block, m))
            q, pq, rq = fetch(block)
            q = np.asarray(q, dtype=np.float32)
            qsq = np.einsum("ij,ij->i", q.astype(np.float64), q.astype(np.float64))
            if scan:
                lb, cand = None, np.tile(pool, (len(block), 1))
            else:
                lb = self._lower_bounds(pq, rq)
                if pool is not None:
                    lb[:, ~np.asarray(allowed, dtype=bool)] = np.inf  # more than c rows remain: all candidates pass
                cand = np.argpartition(lb, c - 1, axis=1)[:, :c] if c < n else np.tile(np.arange(n), (len(block), 1))
            cols, inv = np.unique(cand, return_inverse=True)
            d2_cols = self._exact(q, qsq, cols)
            computed += cand.size
            inv = inv.reshape(cand.shape)
            for b, qi in enumerate(block):
                ci = cand[b]
                di = d2_cols[b, inv[b]]
                if exclude[qi] >= 0:
                    di = np.where(ci == exclude[qi], np.inf, di)
                tau = np.partition(di, k - 1)[k - 1]
                if lb is not None and c < n and lb[b, ci].max() <= tau + self.slack:
                    # Rows outside the first candidates whose bound is still below tau may be nearer.
                    extra_mask = lb[b] <= tau + self.slack
                    extra_mask[ci] = False
                    extra = np.flatnonzero(extra_mask)
                    if len(extra):
                        de = self._exact(q[b:b + 1], qsq[b:b + 1], extra)[0]
                        if exclude[qi] >= 0:
                            de = np.where(extra == exclude[qi], np.inf, de)
                        ci, di = np.concatenate([ci, extra]), np.concatenate([di, de])
                        computed += len(extra)
                near = np.flatnonzero(di <= tau + _TIE)
                if np.any(np.diff(np.sort(di[near])) < _TIE):
                    # Distances closer than float32 can tell apart: settle the order in float64.
                    di = di.copy()
                    di[near] = self._exact64(q[b], ci[near])
                order = np.lexsort((ci, ci != prefer[qi], di))[:k]
                top, top_d2 = ci[order], di[order]
                if m <= self.refine_up_to:
                    top, top_d2 = self._refine(q[b], top, top_d2, prefer[qi])
                indices[qi] = top
                distances[qi] = np.sqrt(top_d2)
        self.last_exact_fraction_ = computed / (m * n)
        return Neighbors(indices, distances)

    def _exact64(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Squared distances from one query to ``rows``, computed in float64 from the vectors themselves."""
        order = np.argsort(rows)
        diff = np.asarray(self.vectors_[rows[order]], dtype=np.float64) - q.astype(np.float64)
        out = np.empty(len(rows))
        out[order] = np.einsum("ij,ij->i", diff, diff)
        return out

    def _refine(self, q: np.ndarray, top: np.ndarray, d2: np.ndarray, prefer: int) -> tuple[np.ndarray, np.ndarray]:
        """Recompute the final distances in float64 (interactive queries report them to people)."""
        exact = self._exact64(q, top)
        final = np.lexsort((top, top != prefer, exact))
        return top[final], exact[final]


def squared_norms(vectors: np.ndarray, chunk_rows: int = 512) -> np.ndarray:
    """Row-wise squared L2 norms in float64, read in chunks (works on memory maps)."""
    out = np.empty(len(vectors), dtype=np.float64)
    for start in range(0, len(vectors), chunk_rows):
        block = np.asarray(vectors[start:start + chunk_rows], dtype=np.float64)
        out[start:start + len(block)] = np.einsum("ij,ij->i", block, block)
    return out


def derive_arrays(writer: GenerationWriter, progress: ProgressFn) -> dict:
    """Fit the search projection, the neighbour graph and the 2-D map for the vectors being written."""
    vectors = writer.vectors
    n = len(vectors)
    progress("compress", 0, 3)  # three steps: fit, project, index
    projection = PCAProjection(n_components=PROJECTION_COMPONENTS).fit(vectors)
    progress("compress", 1, 3)
    projected, residual = projection.transform(vectors)
    progress("compress", 2, 3)
    search = ExactSearch().fit(vectors, projection, projected, residual)
    for name, arr in (("pca_components", projection.components_), ("pca_mean", projection.mean_),
                      ("projected", projected), ("residual", residual), ("sqnorm", search.sqnorm_)):
        writer.save_array(name, arr)
    progress("compress", 3, 3)
    progress("neighbors", 0, n)
    indices, distances = [], []
    for start in range(0, n, GRAPH_BLOCK):  # in blocks, so the bar moves
        part = search.kneighbors_rows(np.arange(start, min(n, start + GRAPH_BLOCK)), GRAPH_K)
        indices.append(part.indices)
        distances.append(part.distances)
        progress("neighbors", start + len(part.indices), n)
    graph = Neighbors(np.concatenate(indices) if indices else np.zeros((0, 0), np.int64),
                      np.concatenate(distances) if distances else np.zeros((0, 0)))
    writer.save_array("nn_indices", graph.indices.astype(np.int32))
    writer.save_array("nn_distances", graph.distances.astype(np.float32))
    mapper = MapBuilder().fit(projected, progress)
    writer.save_array("map_xy", mapper.embedding_)
    return {
        "projection": {"n_components": projection.n_components_,
                       "explained_variance": float(np.sum(projection.explained_variance_ratio_))},
        "map": {"method": "pca+tsne", "pca_components": mapper.n_components_, "perplexity": mapper.perplexity_},
        "graph_k": int(graph.indices.shape[1]),
    }


class ExactMethod:
    """Exact search as a method of the index: the reference pipeline's derived data, re-derived in full."""

    name = "exact"
    files: tuple[str, ...] = ()

    def derive(self, writer: GenerationWriter, progress: ProgressFn, chosen: str,
               target: float | None = None) -> dict:
        """Projection, neighbour graph and map for the vectors being written (every answer is exact: no
        ``target`` to tune for)."""
        return dict(derive_arrays(writer, progress), search={"method": "exact", "chosen": chosen})

    def update(self, writer: GenerationWriter, progress: ProgressFn, chosen: str, old: Index,
               sources: list, target: float | None = None) -> dict:
        """The same as :meth:`derive`: every exact array depends on every vector."""
        return self.derive(writer, progress, chosen)

    def open(self, index: Index) -> ExactSearch:
        """The stored projections, residuals and squared norms, ready to answer queries."""
        projection = PCAProjection.from_arrays(index.array("pca_components"), index.array("pca_mean"))
        return ExactSearch().fit(index.vectors, projection, index.array("projected"), index.array("residual"),
                                 index.array("sqnorm"))

    def describe(self, info: dict, *, short: bool = False) -> str:
        """How exact search finds neighbours (every result is the true nearest)."""
        return "exact" if short else "Search: exact nearest neighbours (every result is the true nearest)."
