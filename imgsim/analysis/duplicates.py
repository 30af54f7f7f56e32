"""Duplicate groups: connected components of images closer than a distance threshold."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imgsim.search import Search


@dataclass(frozen=True)
class DuplicateGroup:
    """Rows linked by chains of pairs within the threshold; ``nearest[i]`` is row i's distance to its
    closest other member."""

    rows: tuple[int, ...]
    nearest: tuple[float, ...]


@dataclass(frozen=True)
class DuplicateScan:
    """Duplicate groups found under a cap of ``max_pairs`` linked pairs. When more pairs are within the threshold
    (``truncated``), the groups come from the first ``max_pairs`` pairs in row order only: incomplete."""

    groups: list[DuplicateGroup]
    pairs: int
    truncated: bool
    max_pairs: int | None

    def note(self, threshold: float) -> str:
        """What a truncated scan's groups are (for the page and the API's answer)."""
        return (f"More than {self.max_pairs:,} pairs of images are within {threshold:g}: the scan stopped there, "
                f"so these groups (from the first {self.max_pairs:,} pairs, in index order) are incomplete. A lower "
                "threshold finds the near-duplicates.")


#: The most linked pairs a scan for a visitor or a client collects: near a threshold of 1 nearly every pair of
#: images is linked (n²/2), more memory than the server has.
MAX_PAIRS = 100_000


def duplicate_groups(search: Search, threshold: float, allowed: np.ndarray | None = None) -> list[DuplicateGroup]:
    """Groups of two or more images, largest first, then tightest first; with ``allowed`` (a row mask), groups of
    the allowed images only, linked by pairs of them."""
    return duplicate_scan(search, threshold, None, allowed).groups


def duplicate_scan(search: Search, threshold: float, max_pairs: int | None = MAX_PAIRS,
                   allowed: np.ndarray | None = None) -> DuplicateScan:
    """:func:`duplicate_groups` for a caller who cannot wait for n²/2 pairs: the scan stops after ``max_pairs``
    linked pairs of allowed images (None: never)."""
    _check(threshold)
    limit = None if max_pairs is None else max_pairs + 1  # one more than the cap says there are more
    i, j, d = search.pairs_within(threshold, limit=limit, allowed=allowed)
    truncated = max_pairs is not None and len(i) > max_pairs
    if truncated:
        i, j, d = i[:max_pairs], j[:max_pairs], d[:max_pairs]
    return DuplicateScan(_groups(search.n, i, j, d), len(i), truncated, max_pairs)


def _check(threshold: float) -> None:
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0 (got {threshold})")


def _groups(n: int, i: np.ndarray, j: np.ndarray, d: np.ndarray) -> list[DuplicateGroup]:
    """The connected components of the pairs ``(i, j)`` at distances ``d``, largest first, then tightest first."""
    if n == 0 or len(i) == 0:
        return []
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    nearest = np.full(n, np.inf)
    np.minimum.at(nearest, i, d)
    np.minimum.at(nearest, j, d)
    groups: dict[int, list[int]] = {}
    for row in np.unique(np.concatenate([i, j])):
        groups.setdefault(int(labels[row]), []).append(int(row))
    out = [DuplicateGroup(tuple(rows), tuple(float(nearest[r]) for r in rows)) for rows in groups.values()]
    out.sort(key=lambda g: (-len(g.rows), min(g.nearest), g.rows[0]))
    return out


def nearest_distances(nn_distances: np.ndarray) -> np.ndarray:
    """Each image's distance to its nearest other image (the first column of the stored neighbour graph)."""
    nn_distances = np.asarray(nn_distances)
    return nn_distances[:, 0] if nn_distances.ndim == 2 and nn_distances.shape[1] else np.zeros(0)


def threshold_summary(distances: np.ndarray, thresholds: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
                      ) -> list[tuple[float, int]]:
    """How many images have a neighbour within each threshold: a guide for choosing one."""
    return [(t, int(np.sum(distances <= t))) for t in thresholds]
