"""Approximate k-NN for large collections: a faiss IVF index over PCA-reduced vectors, exact re-ranking.

The IVF index (inverted lists over k-means cells of the PCA coordinates) proposes ``candidates`` rows per
query. Each indexed row is stored as its PCA coordinates plus one more: the norm of its residual outside
the basis (queries get 0 there), so the IVF distance is ``|P(x-q)|^2 + |R x|^2``, which ranks like the
true distance when residuals are uncorrelated (PCA coordinates alone rank near-equidistant points badly); their exact Euclidean distances are then computed from the memory-mapped full vectors, so every
distance shown is exact and only the *set* of neighbours is approximate. Rows are addressed in the IVF
index by a stable key (``keys_[row]``), so an incremental update removes and adds keys instead of
rebuilding. Recall against exact search is measured, never assumed: :func:`recall_at_k`, and
:mod:`imgsim.search.tuning` chooses the operating point that keeps a target.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from imgsim.search import Neighbors
from imgsim.search.projection import PCAProjection

#: PCA dimensions the IVF index works in. With the residual norm a row is 128 numbers: faiss's SIMD 8-bit
#: kernels need a multiple of 16 (at 129 the 8-bit scan ran 10 times slower, bench/ann_kernels.py).
ANN_DIMS = 127
ANN_FILE = "ann.faiss"
#: Share of the cells a filtered query's probing is scaled from at least (by 1 / sqrt(the share of rows that
#: pass)): 24 of the 1,341 cells of a 200k index.
FILTERED_MIN_PROBE = 0.018
#: The probing grows as share ** -FILTERED_PROBE_EXPONENT. The k nearest rows that pass lie about as far as the
#: k / share nearest of all rows, but those lie in few more cells than the k nearest do: 1 / share over-probed
#: (1M features, 10 % passing: 1,280 of 3,000 cells, 13.3 ms, recall 0.999; 1 / sqrt(share): 405 cells,
#: 4.9 ms, 0.992; bench/filtered_search.py).
FILTERED_PROBE_EXPONENT = 0.5
#: At most this many rows passing a filter are all re-ranked exactly instead (at 1M, 0.1 % passing: a scan of
#: every cell for them took 8 ms).
FILTERED_EXACT_ROWS = 1024


def _faiss():
    import faiss  # imported on use: exact-mode collections never load it

    return faiss


def default_lists(n: int) -> int:
    """IVF cells for ``n`` vectors: about 3·sqrt(n), at least 1, at most n/39 (faiss' training minimum)."""
    return int(max(1, min(3 * math.sqrt(max(n, 1)), max(n, 1) // 39)))


class AnnSearch:
    """Approximate Euclidean k-NN over unit vectors with exact re-ranking (a :class:`imgsim.search.Search`).

    ``fit(vectors, projection, projected, keys)`` trains and fills the IVF index; ``attach`` reuses a
    stored one. ``graph`` (stored neighbour rows and distances) answers :meth:`pairs_within`.
    """

    def __init__(self, n_lists: int | None = None, n_probe: int = 24, candidates: int = 100,
                 random_state: int = 0):
        self.n_lists = n_lists
        self.n_probe = n_probe
        self.candidates = candidates
        self.random_state = random_state
        self.graph_: tuple[np.ndarray, np.ndarray] | None = None
        self.last_exact_fraction_ = 0.0
        self._last_selector: tuple | None = None  # (mask digest, keys, selector, its bitmap, rows passing)

    # --- building ------------------------------------------------------------------------------------

    def fit(self, vectors: np.ndarray, projection: PCAProjection, projected: np.ndarray | None = None,
            residual: np.ndarray | None = None, keys: np.ndarray | None = None) -> "AnnSearch":
        """Train the IVF cells on a sample of the rows' coordinates and add every row under its key."""
        faiss = _faiss()
        if projected is None or residual is None:
            projected, residual = projection.transform(vectors, precise=False)
        projected = stored_coords(projected, residual)
        n, d = projected.shape
        self.n_lists_ = int(self.n_lists or default_lists(n))
        quantizer = faiss.IndexFlatL2(d)
        # 8-bit codes (per-dimension ranges, residuals to the cell centre): a quarter of the memory of float32
        # and a faster scan; the candidates are re-ranked exactly, so the shown distances do not change.
        index = faiss.IndexIVFScalarQuantizer(quantizer, d, self.n_lists_, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_L2)
        train = projected
        if n > 40 * self.n_lists_:
            rows = np.sort(np.random.default_rng(self.random_state).choice(n, 40 * self.n_lists_, replace=False))
            train = projected[rows]
        index.cp.seed = self.random_state
        index.train(train)
        keys = np.arange(n, dtype=np.int64) if keys is None else np.asarray(keys, dtype=np.int64)
        for start in range(0, n, 65536):
            index.add_with_ids(projected[start:start + 65536], keys[start:start + 65536])
        return self.attach(vectors, projection, index, keys)

    def attach(self, vectors: np.ndarray, projection: PCAProjection, index, keys: np.ndarray) -> "AnnSearch":
        """Use an already built IVF index whose key for row ``i`` is ``keys[i]``."""
        self.vectors_ = vectors
        self.projection_ = projection
        self.index_ = index
        self.index_.nprobe = int(min(self.n_probe, index.nlist))
        self.n_lists_ = int(index.nlist)
        self.keys_ = np.asarray(keys, dtype=np.int64)
        self._key_order = np.argsort(self.keys_, kind="stable")
        self._sorted_keys = self.keys_[self._key_order]
        if self.index_.ntotal != len(self.keys_):
            raise ValueError(f"ANN index holds {self.index_.ntotal} vectors for {len(self.keys_)} rows")
        return self

    def update(self, remove_keys: np.ndarray, add_keys: np.ndarray, add_projected: np.ndarray,
               add_residual: np.ndarray) -> None:
        """Remove and add vectors by key (an incremental re-index); call :meth:`attach` afterwards."""
        faiss = _faiss()
        if len(remove_keys):
            self.index_.remove_ids(faiss.IDSelectorBatch(np.asarray(remove_keys, dtype=np.int64)))
        if len(add_keys):
            self.index_.add_with_ids(stored_coords(add_projected, add_residual),
                                     np.asarray(add_keys, dtype=np.int64))

    def save(self, path: str | Path) -> None:
        _faiss().write_index(self.index_, str(path))

    @staticmethod
    def read(path: str | Path, mmap: bool = False):
        """A stored IVF index, read into memory (queries then never wait on first-touch page faults: 2 ms of
        a 4 ms query at 1M); ``mmap=True`` maps it read-only instead."""
        faiss = _faiss()
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        return faiss.read_index(str(path), flags)

    @property
    def engine(self) -> str:
        """What answers the candidate search, as recorded in the index metadata and shown on About."""
        name = type(self.index_).__name__
        return f"faiss {name}" + (" (8-bit codes)" if name == "IndexIVFScalarQuantizer" else "")

    @property
    def n(self) -> int:
        return len(self.keys_)

    # --- queries -------------------------------------------------------------------------------------

    def rows_of_keys(self, keys: np.ndarray) -> np.ndarray:
        """Rows for IVF keys (-1 for faiss' "no result")."""
        keys = np.asarray(keys, dtype=np.int64)
        pos = np.clip(np.searchsorted(self._sorted_keys, keys), 0, max(len(self._sorted_keys) - 1, 0))
        if not len(self._sorted_keys):
            return np.full(keys.shape, -1, dtype=np.int64)
        found = self._sorted_keys[pos] == keys
        return np.where(found & (keys >= 0), self._key_order[pos], -1)

    def candidates_of(self, projected: np.ndarray, count: int, allowed: np.ndarray | None = None,
                      n_probe: int | None = None) -> np.ndarray:
        """Candidate rows (m, count) from the IVF index, ``n_probe`` cells probed (default: the search's); -1
        where fewer were found.

        ``allowed`` (a boolean mask over the rows) searches under faiss' ID selector: only those rows are
        scanned, and more cells are probed, doubling, until ``count`` of them are found (or every cell is).
        """
        faiss = _faiss()
        q = query_coords(projected)
        nlist, selector = int(self.index_.nlist), None
        nprobe = int(min(n_probe, nlist)) if n_probe else int(self.index_.nprobe)
        if allowed is not None:
            selector, bitmap, passing = self._selector(np.asarray(allowed, dtype=bool))  # bitmap: alive for faiss
            # The k nearest rows that pass lie about as far as the k / share nearest of all rows: probe
            # share ** -FILTERED_PROBE_EXPONENT times the cells, and enough cells to hold count rows that pass; a
            # scanned row that fails costs one bit test. A point tuned to one probed cell (clustered data) scaled
            # so finds the passing rows of the query's own cluster only, not the nearer clusters where the rest of
            # its k lie: the scaling starts from at least FILTERED_MIN_PROBE of the cells (200k clustered, 10 % and
            # 1 % passing: recall 0.93 and 0.88 from one cell, 1.000 from 24 of 1,341).
            share = max(passing, 1) / max(self.n, 1)
            start = max(nprobe, FILTERED_MIN_PROBE * nlist) / share ** FILTERED_PROBE_EXPONENT
            hold = 1.5 * count * nlist / max(self.n * share, 1)
            nprobe = int(min(nlist, math.ceil(max(start, hold))))
        params = faiss.SearchParametersIVF(nprobe=nprobe, sel=selector) if selector is not None else \
            faiss.SearchParametersIVF(nprobe=nprobe)
        keys = self.index_.search(q, int(count), params=params)[1]
        short = np.flatnonzero((keys < 0).any(axis=1))
        while len(short) and nprobe < nlist:
            # The probed cells held fewer (allowed) rows than asked for: probe more cells for these queries, so a
            # result list is never cut short while the collection has more images that pass.
            nprobe = min(nlist, 2 * nprobe)  # doubling: a short row usually needs a cell or two more
            params = faiss.SearchParametersIVF(nprobe=nprobe, sel=selector) if selector is not None else \
                faiss.SearchParametersIVF(nprobe=nprobe)
            keys[short] = self.index_.search(q[short], int(count), params=params)[1]
            short = short[(keys[short] < 0).any(axis=1)]
        return self.rows_of_keys(keys)

    def _selector(self, allowed: np.ndarray) -> tuple:
        """faiss' ID selector of the rows ``allowed`` passes, its bitmap over keys and how many pass; the last
        one is kept (a filtered page's or client's queries share their mask, and at 1M building the bitmap
        took longer than the search: 16 -> 9 ms per query at 50 % passing, bench/filtered_search.py)."""
        digest = (hashlib.blake2b(np.packbits(allowed).tobytes(), digest_size=16).digest(), len(allowed))
        last = self._last_selector
        if last is not None and last[0] == digest and last[1] is self.keys_:
            return last[2], last[3], last[4]
        faiss = _faiss()
        bits = np.zeros(int(self.keys_.max()) + 1 if len(self.keys_) else 0, dtype=bool)
        bits[self.keys_[allowed]] = True
        bitmap = np.packbits(bits, bitorder="little")
        selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
        passing = int(np.count_nonzero(allowed))
        self._last_selector = (digest, self.keys_, selector, bitmap, passing)  # one assignment: thread-safe
        return selector, bitmap, passing

    def kneighbors(self, queries: np.ndarray, k: int, prefer: int | None = None,
                   allowed: np.ndarray | None = None) -> Neighbors:
        """The ``k`` nearest rows to each query vector, exact distances; ``prefer`` wins ties; ``allowed`` (a
        boolean mask over the rows) restricts the answer to its rows (k clamped to how many there are)."""
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        pq, _ = self.projection_.transform(q, precise=False)
        prefer_rows = np.full(len(q), -1 if prefer is None else prefer)
        if allowed is not None and prefer is not None and not allowed[prefer]:
            prefer_rows[:] = -1  # the query image does not pass the filter: it is no candidate
        return self._rerank(q, pq, k, exclude=np.full(len(q), -1), prefer=prefer_rows, refine=len(q) <= 16,
                            allowed=allowed)

    def kneighbors_rows(self, rows: np.ndarray, k: int, exclude_self: bool = True, candidates: int | None = None,
                        projected: np.ndarray | None = None, block: int = 1024, n_probe: int | None = None
                        ) -> Neighbors:
        """Neighbours of indexed rows; ``projected`` (their PCA coordinates) saves re-projecting them;
        ``candidates`` and ``n_probe`` replace the search's operating point (the neighbour graph has its own)."""
        rows = np.asarray(rows, dtype=np.int64)
        m = len(rows)
        k = max(0, min(int(k), self.n - (1 if exclude_self else 0)))
        indices = np.zeros((m, k), dtype=np.int64)
        distances = np.zeros((m, k), dtype=np.float64)
        for start in range(0, m, block):
            r = rows[start:start + block]
            order = np.argsort(r)
            q = np.empty((len(r), self.vectors_.shape[1]), dtype=np.float32)
            q[order] = self.vectors_[r[order]]
            pq = projected[start:start + block] if projected is not None else \
                self.projection_.transform(q, precise=False)[0]
            found = self._rerank(q, pq, k, exclude=r if exclude_self else np.full(len(r), -1), prefer=r,
                                 refine=False, count=candidates, n_probe=n_probe)
            indices[start:start + len(r)] = found.indices
            distances[start:start + len(r)] = found.distances
        return Neighbors(indices, distances)

    def pairs_within(self, threshold: float, limit: int | None = None, allowed: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pairs ``i < j`` at distance ``<= threshold`` among each image's stored nearest neighbours, in ``(i, j)``
        order; with ``limit``, the first ``limit``; with ``allowed`` (a row mask), pairs of allowed rows only."""
        if self.graph_ is None:
            raise ValueError("pairs_within needs the stored neighbour graph (AnnSearch.graph_)")
        idx, dist = self.graph_
        a, b = np.nonzero(np.asarray(dist) <= threshold)
        i, j, d = a.astype(np.int64), np.asarray(idx)[a, b].astype(np.int64), np.asarray(dist)[a, b].astype(np.float64)
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        keep = lo != hi
        if allowed is not None:
            keep &= allowed[lo] & allowed[hi]
        pair = lo[keep] * max(self.n, 1) + hi[keep]
        _, first = np.unique(pair, return_index=True)  # sorted by pair: (i, j) order
        first = first[:limit]
        return lo[keep][first], hi[keep][first], d[keep][first]

    # --- internals -----------------------------------------------------------------------------------

    def _rerank(self, q: np.ndarray, pq: np.ndarray, k: int, exclude: np.ndarray, prefer: np.ndarray,
                refine: bool, count: int | None = None, allowed: np.ndarray | None = None,
                n_probe: int | None = None) -> Neighbors:
        m = len(q)
        passing = self.n if allowed is None else int(np.count_nonzero(allowed))
        k = max(0, min(int(k), passing - (1 if (exclude >= 0).any() else 0)))
        indices = np.zeros((m, k), dtype=np.int64)
        distances = np.zeros((m, k), dtype=np.float64)
        if k == 0 or m == 0:
            return Neighbors(indices, distances)
        count = min(self.n, max(int(count or self.candidates), k + 1))
        if allowed is not None and passing <= max(count, FILTERED_EXACT_ROWS):
            # Few rows pass: all of them are re-ranked, exactly (cheaper than finding them in the cells).
            cand = np.tile(np.flatnonzero(np.asarray(allowed, dtype=bool)), (m, 1))
        else:
            cand = self.candidates_of(pq, count, allowed, n_probe)
        # The query row itself (an indexed image) always competes, so it comes first at distance 0.
        cand = np.concatenate([cand, np.where(prefer >= 0, prefer, -1)[:, None]], axis=1)
        cand = np.where(cand == exclude[:, None], -1, cand)
        # Faiss returns each row once per query; the appended query row may repeat one: keep one copy.
        cand = np.sort(cand, axis=1)
        cand[:, 1:][cand[:, 1:] == cand[:, :-1]] = -1
        cols = np.unique(cand[cand >= 0])
        valid = cand >= 0
        d2 = np.full(cand.shape, np.inf, dtype=np.float64)
        for i in np.flatnonzero(valid.any(axis=1)):
            # One query's candidates gathered straight from the (memory-mapped) vectors and differenced in place:
            # no shared gather of a batch's rows copied again per query (the graph's re-rank 2.6x faster,
            # bench/ann_graph.py), and differences keep near-duplicates precise.
            x = np.asarray(self.vectors_[cand[i][valid[i]]], dtype=np.float32)
            x -= q[i]
            d2[i, valid[i]] = np.einsum("ij,ij->i", x, x)
        order = np.lexsort((cand, cand != prefer[:, None], d2), axis=1)[:, :k]
        indices = np.take_along_axis(cand, order, axis=1)
        top_d2 = np.take_along_axis(d2, order, axis=1)
        if refine:
            for i in range(m):
                top = indices[i][np.isfinite(top_d2[i])]
                exact = np.asarray(self.vectors_[np.sort(top)], dtype=np.float64)[np.argsort(np.argsort(top))]
                diff = exact - q[i].astype(np.float64)
                e2 = np.einsum("ij,ij->i", diff, diff)
                final = np.lexsort((top, top != prefer[i], e2))
                indices[i, :len(top)], top_d2[i, :len(top)] = top[final], e2[final]
        distances = np.sqrt(top_d2)
        self.last_exact_fraction_ = len(cols) / max(1, self.n)
        return Neighbors(indices, distances)


def stored_coords(projected: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """What the IVF index stores for a row: PCA coordinates, then the residual norm."""
    return np.ascontiguousarray(np.hstack([np.asarray(projected, dtype=np.float32),
                                           np.asarray(residual, dtype=np.float32).reshape(-1, 1)]))


def query_coords(projected: np.ndarray) -> np.ndarray:
    """What the IVF index is asked with: PCA coordinates, then 0."""
    p = np.asarray(projected, dtype=np.float32)
    return np.ascontiguousarray(np.hstack([p, np.zeros((len(p), 1), dtype=np.float32)]))


def exact_kneighbors(vectors: np.ndarray, queries: np.ndarray, k: int, chunk_rows: int = 16384) -> Neighbors:
    """Brute-force k-NN (ground truth for recall): one pass over the (memory-mapped) vectors in chunks."""
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    n = len(vectors)
    k = min(k, n)
    best_d = np.full((len(q), 0), np.inf)
    best_i = np.zeros((len(q), 0), dtype=np.int64)
    qsq = np.einsum("ij,ij->i", q, q)[:, None]
    for start in range(0, n, chunk_rows):
        x = np.asarray(vectors[start:start + chunk_rows], dtype=np.float32)
        d2 = qsq + np.einsum("ij,ij->i", x, x)[None, :] - 2.0 * (q @ x.T)
        d = np.concatenate([best_d, d2], axis=1)
        i = np.concatenate([best_i, np.broadcast_to(np.arange(start, start + len(x)), d2.shape)], axis=1)
        top = np.argpartition(d, min(k, d.shape[1] - 1), axis=1)[:, :k] if d.shape[1] > k else np.argsort(d, axis=1)
        best_d = np.take_along_axis(d, top, axis=1)
        best_i = np.take_along_axis(i, top, axis=1)
    order = np.lexsort((best_i, best_d), axis=1) if best_d.size else np.zeros_like(best_i)
    best_i = np.take_along_axis(best_i, order, axis=1)
    # Final distances from differences (the expanded form above loses precision near 0).
    flat = best_i.ravel()
    rows = np.asarray(vectors[np.sort(np.unique(flat))], dtype=np.float32)
    diff = rows[np.searchsorted(np.unique(flat), best_i)] - q[:, None, :]
    return Neighbors(best_i, np.sqrt(np.einsum("mkd,mkd->mk", diff, diff).astype(np.float64)))


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of the exact k nearest rows that the approximate search also returned."""
    exact = np.asarray(exact)
    if exact.size == 0:
        return 1.0
    hits = [len(set(a.tolist()) & set(e.tolist())) / len(e) for a, e in zip(np.asarray(approx), exact)]
    return float(np.mean(hits))

