"""Odd ones out: a planted far-away image comes first."""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors

from imgsim.collection import Collection
from imgsim.analysis.outliers import find_outliers, outlier_scores


def test_a_planted_far_away_vector_comes_first():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (200, 32))
    x[117] += 25.0  # far from everything
    x[42] += 6.0    # somewhat unusual
    dist, _ = NearestNeighbors(n_neighbors=11).fit(x).kneighbors(x)
    graph = dist[:, 1:]  # the stored graph excludes the image itself
    found = find_outliers(graph, n=3)
    assert [o.row for o in found[:2]] == [117, 42]
    assert [o.rank for o in found] == [1, 2, 3]
    assert found[0].score == graph[117, :5].mean() and found[0].nearest == graph[117, 0]


def test_n_and_k_are_clamped():
    graph = np.array([[0.1, 0.2], [0.5, 0.9], [0.3, 0.3]])
    assert [o.row for o in find_outliers(graph, n=10, k=50)] == [1, 2, 0]
    assert np.allclose(outlier_scores(graph, k=1), [0.1, 0.5, 0.3])
    assert find_outliers(np.zeros((0, 0))) == []


def test_collection_outliers_match_the_stored_graph(built_index):
    col = Collection.open(built_index)
    found = col.outliers(n=col.count + 5)
    assert len(found) == col.count
    scores = [o.score for o in found]
    assert scores == sorted(scores, reverse=True)
    stored = np.asarray(col.index.array("nn_distances"))
    assert np.isclose(found[0].score, stored[found[0].row, :5].mean())
