"""Tuned operating points of approximate search: recall on queries the index was not tuned on, the latency
budget, drift after updates, the neighbour graph's candidates, and exact search with nothing to tune."""

from __future__ import annotations

import numpy as np
import pytest

from imgsim.search import ann_build, choose_method, tuning
from imgsim.search.ann import AnnSearch, exact_kneighbors, recall_at_k
from imgsim.search.exact import ExactSearch
from imgsim.search.projection import PCAProjection

TARGET = 0.95


def features(n: int, d: int = 256, latent: int = 300, seed: int = 0, sample_seed: int | None = None) -> np.ndarray:
    """Hard vectors shaped like pooled CNN features: ReLU of a power-law-spectrum Gaussian, no clusters."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(latent, d)) * np.arange(1, latent + 1)[:, None] ** -0.5
    rng = np.random.default_rng(seed if sample_seed is None else sample_seed)
    x = np.maximum(rng.normal(size=(n, latent)) @ mixing, 0).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def collection():
    """4,000 indexed vectors and 400 fresh ones from the same distribution, never indexed nor tuned on."""
    x = features(4000)
    fresh = features(400, sample_seed=99)
    return x, fresh, exact_kneighbors(x, fresh, 10).indices


@pytest.fixture(scope="module")
def fitted(collection) -> AnnSearch:
    x = collection[0]
    return AnnSearch(n_lists=100).fit(x, PCAProjection(n_components=127).fit(x))


@pytest.fixture
def search(fitted) -> AnnSearch:
    """The fitted search back at its default operating point (tests change only that)."""
    defaults = AnnSearch()
    tuning.set_operating_point(fitted, defaults.n_probe, defaults.candidates)
    return fitted


def fresh_recall(search, fresh: np.ndarray, truth: np.ndarray) -> float:
    return recall_at_k(search.kneighbors(fresh, 10).indices, truth)


def test_the_chosen_point_reaches_the_target_on_fresh_queries_it_was_not_tuned_on(collection, search):
    x, fresh, truth = collection
    tuning.set_operating_point(search, 2, 20)
    assert fresh_recall(search, fresh, truth) < 0.8  # a fixed cheap point loses recall on this data

    point = tuning.tune_operating_point(search, x, TARGET, candidate_grid=(20, 50, 100, 200))

    assert point.met and point.method == "ann", point.reason
    assert point.recall_out_of_sample >= TARGET and point.recall_self_query >= TARGET
    assert point.tuning_queries == 600 and point.verify_queries == 400  # different rows, both held out
    assert (search.index_.nprobe, search.candidates) == (point.n_probe, point.candidates)
    assert fresh_recall(search, fresh, truth) >= TARGET
    # The fastest of the points measured to reach the aim (the target plus a sampling margin) was kept.
    assert TARGET < point.recall_aim <= point.recall_tuning
    reaching = [p for p in point.explored if (p["recall_tuning"] or 0) >= point.recall_aim]
    fastest = min(reaching, key=lambda p: p["query_ms_p50"])
    assert (fastest["n_probe"], fastest["candidates"]) == (point.n_probe, point.candidates)
    assert point.query_ms_p50 <= point.latency_budget_ms
    assert point.to_meta()["n_probe"] == point.n_probe


def test_faiss_explored_recall_is_the_recall_the_whole_search_gets_on_the_same_rows(collection, search):
    x, _, _ = collection
    sample = tuning.held_out(search, x, np.arange(0, 4000, 13))
    explored = {r.n_probe: r.recall for r in tuning.explore_n_probe(search, sample, 50)}
    assert list(explored) == tuning.n_probe_ladder(search) and list(explored.values())[-1] == 1.0
    for n_probe in (16, 32, 64):
        if n_probe in explored:
            tuning.set_operating_point(search, n_probe, 50)
            end_to_end = tuning.held_out_recall(search, x, sample)[0]
            assert end_to_end == pytest.approx(explored[n_probe], abs=0.005)


def test_a_target_out_of_reach_within_the_budget_is_reported_not_met_with_what_was_reached(collection, search):
    x, fresh, truth = collection
    point = tuning.tune_operating_point(search, x, target=0.999, latency_budget_ms=0.01,
                                        candidate_grid=(20, 50), latency_queries=20)
    assert not point.met
    assert "0.999 not reached within 0.01 ms: no point measured fits it" in point.reason
    assert point.recall_out_of_sample < 0.999 and point.query_ms_p50 > 0.01
    assert point.explored and point.n_probe is not None and point.candidates is not None
    # The search answers at the point reported, and that point's recall is what fresh queries get.
    assert (search.index_.nprobe, search.candidates) == (point.n_probe, point.candidates)
    assert fresh_recall(search, fresh, truth) == pytest.approx(point.recall_out_of_sample, abs=0.08)

    # Within the budget but out of reach (11 candidates: 8-bit codes misorder some true neighbours, whatever
    # the cells): the best recall reached is kept and said.
    point = tuning.tune_operating_point(search, x, target=1.0, candidate_grid=(11,), latency_queries=20)
    assert not point.met and point.candidates == 11 and point.query_ms_p50 <= point.latency_budget_ms
    assert f"target 1.0 not reached within 5.0 ms: best reached recall@10 {point.recall_out_of_sample:.3f}" \
        in point.reason
    assert point.recall_tuning == max(p["recall_tuning"] for p in point.explored)


def test_a_degraded_operating_point_is_re_tuned_and_recovers_the_target(collection, search):
    x, fresh, truth = collection
    point = tuning.tune_operating_point(search, x, TARGET, candidate_grid=(20, 50, 100, 200))
    assert point.met, point.reason
    kept = tuning.retune_if_drifted(search, x, TARGET, sample=200, candidate_grid=(20, 50, 100, 200))
    assert not kept.retuned and kept.point is None and kept.recall_out_of_sample >= TARGET
    assert (search.index_.nprobe, search.candidates) == (point.n_probe, point.candidates)

    tuning.set_operating_point(search, 1, point.candidates)  # as if the cells had drifted
    check = tuning.retune_if_drifted(search, x, TARGET, sample=200, candidate_grid=(20, 50, 100, 200))
    assert check.retuned and check.n_probe == 1 and check.recall_out_of_sample < TARGET
    assert check.point.met and check.point.recall_out_of_sample >= TARGET, check.point.reason
    assert search.index_.nprobe == check.point.n_probe > 1
    assert fresh_recall(search, fresh, truth) >= TARGET
    assert check.to_meta()["point"]["met"] is True
    # The rows it re-tuned on (for the graph's candidates too) and the 200 checked, where its recall is measured.
    tuned_on, checked = check.samples
    assert kept.samples is None and "samples" not in check.to_meta()
    assert len(checked.rows) == 200 and not np.isin(tuned_on.rows, checked.rows).any()
    assert check.point.tuning_queries == len(tuned_on.rows) and check.point.verify_queries == 200


def test_the_neighbour_graph_gets_the_candidates_that_reach_the_target_or_reports_its_shortfall(collection,
                                                                                                search):
    x, _, _ = collection
    rows = np.arange(1, 4000, 11)
    sample = tuning.held_out(search, x, rows)
    today = search.kneighbors_rows(rows, 10, candidates=ann_build.GRAPH_CANDIDATES)
    assert recall_at_k(today.indices, sample.others) < TARGET  # 16 candidates fall short on this data

    samples = tuning.held_out_samples(search, x)  # as a build shares them with the query tuning
    assert not set(samples[0].rows) & set(samples[1].rows)
    graph = tuning.tune_graph_candidates(search, x, TARGET, samples=samples)
    assert graph.met and graph.recall_out_of_sample >= TARGET, graph.reason
    assert graph.candidates > ann_build.GRAPH_CANDIDATES and graph.n_probe == search.index_.nprobe
    rebuilt = search.kneighbors_rows(rows, 10, candidates=graph.candidates)
    assert recall_at_k(rebuilt.indices, sample.others) >= TARGET

    short = tuning.tune_graph_candidates(search, x, TARGET, grid=(11,))
    assert not short.met and short.candidates == 11
    assert f"shortfall {TARGET - short.recall_out_of_sample:.3f}" in short.reason


def clustered(n: int, d: int = 64, clusters: int = 40, latent: int = 16, seed: int = 0) -> np.ndarray:
    """Tight clusters of non-negative unit vectors (the scale benchmark's easy data, small): each cluster
    spans a few IVF cells, so one probed cell answers queries but holds only part of a row's neighbours."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, latent))
    mixing = rng.normal(size=(latent, d)) / np.sqrt(latent)
    z = centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, latent))
    x = (np.maximum(z @ mixing, 0) + 0.02 * np.abs(rng.normal(size=(n, d)))).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_the_neighbour_graph_probes_its_own_cells_when_the_queries_one_cell_holds_too_few_neighbours():
    x = clustered(6000)
    search = AnnSearch().fit(x, PCAProjection(n_components=32).fit(x))
    tuning.set_operating_point(search, 1, 50)  # the point a tight-cluster query tuning reaches at 1M
    per_cell = search.n / search.index_.nlist
    samples = tuning.held_out_samples(search, x)
    check = samples[1]
    # At the queries' one cell, every count that cell holds falls short; a count it does not hold sends each
    # row to every cell (the 1M clustered build: 512 candidates at one cell, a scan of the whole index).
    holds = [c for c in tuning.GRAPH_CANDIDATE_GRID if 2 * c <= per_cell]
    assert holds and max(recall_at_k(search.kneighbors_rows(check.rows, 10, candidates=c).indices, check.others)
                         for c in holds) < TARGET

    graph = tuning.tune_graph_candidates(search, x, TARGET, samples=samples)

    assert graph.met and graph.recall_out_of_sample >= TARGET, graph.reason
    assert graph.n_probe > 1 and search.index_.nprobe == 1  # its own cells; the queries' point is untouched
    assert graph.reason == (f"graph recall@10 {graph.recall_out_of_sample:.3f} >= {TARGET} with "
                            f"{graph.candidates} candidates, {graph.n_probe} cells probed")
    # Every count was tried only at cells that hold it twice over (or is the smallest), and the chosen point
    # is one that reached the aim on the tuning rows, timed against the others that did.
    assert all(p["candidates"] == 16 or 2 * p["candidates"] <= p["n_probe"] * per_cell for p in graph.explored)
    timed = [p for p in graph.explored if "row_ms" in p]
    chosen = next(p for p in timed if (p["n_probe"], p["candidates"]) == (graph.n_probe, graph.candidates))
    assert chosen["row_ms"] == min(p["row_ms"] for p in timed)
    assert all(p["recall_tuning"] >= tuning._aim(TARGET, len(samples[0].rows)) for p in timed)
    rebuilt = search.kneighbors_rows(check.rows, 10, candidates=graph.candidates, n_probe=graph.n_probe)
    assert recall_at_k(rebuilt.indices, check.others) == graph.recall_out_of_sample
    # Probing on no longer helps a count that falls short: the exploration stops and reports it.
    short = tuning.tune_graph_candidates(search, x, 0.9999, grid=(11,), samples=samples)
    assert not short.met and short.candidates == 11 and short.n_probe < search.index_.nlist
    assert short.reason.endswith(f"(shortfall {0.9999 - short.recall_out_of_sample:.3f})")


def test_small_collections_keep_exact_search_with_nothing_to_tune(collection):
    x, fresh, _ = collection
    small = x[:2000]
    assert choose_method(None, None, len(small)) == ("exact", "auto")
    search = ExactSearch().fit(small, PCAProjection(n_components=64).fit(small))
    point = tuning.tune_operating_point(search, small, TARGET)
    assert point.method == "exact" and point.met and point.n_probe is None and point.recall_out_of_sample == 1.0
    check = tuning.retune_if_drifted(search, small, TARGET)
    assert not check.retuned and check.point.method == "exact" and check.recall_out_of_sample == 1.0
    graph = tuning.tune_graph_candidates(search, small, TARGET)
    assert graph.met and graph.candidates is None and graph.reason == tuning.EXACT
    small_truth = exact_kneighbors(small, fresh, 10).indices
    assert recall_at_k(search.kneighbors(fresh, 10).indices, small_truth) == 1.0

    # Approximate search asked for on a few dozen rows: every row is re-ranked, so its answers are exact.
    tiny = x[:40]
    search = AnnSearch(n_lists=1).fit(tiny, PCAProjection(n_components=16).fit(tiny))
    point = tuning.tune_operating_point(search, tiny, TARGET)
    assert point.met and point.candidates == 40 and "nothing to tune" in point.reason
    assert recall_at_k(search.kneighbors(fresh, 10).indices, exact_kneighbors(tiny, fresh, 10).indices) == 1.0
