"""Operating points of approximate search, measured: the ``n_probe`` and re-rank ``candidates`` that keep a
recall target at the lowest latency, on queries the index was not tuned on.

Queries are held out by leaving one out: an indexed row searched with itself excluded meets the rest of the
collection as a fresh image from the same distribution would (a self-query finds itself in its own cell at
distance 0 and overstates recall). Ground truth is brute force (:func:`exact_kneighbors`). For each count of
re-ranked candidates on a small grid, faiss explores ``n_probe`` on the IVF index
(``ParameterSpace.explore`` with an ``IntersectionCriterion``), a doubling of cells at a time, until the
recall reaches the target plus a sampling margin or scanning the cells alone takes the latency budget; the
end-to-end p50 of the cheapest ``n_probe`` that reached it, per count, decides. The chosen point is then
measured on other rows than the ones it was tuned on: that is the recall it reports. The stored neighbour
graph gets its own point the same way (:func:`tune_graph_candidates`): cells from the queries' ``n_probe`` up
and the fewest re-ranked candidates at each, chosen by timed graph rows.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import NamedTuple

import numpy as np

from imgsim.search import RECALL_TARGET
from imgsim.search.ann import AnnSearch, exact_kneighbors, query_coords, recall_at_k

#: p50 of one query (projection, IVF scan, exact re-rank) that an operating point may cost.
LATENCY_BUDGET_MS = 5.0
#: Re-ranked candidates tried per query; each gets its own faiss exploration of ``n_probe``.
CANDIDATE_GRID = (50, 100, 150, 200, 300, 400, 600, 800)
#: Candidates tried for the stored neighbour graph (its cost grows with the count, not its latency).
GRAPH_CANDIDATE_GRID = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
#: The graph's ``n_probe`` is explored up to this many times the first that reached its aim.
GRAPH_CELLS_BEYOND = 4
#: Graph rows timed end to end per point that reached the aim (the cheapest is chosen).
GRAPH_TIMING_ROWS = 200
TUNE_QUERIES = 600
VERIFY_QUERIES = 400
LATENCY_QUERIES = 60


def _faiss():
    import faiss  # imported on use, as in imgsim.search.ann

    return faiss


@dataclass
class HeldOut:
    """Indexed rows used as held-out queries, with their brute-force neighbours."""

    rows: np.ndarray  # (m,) sorted
    others: np.ndarray  # (m, k) the k nearest other rows: truth when the row is left out
    nearest: np.ndarray  # (m, k) the k nearest rows, the row itself first: truth of a self-query
    coords: np.ndarray  # (m, d) what the IVF index is asked with

    @property
    def k(self) -> int:
        return int(self.others.shape[1])


@dataclass
class OperatingPoint:
    """What tuning chose and what it measured; ``met`` only when fresh queries reached the target in budget."""

    method: str
    n_probe: int | None
    candidates: int | None
    target: float
    latency_budget_ms: float
    recall_out_of_sample: float
    recall_self_query: float
    query_ms_p50: float | None
    query_ms_p99: float | None
    met: bool
    reason: str
    recall_tuning: float | None = None
    recall_aim: float | None = None  # what tuning asked of the tuning rows: the target plus a sampling margin
    tuning_queries: int = 0
    verify_queries: int = 0
    explored: list[dict] = field(default_factory=list)

    def to_meta(self) -> dict:
        """A JSON-ready dict (index metadata, ``--json`` output)."""
        return asdict(self)


@dataclass
class DriftCheck:
    """Recall at the current operating point on a fresh sample, and the re-tuned point when it fell short."""

    target: float
    n_probe: int | None
    candidates: int | None
    recall_out_of_sample: float
    queries: int
    retuned: bool
    point: OperatingPoint | None = None
    #: (rows re-tuned on, rows checked) when re-tuned: the graph's candidates are chosen again on the same
    #: rows, so the checked ones, where the recorded recall is measured, stay out of sample.
    samples: tuple[HeldOut, HeldOut] | None = field(default=None, repr=False)

    def to_meta(self) -> dict:
        """A JSON-ready dict (without the sampled rows)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("point", "samples")}
        out["point"] = self.point.to_meta() if self.point else None
        return out


@dataclass
class GraphPoint:
    """Re-ranked candidates per row of the stored neighbour graph, with the graph's measured recall@k."""

    candidates: int | None
    n_probe: int | None
    target: float
    recall_out_of_sample: float
    met: bool
    reason: str
    recall_tuning: float | None = None
    explored: list[dict] = field(default_factory=list)

    def to_meta(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


#: Why an exact search (or an approximate one over too few rows to sample) has nothing to tune.
EXACT = "exact search: every query compares all vectors, nothing to tune"


# --- measuring -----------------------------------------------------------------------------------------


def held_out(search: AnnSearch, vectors: np.ndarray, rows: np.ndarray, k: int = 10) -> HeldOut:
    """Rows as held-out queries: their exact neighbours with and without themselves, and their IVF coords
    (``k`` clamped to the other rows there are)."""
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    k = max(0, min(int(k), len(vectors) - 1))
    q = np.asarray(vectors[rows], dtype=np.float32)
    truth = exact_kneighbors(vectors, q, k + 1).indices
    # A row's exact duplicate may tie with it at distance 0: drop the row itself, wherever it sits.
    others = np.array([[j for j in line if j != r][:k] for r, line in zip(rows.tolist(), truth.tolist())],
                      dtype=np.int64).reshape(len(rows), k)
    coords = query_coords(search.projection_.transform(q, precise=False)[0])
    return HeldOut(rows, others, truth[:, :k], coords)


def held_out_recall(search: AnnSearch, vectors: np.ndarray, sample: HeldOut) -> tuple[float, float]:
    """(recall@k with each row left out, recall@k of self-queries) at the search's current operating point."""
    left_out = search.kneighbors_rows(sample.rows, sample.k, exclude_self=True)
    found = search.kneighbors(np.asarray(vectors[sample.rows], dtype=np.float32), sample.k)
    return recall_at_k(left_out.indices, sample.others), recall_at_k(found.indices, sample.nearest)


def measure_recall(search: AnnSearch, vectors: np.ndarray, sample: HeldOut, graph: np.ndarray | None = None
                   ) -> dict:
    """What a generation records of its search, measured on ``sample``'s rows: recall@k of self-queries
    (``recall_at_10``), of the same rows left out (``recall_at_10_out_of_sample``: queries not in the index)
    and of the stored neighbour ``graph`` (rows' k nearest others), against brute force."""
    left_out, self_query = held_out_recall(search, vectors, sample)
    out = {"recall_at_10": round(self_query, 4), "recall_at_10_out_of_sample": round(left_out, 4),
           "queries": len(sample.rows), "k": sample.k}
    if graph is not None and len(sample.rows):
        out["graph_recall_at_10"] = round(recall_at_k(np.asarray(graph)[sample.rows][:, :sample.k], sample.others), 4)
    return out


def query_latency_ms(search: AnnSearch, queries: np.ndarray, k: int = 10) -> tuple[float, float]:
    """(p50, p99) milliseconds of one query at a time through ``kneighbors``, as the dashboard asks."""
    q = np.asarray(queries, dtype=np.float32)
    search.kneighbors(q[:1], k)  # first call builds cached bases; not a query a person waits on twice
    times = []
    for row in q:
        t0 = time.perf_counter()
        search.kneighbors(row[None], k)
        times.append(time.perf_counter() - t0)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


def set_operating_point(search: AnnSearch, n_probe: int, candidates: int) -> None:
    """Make ``search`` answer with ``n_probe`` cells probed and ``candidates`` rows re-ranked."""
    search.n_probe = int(n_probe)
    search.index_.nprobe = int(min(n_probe, search.index_.nlist))
    search.candidates = int(candidates)


def _count(search: AnnSearch, candidates: int, k: int) -> int:
    # What AnnSearch asks the IVF index for: at least k + 1 rows, so a left-out query still has k others.
    return int(min(search.n, max(candidates, k + 1)))


def _criterion(search: AnnSearch, sample: HeldOut, count: int):
    """faiss's intersection criterion over the first ``count`` IVF results, scaled so that perf·count/k is
    recall@k: the ground truth lists the k true neighbours' keys, then placeholders no result can equal."""
    faiss = _faiss()
    gt = np.full((len(sample.rows), count), -2, dtype=np.int64)  # faiss pads missing results with -1
    gt[:, :sample.k] = search.keys_[sample.others]
    crit = faiss.IntersectionCriterion(len(sample.rows), count)
    crit.set_groundtruth(None, gt)
    return crit


def n_probe_ladder(search: AnnSearch) -> list[int]:
    """faiss's default ``n_probe`` values for this index (powers of two below ``nlist``), with quarter steps
    between them and ``nlist`` itself, cheapest first."""
    space = _faiss().ParameterSpace()
    space.initialize(search.index_)
    values = space.add_range("nprobe").values
    base = [int(values.at(i)) for i in range(values.size())]
    nlist = int(search.index_.nlist)
    steps = set(base) | {v + v * q // 4 for v in base for q in (1, 2, 3) if v >= 2} | {nlist}
    return sorted(v for v in steps if 1 <= v <= nlist)


class Rung(NamedTuple):
    """One explored ``n_probe``: recall@k of the whole search and faiss's time to scan the cells."""

    n_probe: int
    recall: float
    scan_ms: float  # one query on one thread (faiss times the batch on all of them)


def explore_n_probe(search: AnnSearch, sample: HeldOut, candidates: int,
                    ladder: list[int] | None = None) -> list[Rung]:
    """Every ``n_probe`` of ``ladder`` explored by faiss on ``sample`` for ``candidates`` re-ranked rows,
    cheapest first. Exact re-ranking keeps every true neighbour among the candidates, so the recall is the
    one the whole search reaches (up to ties)."""
    faiss = _faiss()
    count = _count(search, candidates, sample.k)
    space = faiss.ParameterSpace()
    space.verbose = 0
    space.n_experiments = 0  # one parameter and a short ladder: try every value, in order
    values = space.add_range("nprobe").values
    for v in ladder or n_probe_ladder(search):
        values.push_back(float(v))
    before = search.index_.nprobe
    ops = space.explore(search.index_, sample.coords, _criterion(search, sample, count))
    search.index_.nprobe = before
    per_query_ms = 1e3 * faiss.omp_get_max_threads() / max(1, len(sample.rows))
    out = []
    # All points, not faiss's Pareto-optimal ones: on a busy machine a noisy time would drop a rung that
    # reaches the target; end-to-end timing decides later.
    for i in range(ops.all_pts.size()):
        op = ops.all_pts.at(i)
        n_probe = int(float(dict(kv.split("=") for kv in op.key.split(","))["nprobe"]))
        out.append(Rung(n_probe, min(1.0, op.perf * count / sample.k), op.t * per_query_ms))
    return sorted(out)


# --- choosing ------------------------------------------------------------------------------------------


def _split(n: int, counts: tuple[int, ...], random_state: int) -> list[np.ndarray]:
    """Disjoint random row samples of the given sizes (clamped to what ``n`` holds)."""
    order = np.random.default_rng(random_state).permutation(n)
    out, start = [], 0
    for c in counts:
        c = max(0, min(int(c), n - start))
        out.append(np.sort(order[start:start + c]))
        start += c
    return out


def _stages(ladder: list[int]) -> list[list[int]]:
    """The ladder cut at powers of two: scanning many cells costs most, so each doubling is explored only
    when the cells before it were not enough."""
    out: list[list[int]] = []
    for v in ladder:
        if out and (out[-1][0] - 1).bit_length() == (v - 1).bit_length():
            out[-1].append(v)
        else:
            out.append([v])
    return out


def _full_cells(search: AnnSearch, ladder: list[int], candidates: int) -> int:
    """The fewest cells that hold ``candidates`` rows on average with room to spare: fewer would send a
    query to every cell for its missing candidates, so this is the cheapest search re-ranking that many."""
    per_cell = search.n / max(1, int(search.index_.nlist))
    return next((v for v in ladder if v * per_cell >= 2 * candidates), ladder[-1])


def _aim(target: float, queries: int) -> float:
    """The recall to tune for: the target plus one standard error bound of a mean of ``queries`` recalls
    in [0, 1], so that fresh queries still reach the target."""
    return min(1.0, target + math.sqrt(target * (1 - target) / max(queries, 1)))


def held_out_samples(search: AnnSearch, vectors: np.ndarray, tune_queries: int = TUNE_QUERIES,
                     verify_queries: int = VERIFY_QUERIES, k: int = 10, random_state: int = 0
                     ) -> tuple[HeldOut, HeldOut]:
    """Disjoint tuning and verification rows, held out, from one brute-force pass (the costly part of
    tuning: pass them to both :func:`tune_operating_point` and :func:`tune_graph_candidates`)."""
    n = search.n
    tune_rows, verify_rows = _split(n, (min(tune_queries, n // 2), verify_queries), random_state)
    both = held_out(search, vectors, np.concatenate([tune_rows, verify_rows]), k)
    pick = np.isin(both.rows, tune_rows)
    return tuple(HeldOut(both.rows[m], both.others[m], both.nearest[m], both.coords[m]) for m in (pick, ~pick))


def too_few_to_tune(search: AnnSearch, k: int = 10) -> bool:
    """Whether ``search`` holds too few rows to sample: re-ranking every row answers exactly instead."""
    return search.n < 4 * (k + 1)


def nothing_to_tune(target: float, latency_budget_ms: float = LATENCY_BUDGET_MS) -> OperatingPoint:
    """The record of an exact search: every query is answered by brute force, recall is 1."""
    return OperatingPoint("exact", None, None, target, latency_budget_ms, 1.0, 1.0, None, None, True, EXACT)


def tune_operating_point(search, vectors: np.ndarray, target: float = RECALL_TARGET,
                         latency_budget_ms: float = LATENCY_BUDGET_MS, k: int = 10,
                         candidate_grid: tuple[int, ...] = CANDIDATE_GRID, tune_queries: int = TUNE_QUERIES,
                         verify_queries: int = VERIFY_QUERIES, latency_queries: int = LATENCY_QUERIES,
                         random_state: int = 0, samples: tuple[HeldOut, HeldOut] | None = None) -> OperatingPoint:
    """The (n_probe, candidates) reaching recall@k ``target`` on held-out rows at the lowest p50 latency
    within ``latency_budget_ms``, else the best recall reached within it; ``search`` is left at that point.

    Tuned on one sample of rows, reported on another (``recall_out_of_sample``); ``samples`` (from
    :func:`held_out_samples`) replaces the ones drawn here.
    """
    if not isinstance(search, AnnSearch):
        return nothing_to_tune(target, latency_budget_ms)
    n = search.n
    if too_few_to_tune(search, k):
        set_operating_point(search, search.index_.nlist, max(n, 1))
        return OperatingPoint("ann", int(search.index_.nlist), max(n, 1), target, latency_budget_ms, 1.0, 1.0,
                              None, None, True, f"{n} rows: every row is re-ranked exactly, nothing to tune")
    tuning, fresh = samples or held_out_samples(search, vectors, tune_queries, verify_queries, k, random_state)
    # Spread over the collection (the rows are sorted), not the first rows of it.
    timing = np.asarray(vectors[tuning.rows[::max(1, len(tuning.rows) // latency_queries)][:latency_queries]],
                        dtype=np.float32)
    aim = _aim(target, len(tuning.rows))

    explored: list[dict] = []

    def timed(n_probe: int, recall: float | None, candidates: int) -> dict:
        set_operating_point(search, n_probe, candidates)
        p50, _ = query_latency_ms(search, timing, k)
        explored.append({"n_probe": int(n_probe), "candidates": int(candidates),
                         "recall_tuning": None if recall is None else round(recall, 4), "query_ms_p50": round(p50, 3)})
        return explored[-1]

    ladder = n_probe_ladder(search)
    ladders: dict[int, list[Rung]] = {}
    met: list[dict] = []
    # No count needs more cells than the cheapest n_probe that reached the aim with fewer candidates (the
    # first C results are a prefix of the first C' > C), nor more than faiss can scan within the budget:
    # ``cap`` only comes down.
    cap = ladder[-1]
    reached = ladder[-1] + 1  # fewest cells that reached the aim so far
    for candidates in sorted(set(candidate_grid)):
        if met and timed(_full_cells(search, ladder, candidates), None, candidates)["query_ms_p50"] >= \
                min(p["query_ms_p50"] for p in met):
            break  # re-ranking this many rows alone is slower than a point that already reaches the aim
        rungs: list[Rung] = []
        for stage in _stages([v for v in ladder if v <= cap]):
            rungs += explore_n_probe(search, tuning, candidates, stage)
            if any(r.recall >= aim for r in rungs):
                break
            if rungs and rungs[-1].scan_ms > latency_budget_ms:
                cap = rungs[-1].n_probe
                break  # scanning the cells alone takes the budget: more cells cannot fit
        ladders[candidates] = rungs
        first = next((r for r in rungs if r.recall >= aim), None)
        if first is not None and first.n_probe < reached:  # the same cells and more candidates: only slower
            cap = reached = first.n_probe
            point = timed(first.n_probe, first.recall, candidates)
            if point["query_ms_p50"] <= latency_budget_ms:
                met.append(point)
        if _count(search, candidates, k) >= n:
            break  # every row is a candidate already: larger counts are the same search

    if met:
        best = min(met, key=lambda p: p["query_ms_p50"])
    else:
        best = _best_within_budget(ladders, timed, latency_budget_ms, explored)
    set_operating_point(search, best["n_probe"], best["candidates"])
    oos, self_q = held_out_recall(search, vectors, fresh)
    p50, p99 = query_latency_ms(search, np.asarray(vectors[fresh.rows], dtype=np.float32), k)
    ok = bool(oos >= target and p50 <= latency_budget_ms)
    where = f"n_probe {best['n_probe']}, {best['candidates']} candidates"
    if ok:
        reason = f"recall@{k} {oos:.3f} >= {target} on fresh queries at p50 {p50:.2f} ms ({where})"
    elif met:
        reason = (f"tuned to {best['recall_tuning']:.3f} on the tuning rows but fresh queries reached "
                  f"{oos:.3f} < {target} at p50 {p50:.2f} ms ({where})")
    elif best["query_ms_p50"] <= latency_budget_ms:
        reason = (f"target {target} not reached within {latency_budget_ms} ms: best reached recall@{k} "
                  f"{oos:.3f} at p50 {p50:.2f} ms ({where})")
    else:
        reason = (f"target {target} not reached within {latency_budget_ms} ms: no point measured fits it; "
                  f"the fastest, {where}, reached recall@{k} {oos:.3f} at p50 {p50:.2f} ms")
    return OperatingPoint("ann", int(best["n_probe"]), int(best["candidates"]), target, latency_budget_ms,
                          round(oos, 4), round(self_q, 4), round(p50, 3), round(p99, 3), ok, reason,
                          recall_tuning=best["recall_tuning"], recall_aim=round(aim, 4),
                          tuning_queries=len(tuning.rows),
                          verify_queries=len(fresh.rows), explored=explored)


def _best_within_budget(ladders: dict[int, list[Rung]], timed, budget_ms: float, explored: list[dict]) -> dict:
    """Highest tuning recall whose p50 fits the budget, searching each count's rungs by bisection (latency
    grows with n_probe); the cheapest point measured when nothing fits."""
    fitting = [p for p in explored if p["query_ms_p50"] <= budget_ms and p["recall_tuning"] is not None]
    for candidates, rungs in ladders.items():
        lo, hi = 0, len(rungs) - 1
        while lo <= hi:  # the last rung that fits
            mid = (lo + hi) // 2
            key = (rungs[mid].n_probe, candidates)
            p = next((p for p in explored if (p["n_probe"], p["candidates"]) == key), None) or \
                timed(rungs[mid].n_probe, rungs[mid].recall, candidates)
            if p["query_ms_p50"] <= budget_ms:
                fitting.append(p)
                lo = mid + 1
            else:
                hi = mid - 1
    if fitting:
        return max(fitting, key=lambda p: (p["recall_tuning"], -p["query_ms_p50"]))
    return min((p for p in explored if p["recall_tuning"] is not None), key=lambda p: p["query_ms_p50"])


def random_held_out(search: AnnSearch, vectors: np.ndarray, count: int, k: int = 10, random_state: int = 1
                    ) -> HeldOut:
    """``count`` random rows (all of them in a smaller collection) as held-out queries."""
    return held_out(search, vectors, _split(search.n, (count,), random_state)[0], k)


def retune_if_drifted(search, vectors: np.ndarray, target: float = RECALL_TARGET, sample: int = 200,
                      k: int = 10, random_state: int = 1, check: HeldOut | None = None, **tune) -> DriftCheck:
    """Re-measure recall@k with ``sample`` rows left out (or the rows of ``check``); re-tune (no rebuild) only
    when it fell below ``target``, on other rows, and report the new point's recall on the checked ones.
    ``tune`` passes on to :func:`tune_operating_point`."""
    if not isinstance(search, AnnSearch):
        return DriftCheck(target, None, None, 1.0, 0, retuned=False, point=nothing_to_tune(target))
    if too_few_to_tune(search, k):
        return DriftCheck(target, int(search.index_.nprobe), int(search.candidates), 1.0, 0, retuned=True,
                          point=tune_operating_point(search, vectors, target, k=k, **tune))
    if check is None:
        check = random_held_out(search, vectors, sample, k, random_state)
    left_out = search.kneighbors_rows(check.rows, k, exclude_self=True)
    recall = recall_at_k(left_out.indices, check.others)
    out = DriftCheck(target, int(search.index_.nprobe), int(search.candidates), round(recall, 4),
                     len(check.rows), retuned=False)
    if recall < target:
        out.retuned = True
        # Tuned on rows outside the check, verified on it: the recall reported is of rows it was not tuned on.
        rest = np.setdiff1d(np.arange(search.n), check.rows)
        pick = _split(len(rest), (min(tune.pop("tune_queries", TUNE_QUERIES), len(rest)),), random_state + 1)[0]
        out.samples = (held_out(search, vectors, rest[pick], k), check)
        out.point = tune_operating_point(search, vectors, target, k=k, samples=out.samples, **tune)
    return out


def tune_graph_candidates(search, vectors: np.ndarray, target: float = RECALL_TARGET, k: int = 10,
                          grid: tuple[int, ...] = GRAPH_CANDIDATE_GRID, tune_queries: int = TUNE_QUERIES,
                          verify_queries: int = VERIFY_QUERIES, random_state: int = 2,
                          samples: tuple[HeldOut, HeldOut] | None = None) -> GraphPoint:
    """The cells probed and re-ranked candidates per row that give the stored neighbour graph recall@k
    ``target`` (each row is its own left-out query) at the lowest measured cost per row, else the point that
    came closest and its shortfall. Measured again on other rows than it was chosen on.

    The graph has its own ``n_probe``, from the queries' upwards (tune the queries first): a query point of
    one probed cell (tight clusters) holds a row's own cell only, while its neighbours spill into the next
    ones, and asking one cell for more candidates than it holds sends the row to every cell (1M clustered
    rows: 512 candidates at one cell, every cell scanned). So each count is tried only at cells that hold it
    twice over on average, faiss's intersection criterion finds the fewest candidates that reach the aim at
    each ``n_probe`` (one IVF search per rung), and graph rows timed end to end choose among those points."""
    if not isinstance(search, AnnSearch):
        return GraphPoint(None, None, target, 1.0, True, EXACT)
    if too_few_to_tune(search, k):
        return GraphPoint(max(search.n, 1), int(search.index_.nprobe), target, 1.0, True,
                          f"{search.n} rows: every row is re-ranked exactly, nothing to tune")
    faiss = _faiss()
    tuning, fresh = samples or held_out_samples(search, vectors, tune_queries, verify_queries, k, random_state)
    counts = sorted({_count(search, c, k) for c in grid})
    start = int(search.index_.nprobe)
    per_cell = search.n / max(1, int(search.index_.nlist))
    aim = _aim(target, len(tuning.rows))
    explored: list[dict] = []
    reached: list[dict] = []
    previous = -1.0
    for n_probe in (v for v in n_probe_ladder(search) if v >= start):
        fits = [c for c in counts if c == counts[0] or c * 2 <= n_probe * per_cell]
        if reached:
            fits = [c for c in fits if c < reached[-1]["candidates"]]
            if not fits or n_probe > GRAPH_CELLS_BEYOND * reached[0]["n_probe"]:
                break  # fewer candidates are out of reach, or only at many more cells than the first point
        params = faiss.SearchParametersIVF(nprobe=int(n_probe))
        keys = search.index_.search(tuning.coords, fits[-1], params=params)[1]
        top = -1.0
        for count in fits:
            head = np.ascontiguousarray(keys[:, :count])
            perf = _criterion(search, tuning, count).evaluate(
                faiss.swig_ptr(np.zeros(head.shape, dtype=np.float32)), faiss.swig_ptr(head))
            point = {"n_probe": int(n_probe), "candidates": count, "recall_tuning": round(min(1.0, perf * count / k), 4)}
            explored.append(point)
            top = point["recall_tuning"]
            if top >= aim:
                reached.append(point)
                break
        if not reached and fits[-1] == counts[-1] and top <= previous + 0.001:
            break  # every count probed and more cells no longer help: the candidates are what falls short
        previous = max(previous, top)
    if reached:
        rows = tuning.rows[::max(1, len(tuning.rows) // GRAPH_TIMING_ROWS)][:GRAPH_TIMING_ROWS]  # spread out
        for point in reached:
            point["row_ms"] = round(_graph_row_ms(search, rows, k, point["n_probe"], point["candidates"]), 4)
        chosen = min(reached, key=lambda p: p["row_ms"])
    else:
        chosen = max(explored, key=lambda p: (p["recall_tuning"], -p["n_probe"], -p["candidates"]))
    found = search.kneighbors_rows(fresh.rows, k, exclude_self=True, candidates=chosen["candidates"],
                                   n_probe=chosen["n_probe"])
    recall = round(recall_at_k(found.indices, fresh.others), 4)
    ok = bool(recall >= target)
    where = f"{chosen['candidates']} candidates, {chosen['n_probe']} cells probed"
    reason = (f"graph recall@{k} {recall:.3f} >= {target} with {where}" if ok else
              f"graph recall@{k} {recall:.3f} < {target} with {where} (shortfall {target - recall:.3f})")
    return GraphPoint(chosen["candidates"], chosen["n_probe"], target, recall, ok, reason,
                      recall_tuning=chosen["recall_tuning"], explored=explored)


def _graph_row_ms(search: AnnSearch, rows: np.ndarray, k: int, n_probe: int, candidates: int) -> float:
    """Milliseconds per graph row at (``n_probe``, ``candidates``), the faster of two passes over ``rows``."""
    best = math.inf
    for _ in range(2):
        t0 = time.perf_counter()
        search.kneighbors_rows(rows, k, exclude_self=True, candidates=candidates, n_probe=n_probe)
        best = min(best, time.perf_counter() - t0)
    return 1e3 * best / max(1, len(rows))
