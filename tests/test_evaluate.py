"""The quality check on labelled sets where the answer is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from imgsim.analysis.evaluate import evaluate


def test_perfect_neighbours_score_one_with_exact_random_baseline():
    labels = ["a", "a", "a", "b", "b", "b"]
    neighbors = np.array([[1, 2, 3], [0, 2, 4], [0, 1, 5], [4, 5, 0], [3, 5, 1], [3, 4, 2]])
    ev = evaluate(labels, neighbors, k=2)
    assert ev.k == 2 and ev.queries == 6
    assert ev.precision_at_k == 1.0 and ev.nn_accuracy == 1.0
    assert ev.baseline_precision_at_k == pytest.approx(2 / 5)  # 2 other same-label images among 5
    assert [(s.label, s.images, s.precision_at_k) for s in ev.per_label] == [("a", 3, 1.0), ("b", 3, 1.0)]


def test_known_mixed_result():
    labels = ["a", "a", "b", "b", "c"]
    neighbors = np.array([[1, 2], [2, 0], [4, 3], [2, 1], [0, 1]])
    ev = evaluate(labels, neighbors, k=2)
    # precision@2 per query: a0 1/2, a1 1/2, b2 1/2, b3 1/2, c4 0
    assert ev.precision_at_k == pytest.approx(2 / 5)
    # 1-NN hits: a0 yes, a1 no, b2 no, b3 yes, c4 no
    assert ev.nn_accuracy == pytest.approx(2 / 5)
    assert ev.baseline_nn_accuracy == pytest.approx((1 / 4 * 4 + 0) / 5)
    per = {s.label: s for s in ev.per_label}
    assert per["c"].precision_at_k == 0.0 and per["c"].baseline == 0.0
    assert per["a"].nn_accuracy == 0.5


def test_unlabelled_images_are_not_queries_and_k_is_clamped():
    labels = ["", "x", "x"]
    neighbors = np.array([[1], [2], [1]])
    ev = evaluate(labels, neighbors, k=5)
    assert ev.k == 1 and ev.queries == 2 and ev.unlabelled == 1
    assert ev.precision_at_k == 1.0


def test_degenerate_inputs():
    ev = evaluate(["a"], np.zeros((1, 0), dtype=int), k=5)
    assert ev.queries == 0 and ev.precision_at_k == 0.0


def test_missing_neighbours_count_as_misses_not_as_the_last_image():
    """Approximate search marks "fewer found than k" with row -1; that is no neighbour, not the last row."""
    labels = ["a", "a", "b", "a"]
    neighbors = np.array([[1, -1], [-1, -1], [3, -1], [0, 1]])
    ev = evaluate(labels, neighbors, k=2)
    # precision@2: a0 1/2, a1 0, b2 0, a3 1 -> 1.5 / 4; 1-NN: a0 yes, a1 no, b2 no, a3 yes
    assert ev.precision_at_k == pytest.approx(1.5 / 4)
    assert ev.nn_accuracy == pytest.approx(2 / 4)
