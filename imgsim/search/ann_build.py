"""The ``ann`` search method (:class:`AnnMethod`): derived data of an approximate-search generation, in time
linear in the collection (or in the change).

A fresh build fits the PCA basis on a sample, builds the IVF index (:mod:`imgsim.search.ann`), takes the
neighbour graph from it with exact re-ranking, lays out the map on a sample (:class:`SampledMap`) and
measures recall@10 against brute force. An incremental build reuses the previous generation's basis,
IVF index and map: it removes and adds keys, recomputes only the graph rows that changed and places new
points among the old ones, which stay where they were.
"""

from __future__ import annotations

import time

import numpy as np

from imgsim.store import generations as store
from imgsim.search import ANN_THRESHOLD, GRAPH_K, recorded_method
from imgsim.search.ann import ANN_DIMS, ANN_FILE, AnnSearch, default_lists, measure_recall
from imgsim.search.exact import ExactMethod
from imgsim.analysis.map2d import MapBuilder, SampledMap, place_by_neighbors
from imgsim.progress import ProgressFn
from imgsim.search.projection import PCAProjection

#: Rows the PCA basis is fitted on (then reused by every incremental run).
PCA_SAMPLE = 10_000
#: Rows t-SNE lays out in a large collection; the others are placed among them.
MAP_SAMPLE = 10_000
#: IVF candidates re-ranked exactly per row of the stored neighbour graph.
GRAPH_CANDIDATES = 16
RECALL_QUERIES = 100


class AnnMethod:
    """Approximate search as a method of the index: an IVF index, its graph, map and measured recall."""

    name = "ann"
    files = (ANN_FILE,)

    def derive(self, writer: store.GenerationWriter, progress: ProgressFn, chosen: str) -> dict:
        """Every derived array of a new ANN generation (:func:`derive_ann`)."""
        if writer.count == 0:
            # faiss cannot train cells on no vectors: an empty collection keeps the exact arrays and remembers the ask.
            meta = ExactMethod().derive(writer, progress, chosen)
            meta["search"]["asked"] = "ann"
            return meta
        return derive_ann(writer, progress, chosen, GRAPH_K)

    def update(self, writer: store.GenerationWriter, progress: ProgressFn, chosen: str, old: store.Index,
               sources: list) -> dict:
        """The previous generation's ANN index updated in place (:func:`update_ann`) when it has one."""
        if writer.count == 0 or not can_update(old, writer.dims):
            return self.derive(writer, progress, chosen)
        return update_ann(writer, progress, old, sources, chosen, GRAPH_K)

    def open(self, index: store.Index) -> AnnSearch:
        """The IVF index read into memory, the stored graph attached for duplicates."""
        projection = PCAProjection.from_arrays(index.array("pca_components"), index.array("pca_mean"))
        info = index.meta["search"]
        search = AnnSearch(n_probe=info.get("n_probe", 24), candidates=info.get("candidates", 100))
        search.attach(index.vectors, projection, AnnSearch.read(index.directory / index.generation / ANN_FILE),
                      index.array("ann_keys"))
        search.graph_ = (index.array("nn_indices"), index.array("nn_distances"))
        return search

    def describe(self, info: dict, *, short: bool = False) -> str:
        """The IVF settings and the recall measured at build time, of queries and of the neighbour graph."""
        graph = info.get("graph_recall_at_10")
        if short:
            return (f"approximate ({info.get('engine')}, {info.get('n_lists')} lists, {info.get('n_probe')} probed, "
                    f"{info.get('candidates')} re-ranked exactly); recall@10 vs exact {info.get('recall_at_10')} "
                    f"on {info.get('queries')} queries measured at build time"
                    + (f"; neighbour graph recall@10 {graph}" if graph is not None else ""))
        return (f"Search: approximate for this large collection ({info.get('engine')}, {info.get('n_lists'):,} lists, "
                f"{info.get('n_probe')} probed, {info.get('candidates')} candidates re-ranked with exact distances). "
                f"recall@10 against exact search, measured at build time on {info.get('queries')} sample queries: "
                f"{info.get('recall_at_10')}. Distances shown are always exact."
                + (f" The neighbour graph behind Duplicates and Odd ones out (fewer candidates per image): recall@10 "
                   f"{graph} on the same queries." if graph is not None else ""))


def _graph(search: AnnSearch, rows: np.ndarray, k: int, progress: ProgressFn,
           projected: np.ndarray | None = None, block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    idx = np.zeros((len(rows), 0), dtype=np.int32)
    out_i, out_d = [], []
    progress("neighbors", 0, len(rows))
    for start in range(0, len(rows), block):
        r = rows[start:start + block]
        found = search.kneighbors_rows(r, k, candidates=GRAPH_CANDIDATES,
                                       projected=None if projected is None else projected[start:start + block])
        out_i.append(found.indices.astype(np.int32))
        out_d.append(found.distances.astype(np.float32))
        progress("neighbors", start + len(r), len(rows))
    if not out_i:
        return idx, np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out_i), np.concatenate(out_d)


def _search_meta(search: AnnSearch, recall: dict, chosen: str, seconds: dict) -> dict:
    return {"method": "ann", "chosen": chosen, "engine": search.engine, "dims": int(search.index_.d) - 1,
            "n_lists": search.n_lists_, "n_probe": int(search.index_.nprobe), "candidates": search.candidates,
            "threshold": ANN_THRESHOLD, **recall, "seconds": seconds}


def derive_ann(writer: store.GenerationWriter, progress: ProgressFn, chosen: str, graph_k: int) -> dict:
    """Every derived array of a new ANN generation, from scratch; returns the metadata to record."""
    vectors = writer.vectors
    n = len(vectors)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    progress("compress", 0, None)
    projection = PCAProjection(n_components=ANN_DIMS, sample_size=PCA_SAMPLE).fit(vectors)
    projected, residual = projection.transform(vectors, chunk_rows=4096, precise=False)
    writer.save_array("pca_components", projection.components_)
    writer.save_array("pca_mean", projection.mean_)
    seconds["pca"] = time.perf_counter() - t

    t = time.perf_counter()
    progress("ann", 0, None)
    search = AnnSearch().fit(vectors, projection, projected, residual)
    del residual
    writer.save_file(ANN_FILE, search.save)
    writer.save_array("ann_keys", search.keys_)
    seconds["ann_build"] = time.perf_counter() - t

    t = time.perf_counter()
    nn_i, nn_d = _graph(search, np.arange(n), graph_k, progress, projected)
    writer.save_array("nn_indices", nn_i)
    writer.save_array("nn_distances", nn_d)
    seconds["graph"] = time.perf_counter() - t

    t = time.perf_counter()
    progress("map", 0, None)
    if n <= MAP_SAMPLE:
        mapper = MapBuilder().fit(projected)
        map_meta = {"method": "pca+tsne", "pca_components": mapper.n_components_, "perplexity": mapper.perplexity_}
    else:
        mapper = SampledMap(sample_size=MAP_SAMPLE).fit(projected)
        map_meta = {"method": "pca+tsne on a sample, others placed among their nearest sampled points",
                    "pca_components": mapper.n_components_, "perplexity": mapper.perplexity_,
                    "sample": int(len(mapper.sample_rows_))}
    writer.save_array("map_xy", mapper.embedding_)
    progress("map", 1, 1)
    seconds["map"] = time.perf_counter() - t
    del projected

    t = time.perf_counter()
    recall = measure_recall(search, vectors, 10, RECALL_QUERIES, graph=nn_i)
    seconds["recall"] = time.perf_counter() - t
    return {
        "projection": {"n_components": projection.n_components_, "sample": min(n, PCA_SAMPLE),
                       "explained_variance": float(np.sum(projection.explained_variance_ratio_))},
        "map": map_meta,
        "graph_k": int(nn_i.shape[1]) if n else 0,
        "search": _search_meta(search, recall, chosen, {k: round(v, 3) for k, v in seconds.items()}),
    }


def can_update(old: store.Index | None, dims: int) -> bool:
    """Whether the previous generation holds an ANN index this run can update instead of rebuilding."""
    return (old is not None and recorded_method(old.meta) == AnnMethod.name and old.dims == dims
            and old.has_array("ann_keys") and (old.directory / old.generation / ANN_FILE).is_file() and old.count > 0)


def update_ann(writer: store.GenerationWriter, progress: ProgressFn, old: store.Index, sources: list,
               chosen: str, graph_k: int) -> dict:
    """Derived data of a new generation from the previous one: only new, changed and removed rows cost work.

    ``sources[i]`` is the old row that new row ``i`` keeps, or something else for a new vector.
    """
    vectors = writer.vectors
    n = len(vectors)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    src = np.array([s if isinstance(s, (int, np.integer)) else -1 for s in sources], dtype=np.int64)
    kept = src >= 0
    new_rows = np.flatnonzero(~kept)
    old_to_new = np.full(old.count, -1, dtype=np.int64)
    old_to_new[src[kept]] = np.flatnonzero(kept)
    removed_old = np.flatnonzero(old_to_new < 0)

    progress("compress", 0, None)
    components, mean = old.array("pca_components"), old.array("pca_mean")
    projection = PCAProjection.from_arrays(components, mean)
    writer.save_array("pca_components", components)
    writer.save_array("pca_mean", mean)
    new_projected, new_residual = projection.transform(np.asarray(vectors[new_rows]), precise=False)
    seconds["pca"] = time.perf_counter() - t

    t = time.perf_counter()
    progress("ann", 0, None)
    old_keys = np.asarray(old.array("ann_keys"))
    keys = np.empty(n, dtype=np.int64)
    keys[kept] = old_keys[src[kept]]
    keys[new_rows] = old_keys.max(initial=-1) + 1 + np.arange(len(new_rows))
    search = AnnSearch(n_probe=old.meta["search"].get("n_probe", 24),
                       candidates=old.meta["search"].get("candidates", 100))
    # Cells trained for a quarter of today's rows hold four times the rows each: queries slow down and
    # recall drifts. Such a collection gets new cells (and so a whole new graph); its map still stays.
    retrain = default_lists(n) > 2 * int(old.meta["search"].get("n_lists") or 1)
    all_projected = None
    if retrain:
        all_projected, all_residual = projection.transform(vectors, chunk_rows=4096, precise=False)
        search.fit(vectors, projection, all_projected, all_residual, keys=keys)
        del all_residual
    else:
        search.index_ = AnnSearch.read(old.directory / old.generation / ANN_FILE)
        search.update(old_keys[removed_old], keys[new_rows], new_projected, new_residual)
        search.attach(vectors, projection, search.index_, keys)
    writer.save_file(ANN_FILE, search.save)
    writer.save_array("ann_keys", keys)
    seconds["ann_update"] = time.perf_counter() - t

    t = time.perf_counter()
    old_i, old_d = np.asarray(old.array("nn_indices")), np.asarray(old.array("nn_distances"))
    k = min(graph_k, max(n - 1, 0))
    nn_i = np.zeros((n, k), dtype=np.int32)
    nn_d = np.zeros((n, k), dtype=np.float32)
    if old_i.shape[1] >= k:
        remapped = old_to_new[old_i[src[kept], :k]]
        nn_i[kept] = remapped
        nn_d[kept] = old_d[src[kept], :k]
        stale = np.flatnonzero(kept)[(remapped < 0).any(axis=1)]
    else:
        stale = np.flatnonzero(kept)
    redo = np.arange(n) if retrain else np.union1d(new_rows, stale)
    if len(redo):
        ri, rd = _graph(search, redo, k, progress, all_projected)
        nn_i[redo], nn_d[redo] = ri, rd
        _insert_reverse(nn_i, nn_d, new_rows, ri[np.searchsorted(redo, new_rows)],
                        rd[np.searchsorted(redo, new_rows)])
    writer.save_array("nn_indices", nn_i)
    writer.save_array("nn_distances", nn_d)
    seconds["graph"] = time.perf_counter() - t

    t = time.perf_counter()
    progress("map", 0, None)
    xy = np.zeros((n, 2), dtype=np.float32)
    old_xy = np.asarray(old.array("map_xy"))
    xy[kept] = old_xy[src[kept]]
    if len(new_rows):
        xy[new_rows] = place_by_neighbors(nn_i[new_rows], nn_d[new_rows], xy, kept)
    writer.save_array("map_xy", xy)
    progress("map", 1, 1)
    seconds["map"] = time.perf_counter() - t

    t = time.perf_counter()
    recall = measure_recall(search, vectors, 10, RECALL_QUERIES, graph=nn_i)
    seconds["recall"] = time.perf_counter() - t
    search_meta = _search_meta(search, recall, chosen, {k_: round(v, 3) for k_, v in seconds.items()})
    search_meta["incremental"] = {"added": int(len(new_rows)), "removed": int(len(removed_old)),
                                  "graph_rows_recomputed": int(len(redo)), "cells_retrained": bool(retrain)}
    return {"projection": old.meta.get("projection"), "map": dict(old.meta.get("map") or {}, incremental=True),
            "graph_k": int(k), "search": search_meta}


def _insert_reverse(nn_i: np.ndarray, nn_d: np.ndarray, new_rows: np.ndarray, their_i: np.ndarray,
                    their_d: np.ndarray) -> None:
    """A new image becomes a neighbour of the old images it is closer to than their current k-th."""
    if nn_i.shape[1] == 0:
        return
    for r, cols, dists in zip(new_rows, their_i, their_d):
        for j, d in zip(cols, dists):
            if j < 0 or d >= nn_d[j, -1] or r in nn_i[j]:
                continue
            pos = int(np.searchsorted(nn_d[j], d, side="right"))
            nn_i[j, pos + 1:] = nn_i[j, pos:-1].copy()
            nn_d[j, pos + 1:] = nn_d[j, pos:-1].copy()
            nn_i[j, pos], nn_d[j, pos] = r, d
