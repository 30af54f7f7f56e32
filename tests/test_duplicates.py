"""Duplicate groups: connected components under a threshold, and the nearest-distance distribution."""

from __future__ import annotations

import numpy as np
import pytest

from imgsim.analysis.duplicates import duplicate_scan, duplicate_groups, nearest_distances, threshold_summary
from imgsim.search.projection import PCAProjection
from imgsim.search.exact import ExactSearch


def unit_vectors_at(distances_to_base, d=64, seed=0):
    """Vectors on a chain: a base direction slightly rotated towards private orthogonal directions."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    out = []
    for k, theta in enumerate(distances_to_base):
        out.append(np.cos(theta) * q[0] + np.sin(theta) * q[k + 1])
    return np.asarray(out, dtype=np.float32)


def search_for(x):
    return ExactSearch().fit(x, PCAProjection(8).fit(x))


def test_groups_are_connected_components_within_threshold():
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(8, 32))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[3] = x[0]
    x[5] = x[0] * 0.999 + x[6] * 0.001
    x[5] /= np.linalg.norm(x[5])
    x[7] = x[2]
    groups = duplicate_groups(search_for(x), 0.01)
    assert [g.rows for g in groups] == [(0, 3, 5), (2, 7)]
    assert groups[1].nearest == (0.0, 0.0)
    assert groups[0].nearest[1] == 0.0 and 0 < groups[0].nearest[2] < 0.01


def test_chains_link_transitively():
    # a-b and b-c are close, a-c is not: all three form one group.
    base = np.zeros(16, dtype=np.float32)
    base[0] = 1
    a = base.copy()
    b = base.copy(); b[1] = 0.1
    c = base.copy(); c[1] = 0.2
    far = np.zeros(16, dtype=np.float32); far[5] = 1
    x = np.stack([a, b, c, far]); x /= np.linalg.norm(x, axis=1, keepdims=True)
    dist_ab = np.linalg.norm(x[0] - x[1])
    groups = duplicate_groups(search_for(x), dist_ab * 1.01)
    assert [g.rows for g in groups] == [(0, 1, 2)]
    assert np.linalg.norm(x[0] - x[2]) > dist_ab * 1.01


def test_no_groups_below_every_distance_and_negative_threshold_refused():
    x = np.eye(5, dtype=np.float32)
    assert duplicate_groups(search_for(x), 0.5) == []
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        duplicate_groups(search_for(x), -0.1)


def test_a_capped_scan_stops_at_max_pairs_and_says_so():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1000, 24)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    search = search_for(x)
    all_i, all_j, all_d = search.pairs_within(2.0)  # every pair of unit vectors is within 2
    assert len(all_i) == 1000 * 999 // 2
    full_fraction = search.last_exact_fraction_
    scan = duplicate_scan(search, 2.0, max_pairs=5000)
    assert (scan.truncated, scan.pairs, scan.max_pairs) == (True, 5000, 5000)
    assert search.last_exact_fraction_ < 0.6 * full_fraction  # the scan stopped, it did not cut a full list
    i, j, d = search.pairs_within(2.0, limit=5000)
    np.testing.assert_array_equal(i, all_i[:5000])  # the first pairs in (i, j) order
    np.testing.assert_array_equal(j, all_j[:5000])
    np.testing.assert_array_equal(d, all_d[:5000])
    # The groups are those of exactly these pairs: row 0 is linked to rows 1..999 by its first 999 pairs.
    assert [g.rows for g in scan.groups] == [tuple(range(1000))]


def test_a_capped_scan_under_its_cap_is_the_full_answer():
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(40, 32))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    search = search_for(x)
    t = float(np.percentile(np.linalg.norm(x[:, None] - x[None], axis=2)[np.triu_indices(40, 1)], 5))
    pairs = len(search.pairs_within(t)[0])
    assert pairs > 10
    exact = duplicate_scan(search, t, max_pairs=pairs)  # exactly the cap: nothing was left out
    assert (exact.truncated, exact.pairs) == (False, pairs) and exact.groups == duplicate_groups(search, t)
    assert duplicate_scan(search, t, max_pairs=pairs - 1).truncated
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        duplicate_scan(search, -0.1, 10)


def brute_force_pairs(x: np.ndarray, threshold: float, allowed: np.ndarray) -> list[tuple[int, int]]:
    """Every pair i < j of allowed rows within ``threshold``, in (i, j) order, from the full distance matrix."""
    dist = np.linalg.norm(x[:, None].astype(np.float64) - x[None], axis=2)
    return [(i, j) for i in range(len(x)) for j in range(i + 1, len(x))
            if allowed[i] and allowed[j] and dist[i, j] <= threshold]


def test_a_capped_scan_under_a_filter_counts_pairs_of_matching_images():
    """The cap counted the pairs of all images and filtered afterwards: with the matching images late in the
    index, the first 5,000 pairs held none of theirs, and the page showed no groups and a false truncation."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1000, 24)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    search = search_for(x)
    allowed = np.arange(1000) >= 900  # 100 matching images: 4,950 pairs, under the cap
    scan = duplicate_scan(search, 2.0, max_pairs=5000, allowed=allowed)
    assert (scan.truncated, scan.pairs) == (False, 4950)
    assert [g.rows for g in scan.groups] == [tuple(range(900, 1000))]
    few = duplicate_scan(search, 2.0, max_pairs=100, allowed=allowed)  # over the cap: the first matching pairs
    i, j, _ = search.pairs_within(2.0, limit=100, allowed=allowed)
    assert few.truncated and list(zip(i.tolist(), j.tolist())) == brute_force_pairs(x, 2.0, allowed)[:100]
    t = 1.2
    i, j, d = search.pairs_within(t, allowed=allowed)
    assert list(zip(i.tolist(), j.tolist())) == brute_force_pairs(x, t, allowed)
    np.testing.assert_allclose(d, np.linalg.norm(x[i].astype(np.float64) - x[j], axis=1), atol=1e-5)


def test_nearest_distances_and_threshold_summary():
    nn = np.array([[0.1, 0.5], [0.3, 0.4], [0.05, 0.9]])
    d = nearest_distances(nn)
    np.testing.assert_array_equal(d, [0.1, 0.3, 0.05])
    assert threshold_summary(d, (0.05, 0.2, 0.3)) == [(0.05, 1), (0.2, 2), (0.3, 3)]
