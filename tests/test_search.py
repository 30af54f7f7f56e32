"""Search: identical to scikit-learn brute force, while computing far fewer exact distances."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from imgsim.search.projection import PCAProjection
from imgsim.search import cosine_from_distance
from imgsim.search.exact import ExactSearch


def clustered(n, d, seed=0, clusters=20, latent=16, spread=0.35):
    """Unit vectors with cluster structure, like CNN features (non-negative, correlated)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, latent))
    mixing = rng.normal(size=(latent, d))
    z = centres[rng.integers(0, clusters, n)] + spread * rng.normal(size=(n, latent))
    x = np.maximum(z @ mixing + 0.3 * rng.normal(size=(n, d)), 0).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def fitted(x, components=64):
    return ExactSearch().fit(x, PCAProjection(n_components=components).fit(x))


@pytest.mark.parametrize("n, d", [(300, 512), (1500, 4096)])
def test_queries_equal_sklearn_brute_force(n, d):
    x = clustered(n, d, seed=n)
    rng = np.random.default_rng(1)
    queries = x[rng.choice(n, 10, replace=False)] + 0.05 * np.abs(rng.normal(size=(10, d))).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ref_d, ref_i = NearestNeighbors(n_neighbors=7, algorithm="brute", metric="euclidean").fit(x).kneighbors(queries)
    search = fitted(x)
    got = search.kneighbors(queries, 7)
    np.testing.assert_array_equal(got.indices, ref_i)
    np.testing.assert_allclose(got.distances, ref_d, atol=1e-6)
    assert search.last_exact_fraction_ < 0.5  # pruning, not a scan


def test_indexed_rows_equal_sklearn_and_pruning_skips_most_vectors():
    x = clustered(2000, 2048, seed=7)
    ref_d, ref_i = NearestNeighbors(n_neighbors=6, algorithm="brute", metric="euclidean").fit(x).kneighbors(x)
    search = fitted(x)
    got = search.kneighbors_rows(np.arange(len(x)), 5)
    np.testing.assert_array_equal(got.indices, ref_i[:, 1:])  # sklearn lists each point itself first
    np.testing.assert_allclose(got.distances, ref_d[:, 1:], atol=1e-5)
    assert search.last_exact_fraction_ < 0.2


def test_query_by_indexed_vector_returns_itself_first_even_with_an_exact_duplicate():
    x = clustered(100, 256, seed=3)
    x[57] = x[12]  # an exact duplicate of row 12
    search = fitted(x, components=16)
    for row, twin in ((12, 57), (57, 12)):
        got = search.kneighbors(x[row][None], 3, prefer=row)
        assert got.indices[0, :2].tolist() == [row, twin]
        assert got.distances[0, 0] == 0.0 and got.distances[0, 1] == 0.0


def test_k_is_clamped_to_collection_size():
    x = clustered(5, 64)
    search = fitted(x)
    assert search.kneighbors(x[:1], 50).indices.shape == (1, 5)
    assert search.kneighbors_rows(np.arange(5), 50).indices.shape == (5, 4)


def test_distances_are_in_range_and_cosine_matches():
    x = clustered(200, 128, seed=5)
    got = fitted(x).kneighbors(x[:3], 200)
    assert (got.distances >= 0).all() and (got.distances <= 2).all()
    cos = x[:3] @ x[got.indices[0]].T
    np.testing.assert_allclose(got.similarities[0], cos[0], atol=1e-5)
    assert cosine_from_distance(0.0) == 1.0 and cosine_from_distance(2.0) == -1.0


def test_pairs_within_threshold_equal_brute_force():
    x = clustered(400, 512, seed=11, spread=0.05)
    search = fitted(x)
    dist = np.sqrt(np.maximum(2 - 2 * (x.astype(np.float64) @ x.T.astype(np.float64)), 0))
    for t in (0.05, 0.2, 0.5):
        i, j, d = search.pairs_within(t)
        ri, rj = np.nonzero(np.triu(dist <= t, 1))
        assert sorted(zip(i.tolist(), j.tolist())) == sorted(zip(ri.tolist(), rj.tolist()))
        np.testing.assert_allclose(d, dist[i, j], atol=1e-5)


def test_tiny_collections_work_without_a_projection():
    x = clustered(2, 32)
    search = fitted(x)
    assert search.projection_.n_components_ == 1
    single = ExactSearch().fit(x[:1], PCAProjection().fit(x[:1]))
    assert single.kneighbors(x[1:], 3).indices.tolist() == [[0]]
