"""What the browser draws of a large map: a bounded sample of points, a density layer for the rest, and
hover previews cut into sprite-sheet tiles of the drawn points (so the first render does not grow with N)."""

from __future__ import annotations

import numpy as np

#: Points drawn individually; beyond this a deterministic sample is drawn over a density layer.
MAP_POINTS = 20_000
#: Previews per sprite-sheet tile (a 32 x 32 grid).
TILE_ROWS = 1024
TILE_COLUMNS = 32


def drawn_rows(count: int, limit: int = MAP_POINTS, random_state: int = 0) -> np.ndarray:
    """Rows drawn as points: all of them, or a fixed random sample of ``limit`` rows (sorted)."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(random_state).choice(count, limit, replace=False))


def density(xy: np.ndarray, bins: int = 160) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x centres, y centres, counts[y, x]) of every point: one O(N) pass, drawn as a heatmap under the sample."""
    xy = np.asarray(xy, dtype=np.float64)
    counts, xe, ye = np.histogram2d(xy[:, 0], xy[:, 1], bins=bins)
    return (xe[:-1] + xe[1:]) / 2, (ye[:-1] + ye[1:]) / 2, counts.T


def tiles_for(rows: np.ndarray, per_tile: int = TILE_ROWS) -> list[np.ndarray]:
    """The drawn rows cut into consecutive tiles: position p in ``rows`` is cell p % per_tile of tile p // per_tile."""
    rows = np.asarray(rows)
    return [rows[start:start + per_tile] for start in range(0, len(rows), per_tile)]
