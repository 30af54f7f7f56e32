"""Odd ones out: the images farthest from their nearest neighbours (mislabelled, unusual or broken files).

Read from the neighbour graph the index stores, so ranking the whole collection costs no search.
An image's score is its mean distance to its ``k`` nearest other images: a lone pair of near-identical
odd files still scores high, where the distance to the single nearest would call them ordinary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Outlier:
    """One odd image: its rank (1 = oddest), row, score and distance to its single nearest neighbour."""

    rank: int
    row: int
    score: float
    nearest: float


def outlier_scores(nn_distances: np.ndarray, k: int = 5) -> np.ndarray:
    """Mean distance of each row to its ``k`` nearest others (k clamped to the graph's depth)."""
    d = np.asarray(nn_distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] == 0:
        return np.zeros(len(d))
    return d[:, :max(1, min(int(k), d.shape[1]))].mean(axis=1)


def find_outliers(nn_distances: np.ndarray, n: int = 20, k: int = 5) -> list[Outlier]:
    """The ``n`` rows with the highest score, oddest first (n clamped to the collection size)."""
    scores = outlier_scores(nn_distances, k)
    d = np.asarray(nn_distances, dtype=np.float64)
    order = np.lexsort((np.arange(len(scores)), -scores))[:max(0, int(n))]
    return [Outlier(rank, int(r), float(scores[r]), float(d[r, 0]) if d.ndim == 2 and d.shape[1] else 0.0)
            for rank, r in enumerate(order, start=1)]
