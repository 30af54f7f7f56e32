"""The ``ann`` search method (:class:`AnnMethod`): derived data of an approximate-search generation, in time
linear in the collection (or in the change).

A fresh build fits the PCA basis on a sample, builds the IVF index (:mod:`imgsim.search.ann`), tunes its
operating point for the recall target on held-out rows and the neighbour graph's candidates at that point
(:mod:`imgsim.search.tuning`), takes the graph from the index with exact re-ranking, lays out the map on a
sample (:class:`SampledMap`) and records recall@10 against brute force, of indexed rows and of rows left out.
An incremental build reuses the previous generation's basis, IVF index, operating point and map: it removes
and adds keys, re-measures recall on a sample and re-tunes only when it drifted below the target, recomputes
only the graph rows that changed and places new points among the old ones, which stay where they were.
"""

from __future__ import annotations

import math
import time

import numpy as np

from imgsim.store import generations as store
from imgsim.search import ANN_THRESHOLD, GRAPH_K, RECALL_TARGET, recorded_method, tuning
from imgsim.search.ann import ANN_DIMS, ANN_FILE, AnnSearch, default_lists, query_coords
from imgsim.search.exact import ExactMethod
from imgsim.search.tuning import LATENCY_BUDGET_MS, GraphPoint, HeldOut, OperatingPoint
from imgsim.analysis.map2d import MapBuilder, SampledMap, place_by_neighbors
from imgsim.progress import ProgressFn, no_progress
from imgsim.search.projection import PCAProjection

#: Rows the PCA basis is fitted on (then reused by every incremental run).
PCA_SAMPLE = 10_000
#: Rows t-SNE lays out in a large collection; the others are placed among them.
MAP_SAMPLE = 10_000
#: IVF candidates re-ranked exactly per row of the neighbour graph of indexes built before it was tuned.
GRAPH_CANDIDATES = 16
#: A new row's candidates offered to old rows' neighbour lists, in multiples of the graph's candidates.
REVERSE_CANDIDATES = 4
#: New rows whose wider offers are searched and inserted at a time.
OFFER_BLOCK = 4096
#: Rows left out to re-measure recall after an incremental update (the drift check).
DRIFT_QUERIES = 200


class AnnMethod:
    """Approximate search as a method of the index: an IVF index, its graph, map and measured recall.

    ``latency_budget_ms``: the p50 of one query the operating point may cost.
    """

    name = "ann"
    files = (ANN_FILE,)

    def __init__(self, latency_budget_ms: float = LATENCY_BUDGET_MS):
        self.latency_budget_ms = latency_budget_ms

    def derive(self, writer: store.GenerationWriter, progress: ProgressFn, chosen: str,
               target: float | None = None) -> dict:
        """Every derived array of a new ANN generation (:func:`derive_ann`)."""
        if writer.count == 0:
            # faiss cannot train cells on no vectors: an empty collection keeps the exact arrays and remembers the ask.
            meta = ExactMethod().derive(writer, progress, chosen)
            meta["search"]["asked"] = "ann"
            return meta
        return derive_ann(writer, progress, chosen, GRAPH_K, target or RECALL_TARGET, self.latency_budget_ms)

    def update(self, writer: store.GenerationWriter, progress: ProgressFn, chosen: str, old: store.Index,
               sources: list, target: float | None = None) -> dict:
        """The previous generation's ANN index updated in place (:func:`update_ann`) when it has one; ``target``
        defaults to the one it was tuned for, and another one asked for is tuned from scratch."""
        recorded = (old.meta.get("search") or {}).get("target")
        retune = target is not None and target != recorded
        target = target or recorded or RECALL_TARGET
        if writer.count == 0 or not can_update(old, writer.dims):
            return self.derive(writer, progress, chosen, target)
        return update_ann(writer, progress, old, sources, chosen, GRAPH_K, target, self.latency_budget_ms, retune)

    def open(self, index: store.Index) -> AnnSearch:
        """The IVF index read into memory at its recorded operating point, the stored graph attached for
        duplicates."""
        projection = PCAProjection.from_arrays(index.array("pca_components"), index.array("pca_mean"))
        info = index.meta["search"]
        search = AnnSearch(n_probe=info.get("n_probe", 24), candidates=info.get("candidates", 100))
        search.attach(index.vectors, projection, AnnSearch.read(index.directory / index.generation / ANN_FILE),
                      index.array("ann_keys"))
        search.graph_ = (index.array("nn_indices"), index.array("nn_distances"))
        return search

    def describe(self, info: dict, *, short: bool = False) -> str:
        """The IVF settings and the recall measured at build time, of queries and of the neighbour graph, and
        whether the tuning kept its recall target (indexes built before tuning record no target)."""
        graph, out = info.get("graph_recall_at_10"), info.get("recall_at_10_out_of_sample")
        per_image = info.get("graph_candidates")
        if per_image and info.get("graph_n_probe") not in (None, info.get("n_probe")):
            per_image = f"{per_image} candidates from {info['graph_n_probe']} cells"
        elif per_image:
            per_image = f"{per_image} candidates"
        if short:
            return (f"approximate ({info.get('engine')}, {info.get('n_lists')} lists, {info.get('n_probe')} probed, "
                    f"{info.get('candidates')} re-ranked exactly); recall@10 vs exact {info.get('recall_at_10')}"
                    + (f" (indexed images), {out} (images not in the index)" if out is not None else "")
                    + f" on {info.get('queries')} queries measured at build time"
                    + (f"; neighbour graph recall@10 {graph}" if graph is not None else "")
                    + (f" ({per_image} per image{_graph_shortfall(info)})" if per_image else "")
                    + (f"; {_verdict(info)}" if "target" in info else ""))
        return (f"Search: approximate for this large collection ({info.get('engine')}, {info.get('n_lists'):,} lists, "
                f"{info.get('n_probe')} probed, {info.get('candidates')} candidates re-ranked with exact distances). "
                f"recall@10 against exact search, measured at build time on {info.get('queries')} sample queries: "
                + (f"{info.get('recall_at_10')} for images in the collection, {out} for images not in it (each "
                   f"sample image left out of its own search). " if out is not None else
                   f"{info.get('recall_at_10')}. ")
                + (f"The operating point was {_verdict(info)}. " if "target" in info else "")
                + "Distances shown are always exact."
                + (f" The neighbour graph behind Duplicates and Odd ones out "
                   f"({per_image or 'fewer candidates'} per image): recall@10 "
                   f"{graph} on the same queries{_graph_shortfall(info)}." if graph is not None else ""))


def _verdict(info: dict) -> str:
    """Whether the recorded operating point keeps its recall target within the latency budget, as measured."""
    p50 = info.get("query_ms_p50")
    at = f" at p50 {p50:.2f} ms" if p50 is not None else " (every image re-ranked exactly)"
    head = (f"tuned for recall@10 >= {info['target']} on images not in the index within "
            f"{info.get('latency_budget_ms'):g} ms")
    if info.get("met"):
        return f"{head}: met (recall@10 {info.get('recall_at_10_out_of_sample')}{at})"
    return f"{head}: NOT met, the best reached was recall@10 {info.get('recall_at_10_out_of_sample')}{at}"


def _graph_shortfall(info: dict) -> str:
    """How far the neighbour graph's measured recall falls short of the target, when it does."""
    graph, target = info.get("graph_recall_at_10"), info.get("target")
    if graph is None or target is None or graph >= target:
        return ""
    return f", below the target {target} by {target - graph:.3f}"


def graph_order(search: AnnSearch, projected: np.ndarray, chunk_rows: int = 65536) -> np.ndarray:
    """Rows in the order of the IVF cell nearest to each (stable): consecutive graph queries then probe mostly
    the same cells, which stay in cache (the IVF part of a graph row about 1.3x faster, bench/ann_graph.py)."""
    cells = np.concatenate([search.index_.quantizer.assign(query_coords(projected[a:a + chunk_rows]), 1).ravel()
                            for a in range(0, len(projected), chunk_rows)] or [np.zeros(0, dtype=np.int64)])
    return np.argsort(cells, kind="stable")


def _graph(search: AnnSearch, rows: np.ndarray, k: int, candidates: int, progress: ProgressFn,
           projected: np.ndarray | None = None, block: int = 4096, n_probe: int | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest other rows, from ``candidates`` IVF candidates in ``n_probe`` cells (default:
    the queries') re-ranked exactly; with ``projected`` (the rows' PCA coordinates), searched in
    :func:`graph_order`."""
    k = max(0, min(int(k), search.n - 1))
    idx = np.zeros((len(rows), k), dtype=np.int32)
    dist = np.zeros((len(rows), k), dtype=np.float32)
    order = np.arange(len(rows)) if projected is None else graph_order(search, projected)
    progress("neighbors", 0, len(rows))
    for start in range(0, len(rows), block):
        sel = order[start:start + block]
        found = search.kneighbors_rows(rows[sel], k, candidates=candidates, n_probe=n_probe,
                                       projected=None if projected is None else projected[sel])
        idx[sel] = found.indices
        dist[sel] = found.distances
        progress("neighbors", start + len(sel), len(rows))
    return idx, dist


def _tune(search: AnnSearch, vectors: np.ndarray, target: float, latency_budget_ms: float
          ) -> tuple[OperatingPoint, GraphPoint, HeldOut]:
    """The operating point for ``target`` within the budget, then the graph's candidates at it, from one
    brute-force pass; and the rows both were verified on (every row of a collection too small to sample)."""
    if tuning.too_few_to_tune(search):
        point = tuning.tune_operating_point(search, vectors, target, latency_budget_ms)
        return point, tuning.tune_graph_candidates(search, vectors, target), \
            tuning.random_held_out(search, vectors, search.n)
    samples = tuning.held_out_samples(search, vectors)
    point = tuning.tune_operating_point(search, vectors, target, latency_budget_ms, samples=samples)
    return point, tuning.tune_graph_candidates(search, vectors, target, samples=samples), samples[1]


def _tuned_meta(point: OperatingPoint, graph: GraphPoint, measured: dict) -> dict:
    """The tuning a generation records: target and budget, whether the measured recall of queries not in the
    index keeps them and why, the graph's candidates and how they were chosen."""
    p50, p99 = point.query_ms_p50, point.query_ms_p99
    met = measured["recall_at_10_out_of_sample"] >= point.target and (p50 is None or p50 <= point.latency_budget_ms)
    graph_recall = measured.get("graph_recall_at_10")
    return {"target": point.target, "latency_budget_ms": point.latency_budget_ms, "met": bool(met),
            "reason": point.reason, "query_ms_p50": p50, "query_ms_p99": p99,
            "graph_candidates": graph.candidates, "graph_n_probe": graph.n_probe,
            "graph_met": bool(graph_recall is None or graph_recall >= point.target),
            "tuning": {"recall_aim": point.recall_aim, "tuning_queries": point.tuning_queries,
                       "verify_queries": point.verify_queries, "explored": point.explored,
                       "graph_reason": graph.reason, "graph_explored": graph.explored}}


def _search_meta(search: AnnSearch, measured: dict, tuned: dict, chosen: str, seconds: dict) -> dict:
    return {"method": "ann", "chosen": chosen, "engine": search.engine, "dims": int(search.index_.d) - 1,
            "n_lists": search.n_lists_, "n_probe": int(search.index_.nprobe), "candidates": search.candidates,
            "threshold": ANN_THRESHOLD, **measured, **tuned, "seconds": seconds}


def derive_ann(writer: store.GenerationWriter, progress: ProgressFn, chosen: str, graph_k: int,
               target: float = RECALL_TARGET, latency_budget_ms: float = LATENCY_BUDGET_MS) -> dict:
    """Every derived array of a new ANN generation, from scratch, tuned for recall@10 ``target`` on queries not
    in the index within ``latency_budget_ms``; returns the metadata to record."""
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
    point, graph_point, sample = _tune(search, vectors, target, latency_budget_ms)
    seconds["tune"] = time.perf_counter() - t

    t = time.perf_counter()
    nn_i, nn_d = _graph(search, np.arange(n), graph_k, graph_point.candidates, progress, projected,
                        n_probe=graph_point.n_probe)
    writer.save_array("nn_indices", nn_i)
    writer.save_array("nn_distances", nn_d)
    seconds["graph"] = time.perf_counter() - t

    t = time.perf_counter()
    if n <= MAP_SAMPLE:
        mapper = MapBuilder().fit(projected, progress)
        map_meta = {"method": "pca+tsne", "pca_components": mapper.n_components_, "perplexity": mapper.perplexity_}
    else:
        mapper = SampledMap(sample_size=MAP_SAMPLE).fit(projected, progress)
        map_meta = {"method": "pca+tsne on a sample, others placed among their nearest sampled points",
                    "pca_components": mapper.n_components_, "perplexity": mapper.perplexity_,
                    "sample": int(len(mapper.sample_rows_))}
    writer.save_array("map_xy", mapper.embedding_)
    seconds["map"] = time.perf_counter() - t
    del projected

    t = time.perf_counter()
    measured = tuning.measure_recall(search, vectors, sample, graph=nn_i)
    seconds["recall"] = time.perf_counter() - t
    return {
        "projection": {"n_components": projection.n_components_, "sample": min(n, PCA_SAMPLE),
                       "explained_variance": float(np.sum(projection.explained_variance_ratio_))},
        "map": map_meta,
        "graph_k": int(nn_i.shape[1]) if n else 0,
        "search": _search_meta(search, measured, _tuned_meta(point, graph_point, measured), chosen,
                               {k: round(v, 3) for k, v in seconds.items()}),
    }


def can_update(old: store.Index | None, dims: int) -> bool:
    """Whether the previous generation holds an ANN index this run can update instead of rebuilding."""
    return (old is not None and recorded_method(old.meta) == AnnMethod.name and old.dims == dims
            and old.has_array("ann_keys") and (old.directory / old.generation / ANN_FILE).is_file() and old.count > 0)


def update_ann(writer: store.GenerationWriter, progress: ProgressFn, old: store.Index, sources: list,
               chosen: str, graph_k: int, target: float = RECALL_TARGET,
               latency_budget_ms: float = LATENCY_BUDGET_MS, retune: bool = False) -> dict:
    """Derived data of a new generation from the previous one: only new, changed and removed rows cost work.

    ``sources[i]`` is the old row that new row ``i`` keeps, or something else for a new vector. The recorded
    operating point is kept while recall@10 on rows left out stays at ``target``, re-tuned when it drifted
    below; new cells (a collection grown past them) and ``retune`` (a new target asked for) are tuned from
    scratch, with the whole graph.
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
    recorded = old.meta["search"]
    old_keys = np.asarray(old.array("ann_keys"))
    keys = np.empty(n, dtype=np.int64)
    keys[kept] = old_keys[src[kept]]
    keys[new_rows] = old_keys.max(initial=-1) + 1 + np.arange(len(new_rows))
    search = AnnSearch(n_probe=recorded.get("n_probe", 24), candidates=recorded.get("candidates", 100))
    # Cells trained for a quarter of today's rows hold four times the rows each: queries slow down and
    # recall drifts. Such a collection gets new cells (and so a whole new graph); its map still stays.
    retrain = default_lists(n) > 2 * int(recorded.get("n_lists") or 1)
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
    retune = retune or retrain
    if retune:
        point, graph_point, sample = _tune(search, vectors, target, latency_budget_ms)
        drift = None
    else:
        sample = tuning.random_held_out(search, vectors, DRIFT_QUERIES, min(10, n - 1))
        drift = tuning.retune_if_drifted(search, vectors, target, check=sample, latency_budget_ms=latency_budget_ms)
    graph_candidates = graph_point.candidates if retune else recorded.get("graph_candidates", GRAPH_CANDIDATES)
    # Indexes built before the graph had its own cells probed it at the queries' point.
    graph_n_probe = graph_point.n_probe if retune else recorded.get("graph_n_probe") or int(search.index_.nprobe)
    if drift is not None and drift.retuned:
        # New cells probed: the graph's candidates are chosen again at them (for the rows recomputed below), on
        # the rows the point was re-tuned on, none of which is among the rows its recall is measured on.
        graph_point = tuning.tune_graph_candidates(search, vectors, target, samples=drift.samples)
        graph_candidates, graph_n_probe = graph_point.candidates, graph_point.n_probe
    seconds["tune"] = time.perf_counter() - t

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
    redo = np.arange(n) if retune else np.union1d(new_rows, stale)
    if len(redo):
        ri, rd = _graph(search, redo, k, graph_candidates, progress, all_projected, n_probe=graph_n_probe)
        nn_i[redo], nn_d[redo] = ri, rd
        # A new row is offered to the old rows it is closer to than their k-th, from REVERSE_CANDIDATES times
        # the graph's candidates: an old row's new neighbour is often not among that new row's own k (6,000 +
        # 1,000 rows, graph recall@10 after the update: hard 0.958 -> 0.875 offering the k, 0.926 offering 4x
        # the candidates; tight clusters 0.958 -> 0.899, 0.950).
        wide = min(max(k, REVERSE_CANDIDATES * int(graph_candidates)), max(n - 1, 0))
        if len(new_rows) and wide > k and not retune:
            # In cells that hold the wider offer twice over: a row whose cells hold fewer is sent to every cell.
            nlist = int(search.index_.nlist)
            cells = min(nlist, max(int(graph_n_probe), math.ceil(2 * wide * nlist / n)))
            for start in range(0, len(new_rows), OFFER_BLOCK):  # (new rows x wide offers would fill the memory)
                block = new_rows[start:start + OFFER_BLOCK]
                offer_i, offer_d = _graph(search, block, wide, wide, no_progress, n_probe=cells)
                _insert_reverse(nn_i, nn_d, block, offer_i, offer_d)
        else:
            at = np.searchsorted(redo, new_rows)
            _insert_reverse(nn_i, nn_d, new_rows, ri[at], rd[at])
    writer.save_array("nn_indices", nn_i)
    writer.save_array("nn_distances", nn_d)
    seconds["graph"] = time.perf_counter() - t

    t = time.perf_counter()
    progress("place", 0, len(new_rows))
    xy = np.zeros((n, 2), dtype=np.float32)
    old_xy = np.asarray(old.array("map_xy"))
    xy[kept] = old_xy[src[kept]]
    if len(new_rows):
        xy[new_rows] = place_by_neighbors(nn_i[new_rows], nn_d[new_rows], xy, kept)
    writer.save_array("map_xy", xy)
    progress("place", len(new_rows), len(new_rows))
    seconds["map"] = time.perf_counter() - t

    t = time.perf_counter()
    measured = tuning.measure_recall(search, vectors, sample, graph=nn_i)
    if drift is None or drift.retuned:
        tuned = _tuned_meta(drift.point if drift else point, graph_point, measured)
        if drift is not None and drift.queries:  # (a collection too small to sample re-ranks every row)
            tuned["reason"] = (f"recall@10 had drifted to {drift.recall_out_of_sample:.3f} < {target} on "
                               f"{drift.queries} rows left out after the update: re-tuned; {tuned['reason']}")
    else:
        tuned = _kept_meta(search, vectors, sample, recorded, measured, target, latency_budget_ms,
                           graph_candidates, graph_n_probe)
    seconds["recall"] = time.perf_counter() - t
    search_meta = _search_meta(search, measured, tuned, chosen, {k_: round(v, 3) for k_, v in seconds.items()})
    search_meta["incremental"] = {"added": int(len(new_rows)), "removed": int(len(removed_old)),
                                  "graph_rows_recomputed": int(len(redo)), "cells_retrained": bool(retrain)}
    if drift is not None:
        search_meta["drift"] = {"recall_at_10_out_of_sample": drift.recall_out_of_sample, "queries": drift.queries,
                                "n_probe": drift.n_probe, "candidates": drift.candidates, "retuned": drift.retuned}
    return {"projection": old.meta.get("projection"), "map": dict(old.meta.get("map") or {}, incremental=True),
            "graph_k": int(k), "search": search_meta}


def _kept_meta(search: AnnSearch, vectors: np.ndarray, sample: HeldOut, recorded: dict, measured: dict,
               target: float, latency_budget_ms: float, graph_candidates: int, graph_n_probe: int) -> dict:
    """The tuning record of an update that kept the operating point: the latency measured again (cheap), how
    the point was chosen as the previous generation recorded it."""
    p50, p99 = tuning.query_latency_ms(search, np.asarray(vectors[sample.rows[:tuning.LATENCY_QUERIES]]))
    oos = measured["recall_at_10_out_of_sample"]
    met = oos >= target and p50 <= latency_budget_ms
    graph_recall = measured.get("graph_recall_at_10")
    return {"target": target, "latency_budget_ms": latency_budget_ms, "met": bool(met),
            "reason": (f"recall@10 {oos:.3f} >= {target} on {measured['queries']} rows left out after the update, "
                       f"at the recorded point (n_probe {search.index_.nprobe}, {search.candidates} candidates), "
                       f"p50 {p50:.2f} ms" + ("" if p50 <= latency_budget_ms else
                                              f", over the {latency_budget_ms:g} ms budget")),
            "query_ms_p50": round(p50, 3), "query_ms_p99": round(p99, 3), "graph_candidates": int(graph_candidates),
            "graph_n_probe": int(graph_n_probe), "graph_met": bool(graph_recall is None or graph_recall >= target),
            "tuning": recorded.get("tuning")}


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
