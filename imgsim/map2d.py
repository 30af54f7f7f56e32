"""The 2-D map: PCA coordinates to a t-SNE layout, and the t-SNE layout snapped to a thumbnail grid."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image


class MapBuilder:
    """PCA (first ``n_components`` coordinates, clamped) then 2-D t-SNE, as in the reference notebook.

    ``perplexity_`` and ``n_components_`` report the values actually used for small collections.
    """

    def __init__(self, n_components: int = 100, perplexity: float = 30.0, random_state: int = 0,
                 max_iter: int = 1000):
        self.n_components = n_components
        self.perplexity = perplexity
        self.random_state = random_state
        self.max_iter = max_iter

    def fit(self, pca_coords: np.ndarray) -> "MapBuilder":
        """Lay out rows of PCA coordinates (columns ordered by explained variance)."""
        x = np.asarray(pca_coords, dtype=np.float32)
        x = x.reshape(len(x), -1) if x.ndim != 2 else x
        n = len(x)
        self.n_components_ = int(min(self.n_components, x.shape[1]))
        x = x[:, :self.n_components_]
        self.perplexity_ = float(min(self.perplexity, max((n - 1) / 3.0, 0.0)))
        if n < 4 or self.n_components_ == 0:
            # Too few points for t-SNE: place them along the first principal directions.
            layout = np.zeros((n, 2), dtype=np.float32)
            cols = min(2, self.n_components_)
            layout[:, :cols] = x[:, :cols]
            self.embedding_ = layout
            return self
        from sklearn.manifold import TSNE  # imported on use: opening the dashboard stays fast

        tsne = TSNE(n_components=2, perplexity=self.perplexity_, init="pca", learning_rate="auto",
                    random_state=self.random_state, max_iter=self.max_iter)
        self.embedding_ = tsne.fit_transform(x).astype(np.float32)
        return self


@dataclass(frozen=True)
class GridLayout:
    """Which rows of the map are drawn (``rows``) and the (row, column) cell each one occupies."""

    rows: np.ndarray
    cells: np.ndarray
    side: int


def grid_layout(xy: np.ndarray, max_items: int = 1024, random_state: int = 0) -> GridLayout:
    """Snap 2-D points to a square grid, one point per cell, keeping neighbours together.

    The assignment minimises the total squared displacement (``scipy.optimize.linear_sum_assignment``).
    Collections larger than ``max_items`` are sampled evenly at random (deterministically).
    """
    xy = np.asarray(xy, dtype=np.float64)
    n = len(xy)
    rows = np.arange(n)
    if n > max_items:
        rows = np.sort(np.random.default_rng(random_state).choice(n, max_items, replace=False))
    if len(rows) == 0:
        return GridLayout(rows, np.zeros((0, 2), dtype=np.int64), 0)
    pts = xy[rows]
    span = np.ptp(pts, axis=0)
    pts = (pts - pts.min(axis=0)) / np.where(span > 0, span, 1.0)
    side = math.ceil(math.sqrt(len(rows)))
    ii, jj = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    # Cell (i, j): row i counts from the top, so y grows upwards as on the scatter plot.
    centres = np.stack([(jj.ravel() + 0.5) / side, 1.0 - (ii.ravel() + 0.5) / side], axis=1)
    from scipy.optimize import linear_sum_assignment

    cost = ((pts[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    item, cell = linear_sum_assignment(cost)
    cells = np.zeros((len(rows), 2), dtype=np.int64)
    cells[item] = np.stack([cell // side, cell % side], axis=1)
    return GridLayout(rows, cells, side)


def render_grid(layout: GridLayout, thumbnail: Callable[[int], Image.Image | None], cell_px: int = 64,
                background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Draw each row's square thumbnail in its cell; ``thumbnail(row)`` may return None (cell left blank)."""
    side = max(layout.side, 1)
    canvas = Image.new("RGB", (side * cell_px, side * cell_px), background)
    for row, (i, j) in zip(layout.rows, layout.cells):
        thumb = thumbnail(int(row))
        if thumb is not None:
            if thumb.size != (cell_px, cell_px):
                thumb = thumb.resize((cell_px, cell_px), Image.Resampling.LANCZOS)
            canvas.paste(thumb, (int(j) * cell_px, int(i) * cell_px))
    return canvas
